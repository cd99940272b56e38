"""settings.py: every variable typed and validated, with an error that names it."""
import pytest

import settings


def test_defaults_when_nothing_is_set():
    found = settings.load({})
    assert found.database_url is None and found.broker_url is None
    assert found.task_max_deliveries == 5 and found.broker_visibility_timeout == 3600
    assert found.media_path == (settings.PROJECT_ROOT / ".data" / "media").resolve()


def test_values_are_parsed_to_their_types():
    found = settings.load({"FEED_SIZE": " 50 ", "FEED_TTL_HOURS": "1.5", "LOG_LEVEL": "debug",
                           "DATABASE_URL": "postgres://u:p@h/db", "MEDIA_ROOT": "rel/media"})
    assert found.feed_size == 50 and found.feed_ttl_seconds == 5400.0
    assert found.log_level == "DEBUG"
    assert found.sqlalchemy_database_url == "postgresql+psycopg://u:p@h/db"
    assert found.media_path == (settings.PROJECT_ROOT / "rel" / "media").resolve()


def test_an_empty_variable_counts_as_unset():
    assert settings.load({"BROKER_URL": "", "FEED_SIZE": "  "}).broker_url is None


@pytest.mark.parametrize("env, message", [
    ({"FEED_SIZE": "many"}, "FEED_SIZE='many' is not an integer"),
    ({"FEED_TTL_HOURS": "soon"}, "FEED_TTL_HOURS='soon' is not a number"),
    ({"TASK_MAX_DELIVERIES": "0"}, "TASK_MAX_DELIVERIES='0' is below its minimum 1"),
    ({"LOG_LEVEL": "loud"}, "LOG_LEVEL='loud' is not one of DEBUG, INFO"),
    ({"INGEST_COALESCE": "maybe"}, "INGEST_COALESCE='maybe' is not one of ON, OFF"),
    ({"INGEST_COALESCE_MAX_ITEMS": "501"}, "INGEST_COALESCE_MAX_ITEMS='501' is above its maximum 500"),
    ({"INGEST_COALESCE_MAX_WAIT_MS": "-1"}, "INGEST_COALESCE_MAX_WAIT_MS='-1' is below its minimum 0"),
    ({"ENGAGEMENT_SWEEP_CONNECTIONS": "0"}, "ENGAGEMENT_SWEEP_CONNECTIONS='0' is below its minimum 1"),
    ({"ENGAGEMENT_SWEEP_CONNECTIONS": "17"}, "ENGAGEMENT_SWEEP_CONNECTIONS='17' is above its maximum 16"),
    ({"BROKER_URL": "sqs://key:secret@queue"}, "BROKER_URL: expected redis://"),
    ({"BROKER_HEARTBEAT_SECONDS": "601"}, "BROKER_HEARTBEAT_SECONDS='601' is above its maximum 600"),
    ({"BROKER_URL": "redis://a:6379/0;amqp://b:5672"}, "all of one kind"),
])
def test_a_bad_value_is_refused_with_its_name(env, message):
    with pytest.raises(settings.SettingsError, match=message.replace("(", r"\(")):
        settings.load(env)


def test_current_follows_the_environment(monkeypatch):
    monkeypatch.setenv("FEED_SIZE", "7")
    assert settings.current().feed_size == 7
    monkeypatch.setenv("FEED_SIZE", "8")
    assert settings.current().feed_size == 8


def test_missing_urls_are_named_with_what_to_do(monkeypatch):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("BROKER_URL", "redis://127.0.0.1:1/0")
    with pytest.raises(settings.MissingServices, match=r"DATABASE_URL is not set, so beat cannot start.*make run"):
        settings.require_services("beat")


@pytest.mark.parametrize("url, shown", [
    ("postgresql://app:s3cret@db:5432/social", "postgresql://app:***@db:5432/social"),
    ("redis://:pw@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
    ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
    (None, "<unset>"),
])
def test_mask_url_hides_passwords(url, shown):
    assert settings.mask_url(url) == shown


@pytest.mark.parametrize("value", ["typesense://127.0.0.1:8108", "typesense://s3cret@host", "elastic://s3cret@h:9200",
                                   "typesense://s3cret@h:port"])
def test_a_bad_search_url_is_refused_without_repeating_it(value):
    with pytest.raises(settings.SettingsError) as refused:
        settings.load({"SEARCH_URL": value})
    assert "SEARCH_URL" in str(refused.value) and "s3cret" not in str(refused.value)


def test_search_url_names_the_engine_and_its_address():
    assert settings.parse_search_url("SEARCH_URL", "postgresql") is None
    assert settings.parse_search_url("SEARCH_URL", "typesenses://k@search.internal:443") == (
        "https", "k", "search.internal", 443)
    assert settings.load({"SEARCH_URL": "typesense://k@[::1]:8108"}).search_url == "typesense://k@[::1]:8108"


def test_an_unsupported_broker_url_is_refused_without_repeating_it():
    with pytest.raises(settings.SettingsError) as refused:
        settings.load({"BROKER_URL": "sqs://AKIAKEY:hunter2@sqs.example"})
    assert "hunter2" not in str(refused.value) and "AKIAKEY" not in str(refused.value)


def test_the_broker_kind_follows_the_scheme():
    assert settings.broker_kind("redis://h:6379/0") == "redis"
    assert settings.broker_kind("amqp://u:p@h:5672/vhost") == "amqp"
    assert settings.broker_kind("amqp://a:5672//;amqp://b:5672//") == "amqp"   # Celery's failover list
    assert settings.broker_kind("redis://a;amqp://b") is None
    assert settings.broker_kind(None) is None
