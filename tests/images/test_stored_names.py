"""Stored names that become paths: each column is checked against its exact pattern.

users.profile_photo_filename, media_files.filename and the base inside
posts.image_url are read back from the database and turned into variant paths
(to compare, write and sweep). A value the tasks never wrote, such as
'../post_photos/post_<hex>', must fail the upload as bad_stored_name and never
delete a file outside its folder. Data is committed, hence clean_db.
"""
from __future__ import annotations

import uuid

import pytest
from sqlalchemy import update

from db.models import MediaFile, Post, ProcessingStatus, User
from db.session import session_scope
from tasks.images import service, storage
from tasks.images.errors import ImageRejected
from tasks.images.tasks import process_post_photo, process_profile_photo
from tests.images import corpus
from tests.images.test_tasks import files, make_post, make_user, rows, user_row

HEX = "0123456789abcdef" * 2


def victim_post_photo(put_upload) -> tuple[str, set[str]]:
    """Another user's post with a real photo: (its variant base, its file names)."""
    post_id = make_post(make_user())
    summary = process_post_photo(post_id, put_upload(f"victim-{uuid.uuid4().hex[:6]}.jpg", corpus.photo_jpeg(300, 300)))
    assert summary["status"] == "COMPLETED"
    return summary["filename"], set(summary["variants"].values())


def assert_rejected_and_recorded(summary: dict, media_row: MediaFile, column: str) -> None:
    assert summary["status"] == "FAILED" and summary["error_code"] == "bad_stored_name"
    assert media_row.processing_status == ProcessingStatus.FAILED
    assert media_row.meta["error_code"] == "bad_stored_name" and column in media_row.meta["message"]


def test_profile_filename_pointing_into_post_photos_deletes_nothing_and_is_recorded(
        clean_db, media_root, put_upload):
    """The reproduced attack: users.profile_photo_filename = '../post_photos/post_<hex>'."""
    victim_base, victim_files = victim_post_photo(put_upload)
    attacker = make_user()
    with session_scope() as session:
        session.execute(update(User).where(User.id == attacker).values(
            profile_photo_filename=f"../post_photos/{victim_base}"))
    summary = process_profile_photo(attacker, put_upload("me.jpg", corpus.photo_jpeg(400, 400)))
    (media_row,) = rows(user_id=attacker)
    assert_rejected_and_recorded(summary, media_row, "users.profile_photo_filename")
    assert files(media_root, "post_photos") == victim_files  # the victim's four variants are all there
    assert files(media_root, "profile_photos") == set()  # nothing of the failed upload was written
    assert user_row(attacker).profile_photo_filename == f"../post_photos/{victim_base}"  # left for an operator


@pytest.mark.parametrize("stored", [
    f"profile_{HEX}\n",                 # '$' would accept a trailing newline
    f"profile_{HEX.upper()}",
    f"profile_{HEX[:31]}",
    f"profile_{HEX}/../../x",
    f"post_{HEX}",                      # a valid name of the other purpose
    "profile_*",                        # a glob
    f"/abs/profile_{HEX}",
])
def test_every_profile_filename_off_the_pattern_is_refused(clean_db, media_root, put_upload, stored):
    user_id = make_user()
    with session_scope() as session:
        session.execute(update(User).where(User.id == user_id).values(profile_photo_filename=stored))
    summary = process_profile_photo(user_id, put_upload("p.jpg", corpus.photo_jpeg(200, 200)))
    assert summary["error_code"] == "bad_stored_name"
    assert files(media_root, "profile_photos") == set()


def test_a_media_files_filename_off_the_pattern_deletes_nothing_and_is_recorded(clean_db, media_root, put_upload):
    victim_base, victim_files = victim_post_photo(put_upload)
    user_id = make_user()
    first = process_profile_photo(user_id, put_upload("first.jpg", corpus.photo_jpeg(300, 300)))
    with session_scope() as session:  # an unswept completed row of this subject now names the victim
        session.execute(update(MediaFile).where(MediaFile.id == first["media_file_id"]).values(
            filename=f"../post_photos/{victim_base}"))
    summary = process_profile_photo(user_id, put_upload("second.jpg", corpus.photo_jpeg(500, 400)))
    second_row = next(row for row in rows(user_id=user_id) if row.original_name == "second.jpg")
    assert_rejected_and_recorded(summary, second_row, "media_files.filename")
    assert files(media_root, "post_photos") == victim_files
    assert files(media_root, "profile_photos") == set(first["variants"].values())  # still referenced
    assert user_row(user_id).profile_photo_filename == first["filename"]


