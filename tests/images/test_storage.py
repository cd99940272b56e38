"""Reading uploads safely, writing variants atomically, the default avatar."""
from __future__ import annotations

import os

import pytest
from PIL import Image

from tasks.images import avatar, storage
from tasks.images.errors import ImageRejected
from tests.images import corpus


def code_of(source_path: str) -> str | None:
    try:
        storage.read_upload(source_path)
    except ImageRejected as exc:
        return exc.code
    return None


@pytest.mark.parametrize("source_path", [
    "../secret.jpg", "a/../../secret.jpg", "/etc/passwd", "", "x\x00.jpg", "..\\secret.jpg", "a" * 2000,
])
def test_paths_escaping_uploads_are_bad_path(media_root, source_path):
    (media_root / "secret.jpg").write_bytes(corpus.photo_jpeg(100, 100))
    assert code_of(source_path) == "bad_path"


def test_a_symlink_out_of_uploads_is_bad_path_and_one_inside_is_fine(media_root, tmp_path):
    outside = tmp_path / "outside.jpg"
    outside.write_bytes(corpus.photo_jpeg(100, 100))
    (media_root / "uploads" / "escape.jpg").symlink_to(outside)
    (media_root / "uploads" / "dir_escape").symlink_to(tmp_path)
    assert code_of("escape.jpg") == "bad_path"
    assert code_of("dir_escape/outside.jpg") == "bad_path"
    (media_root / "uploads" / "real.jpg").write_bytes(outside.read_bytes())
    (media_root / "uploads" / "alias.jpg").symlink_to(media_root / "uploads" / "real.jpg")
    assert storage.read_upload("alias.jpg") == outside.read_bytes()


def test_not_a_regular_file_missing_empty_and_too_large(media_root, put_upload):
    (media_root / "uploads" / "folder").mkdir()
    os.mkfifo(media_root / "uploads" / "pipe.jpg")  # would block a naive open() forever
    put_upload("empty.jpg", b"")
    put_upload("big.jpg", corpus.six_megabytes())
    assert code_of("folder") == "bad_path"
    assert code_of("pipe.jpg") == "bad_path"
    assert code_of("missing.jpg") == "not_found"
    assert code_of("empty.jpg") == "empty_file"
    assert code_of("big.jpg") == "too_large"
    data = corpus.photo_jpeg(100, 100)
    assert storage.read_upload(put_upload("nested/ok.jpg", data)) == data


def test_media_root_defaults_under_data_dir_and_relative_paths_use_the_project_root(monkeypatch, tmp_path):
    monkeypatch.delenv("MEDIA_ROOT", raising=False)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    assert storage.media_root() == (tmp_path / "data" / "media").resolve()
    monkeypatch.setenv("MEDIA_ROOT", "some/media")
    assert storage.media_root() == (__import__("settings").PROJECT_ROOT / "some" / "media").resolve()


def test_variant_names_are_deterministic_and_urls_round_trip(media_root):
    base = storage.variant_base("profile_photo", "7", "ab" * 32)
    assert base == storage.variant_base("profile_photo", "7", "ab" * 32)
    assert base != storage.variant_base("profile_photo", "8", "ab" * 32)
    assert base.startswith("profile_") and len(base) == len("profile_") + 32
    assert storage.variant_names(base)["thumbnail"] == f"{base}_thumbnail.jpg"
    url = storage.variant_url("profile_photo", base)
    assert url == f"/media/profile_photos/{base}_medium.jpg"
    assert storage.base_from_url("profile_photo", url) == base
    post_base = storage.variant_base("post_photo", "x", "cd" * 32)
    assert storage.base_from_url("post_photo", storage.variant_url("post_photo", post_base)) == post_base
    assert storage.base_from_url("post_photo", "https://elsewhere.example/p.jpg") is None


def test_variants_are_written_atomically_with_no_temporary_left(media_root):
    base = storage.variant_base("post_photo", "p", "00" * 32)
    storage.write_variants("post_photo", base, {n: n.encode() for n in ("large", "medium", "small", "thumbnail")})
    files = sorted(p.name for p in (media_root / "post_photos").iterdir())
    assert files == sorted(storage.variant_names(base).values())
    assert storage.variants_exist("post_photo", base)
    assert storage.delete_variants("post_photo", base) == 4
    assert not storage.variants_exist("post_photo", base)


def test_a_rewrite_removes_the_temporaries_of_a_writer_killed_mid_write(media_root):
    base = storage.variant_base("profile_photo", "7", "11" * 32)
    other = storage.variant_base("profile_photo", "8", "11" * 32)
    folder = media_root / "profile_photos"
    folder.mkdir()
    left = [folder / f".{base}_large.jpg.4242.abcd1234.tmp", folder / f".{base}_small.jpg.4242.abcd1234.tmp"]
    unrelated = folder / f".{other}_large.jpg.4243.abcd1234.tmp"
    for path in (*left, unrelated):
        path.write_bytes(b"half a jpe")
    storage.write_variants("profile_photo", base, {n: n.encode() for n in ("large", "medium", "small", "thumbnail")})
    assert not any(path.exists() for path in left)
    assert unrelated.exists()  # another subject's writer: not this lock holder's business
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(f".{other}")) == sorted(
        storage.variant_names(base).values())


def test_default_avatar_uses_the_seed_colour_and_is_cached(media_root):
    assert avatar.avatar_color(9) == "#A855F7" == avatar.AVATAR_COLORS[9 % 8]
    assert avatar.default_avatar_url(9) == "/api/avatar/9?color=A855F7"
    path = avatar.default_avatar(9, 128)
    assert path.parent == media_root / "avatars"
    image = Image.open(path)
    assert image.size == (128, 128) and image.getpixel((2, 2)) == (0xA8, 0x55, 0xF7)
    mtime = path.stat().st_mtime_ns
    assert avatar.default_avatar(1, 128) == path  # user 1 has the same colour: one cached file
    assert path.stat().st_mtime_ns == mtime
    with pytest.raises(ValueError):
        avatar.default_avatar(9, 1000)
