"""`dead list` and `dead show` print sender-controlled text: escape sequences must arrive inert."""
from __future__ import annotations

import io
import json
import uuid
from contextlib import redirect_stdout

import pytest
from sqlalchemy import text

pytestmark = pytest.mark.integration

# Clear the screen, set the terminal title, ring the bell: what a hostile sender would try.
HOSTILE = "\x1b[2J\x1b]0;owned\x07\r"


def run_cli(*argv: str) -> tuple[int, str]:
    from workers.cli import main

    out = io.StringIO()
    with redirect_stdout(out):
        code = main(list(argv))
    return code, out.getvalue()


@pytest.fixture
def hostile_letter(clean_db):
    from db.session import session_scope
    from workers.reliability.dead_letters import Failure, record

    task_id = f"{uuid.uuid4()}{HOSTILE}"
    with session_scope() as session:
        record(session, Failure(task_id=task_id, task_name=f"maintenance.echo{HOSTILE}",
                                exception_type="InvalidArguments", exception_message=f"bad {HOSTILE} input",
                                error_code="invalid_arguments", args=[HOSTILE], kwargs={"note": HOSTILE}))
    with clean_db.connect() as connection:
        return connection.scalar(text("SELECT id FROM dead_letters WHERE task_id = :t"), {"t": task_id})


def test_dead_list_escapes_control_characters(hostile_letter):
    code, out = run_cli("dead", "list")
    assert code == 0
    assert "\x1b" not in out and "\x07" not in out and "\r" not in out
    assert "maintenance.echo\\x1b[2J" in out


def test_dead_show_escapes_control_characters(hostile_letter):
    code, out = run_cli("dead", "show", str(hostile_letter))
    assert code == 0
    assert "\x1b" not in out and "\x07" not in out and "\r" not in out
    assert "bad \\x1b[2J\\x1b]0;owned\\x07\\x0d input" in out


def test_dead_show_json_keeps_the_text_exact_but_escaped(hostile_letter):
    code, out = run_cli("dead", "show", str(hostile_letter), "--json")
    assert code == 0
    assert "\x1b" not in out
    assert json.loads(out)["exception_message"] == f"bad {HOSTILE} input"