def test_the_sweep_checks_every_name_before_deleting_any(clean_db, media_root, put_upload):
    """The sweep, however it is reached: one bad candidate and nothing at all is deleted."""
    victim_base, victim_files = victim_post_photo(put_upload)
    user_id = make_user()
    old = process_profile_photo(user_id, put_upload("old.jpg", corpus.photo_jpeg(300, 300)))
    new = process_profile_photo(user_id, put_upload("new.jpg", corpus.photo_jpeg(400, 300)))
    storage.write_variants("profile_photo", old["filename"], {n: b"x" for n in ("large", "medium", "small",
                                                                               "thumbnail")})
    with session_scope() as session:
        session.execute(update(MediaFile).where(MediaFile.id == old["media_file_id"]).values(
            meta=MediaFile.meta.op("-")("variants_deleted_at")))
    with pytest.raises(ImageRejected) as raised, session_scope() as session:
        service.sweep_unreferenced(session, service.Subject("profile_photo", user_id),
                                   extra_bases=(f"../post_photos/{victim_base}",))
    assert raised.value.code == "bad_stored_name"
    assert files(media_root, "post_photos") == victim_files
    # The valid, unreferenced candidate was not deleted either: names are checked first.
    assert storage.variants_exist("profile_photo", old["filename"])
    assert storage.variants_exist("profile_photo", new["filename"])


def test_a_post_image_url_traversing_out_of_post_photos_deletes_nothing_and_is_recorded(
        clean_db, media_root, put_upload):
    victim_user = make_user()
    victim = process_profile_photo(victim_user, put_upload("victim.jpg", corpus.photo_jpeg(300, 300)))
    post_id = make_post(make_user())
    with session_scope() as session:  # its "base" would be ../profile_photos/profile_<hex>
        session.execute(update(Post).where(Post.id == post_id).values(
            image_url=f"/media/post_photos/../profile_photos/{victim['filename']}_large.jpg"))
    summary = process_post_photo(post_id, put_upload("post.jpg", corpus.photo_jpeg(300, 300)))
    (media_row,) = rows(post_id=post_id)
    assert_rejected_and_recorded(summary, media_row, "stored URL")
    assert files(media_root, "profile_photos") == set(victim["variants"].values())
    assert files(media_root, "post_photos") == set()


def test_a_post_image_url_elsewhere_is_not_ours_and_is_simply_replaced(clean_db, media_root, put_upload):
    post_id = make_post(make_user())
    with session_scope() as session:
        session.execute(update(Post).where(Post.id == post_id).values(image_url="https://elsewhere.example/p.jpg"))
    summary = process_post_photo(post_id, put_upload("post.jpg", corpus.photo_jpeg(300, 300)))
    assert summary["status"] == "COMPLETED"
    assert files(media_root, "post_photos") == set(summary["variants"].values())


@pytest.mark.parametrize("purpose, good", [("profile_photo", f"profile_{HEX}"), ("post_photo", f"post_{HEX}")])
def test_every_path_function_refuses_a_base_off_its_pattern(media_root, purpose, good):
    victim = media_root / "victim_large.jpg"
    victim.write_bytes(b"keep me")
    assert storage.checked_base(purpose, good) == good
    bad = f"../{victim.name[:-len('_large.jpg')]}"
    four = {n: b"x" for n in ("large", "medium", "small", "thumbnail")}
    for call in (lambda: storage.delete_variants(purpose, bad), lambda: storage.variants_exist(purpose, bad),
                 lambda: storage.write_variants(purpose, bad, four),
                 lambda: storage.remove_stale_temporaries(purpose, bad),
                 lambda: storage.variant_paths(purpose, f"{good}\n"), lambda: storage.checked_base(purpose, None)):
        with pytest.raises(ImageRejected) as raised:
            call()
        assert raised.value.code == "bad_stored_name"
    assert victim.read_bytes() == b"keep me"
    assert not (media_root / storage.FOLDERS[purpose]).exists()  # nothing was written either
