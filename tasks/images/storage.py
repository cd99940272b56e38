"""Where uploads are read from and variants are written to, safely.

Layout under MEDIA_ROOT (env; default ``$DATA_DIR/media``, i.e. ``.data/media``
in the project; a relative MEDIA_ROOT is taken from the project root):

    uploads/           sources written by the web tier; task arguments are relative to it
    profile_photos/    profile_<uuid-hex>_{thumbnail,small,medium,large}.jpg
    post_photos/       post_<uuid-hex>_{thumbnail,small,medium,large}.jpg
    avatars/           default avatars, rendered on demand
"""
from __future__ import annotations

import errno
import os
import re
import secrets
import stat
import uuid
from pathlib import Path, PurePosixPath

import settings
from tasks.images.errors import BAD_PATH, BAD_STORED_NAME, NOT_FOUND, ImageRejected
from tasks.images.pipeline import MAX_FILE_BYTES, VARIANT_SIZES, check_size

FOLDERS = {"profile_photo": "profile_photos", "post_photo": "post_photos"}
PREFIXES = {"profile_photo": "profile", "post_photo": "post"}
# The variant a reference points at: users.profile_image_url -> medium, posts.image_url -> large.
PRIMARY_VARIANT = {"profile_photo": "medium", "post_photo": "large"}
# A fixed namespace: the same (purpose, subject, content) always yields the same file names.
VARIANT_NAMESPACE = uuid.UUID("6f1c1f0e-3b7a-5c1e-9a55-2d1b8c3e7a10")
MAX_SOURCE_PATH = 1024
# The exact shape of a variant base, as variant_base() makes it. A base read back
# from the database (users.profile_photo_filename, media_files.filename, the base
# inside posts.image_url) becomes a path only through checked_base(): a stored
# '../post_photos/post_<hex>' would otherwise delete another subject's files.
BASE_PATTERNS = {purpose: re.compile(rf"{prefix}_[0-9a-f]{{32}}") for purpose, prefix in PREFIXES.items()}


def media_root() -> Path:
    return settings.current().media_path


def media_url() -> str:
    return settings.current().media_url.rstrip("/")


def uploads_dir() -> Path:
    return media_root() / "uploads"


def folder(purpose: str) -> Path:
    return media_root() / FOLDERS[purpose]


def variant_base(purpose: str, subject_key: str, sha256: str) -> str:
    """``profile_<hex>``: deterministic, so a retried or duplicated task rewrites the same files."""
    return f"{PREFIXES[purpose]}_{uuid.uuid5(VARIANT_NAMESPACE, f'{purpose}:{subject_key}:{sha256}').hex}"


def checked_base(purpose: str, base: object, source: str = "variant base") -> str:
    """``base`` if it is exactly a ``purpose`` variant base, else ImageRejected(bad_stored_name).

    fullmatch, not ``$``: ``$`` also matches before a trailing newline.
    """
    if isinstance(base, str) and BASE_PATTERNS[purpose].fullmatch(base):
        return base
    raise _reject(BAD_STORED_NAME, f"{source} {str(base)[:100]!r} is not a {purpose} name "
                                   f"(^{BASE_PATTERNS[purpose].pattern}$); nothing was written or deleted")


def variant_names(base: str) -> dict[str, str]:
    return {name: f"{base}_{name}.jpg" for name, _size in VARIANT_SIZES}


def variant_paths(purpose: str, base: str) -> dict[str, Path]:
    """The four variant files of ``base``: the only way a base becomes a path."""
    directory = folder(purpose)
    return {name: directory / filename for name, filename in variant_names(checked_base(purpose, base)).items()}


def variant_url(purpose: str, base: str, size_name: str | None = None) -> str:
    return f"{media_url()}/{FOLDERS[purpose]}/{base}_{size_name or PRIMARY_VARIANT[purpose]}.jpg"


def base_from_url(purpose: str, url: str | None) -> str | None:
    """The variant base a stored URL points at, or None if it is not one of ours.

    A URL elsewhere (another host, another prefix) is not ours: None. A URL
    inside our own folder that is not exactly one of our variant URLs
    ('/media/post_photos/../profile_photos/...') was not written by us:
    ImageRejected(bad_stored_name), like a bad stored file name.
    """
    if not url:
        return None
    folder_prefix = f"{media_url()}/{FOLDERS[purpose]}/"
    if not url.startswith(folder_prefix):
        return None
    suffix = f"_{PRIMARY_VARIANT[purpose]}.jpg"
    base = url[len(folder_prefix):-len(suffix)] if url.endswith(suffix) else None
    return checked_base(purpose, base if base is not None else url, "stored URL")


def _reject(code: str, message: str) -> ImageRejected:
    return ImageRejected(code, message)


def resolve_upload(source_path: str) -> Path:
    """The real path of ``source_path`` inside uploads/, or ImageRejected(bad_path)."""
    if not source_path or len(source_path) > MAX_SOURCE_PATH or "\x00" in source_path or "\\" in source_path:
        raise _reject(BAD_PATH, "source_path must be a relative path inside uploads/")
    relative = PurePosixPath(source_path)
    if relative.is_absolute() or ".." in relative.parts:
        raise _reject(BAD_PATH, "source_path must not be absolute or contain '..'")
    uploads = uploads_dir().resolve()
    real = (uploads / relative).resolve()
    if not real.is_relative_to(uploads) or real == uploads:
        raise _reject(BAD_PATH, "source_path resolves outside uploads/ (symlink?)")
    return real


def read_upload(source_path: str) -> bytes:
    """The bytes of an upload, at most MAX_FILE_BYTES, read through one file descriptor."""
    real = resolve_upload(source_path)
    try:
        # O_NOFOLLOW: a final component swapped for a symlink after resolve() fails
        # with ELOOP; O_NONBLOCK: a FIFO planted in uploads/ cannot hang the worker.
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise _reject(NOT_FOUND, f"no upload at {source_path[:200]!r}") from None
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EISDIR, errno.ENOTDIR, errno.EACCES, errno.ENXIO):
            raise _reject(BAD_PATH, f"cannot open upload: {exc.strerror}") from None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise _reject(BAD_PATH, "the upload is not a regular file")
        # What was opened must still be inside uploads/ (an intermediate directory
        # swapped for a symlink between resolve() and open()).
        opened = Path(os.readlink(f"/proc/self/fd/{fd}")) if Path("/proc/self/fd").exists() else real
        if not opened.is_relative_to(uploads_dir().resolve()):
            raise _reject(BAD_PATH, "the opened file is outside uploads/")
        check_size(info.st_size)  # before reading: a huge file is refused unread
        with os.fdopen(fd, "rb", closefd=False) as stream:
            data = stream.read(MAX_FILE_BYTES + 1)
    finally:
        os.close(fd)
    check_size(len(data))  # the file may have changed since fstat
    return data


def write_atomically(path: Path, data: bytes) -> None:
    """Readers see the old file or the whole new one, never a partial write."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(temporary, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_variants(purpose: str, base: str, variants: dict[str, bytes]) -> list[Path]:
    """Write the four variants. The caller holds the subject's lock (service.finish)."""
    targets = variant_paths(purpose, base)
    directory = folder(purpose)
    directory.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(purpose, base)
    paths = []
    for name, path in targets.items():
        write_atomically(path, variants[name])
        paths.append(path)
    # The renames must be durable before the database row that references them commits.
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return paths


def remove_stale_temporaries(purpose: str, base: str) -> int:
    """Delete temporaries a writer of ``base`` left when it was killed mid-write (SIGKILL, OOM).

    Only a writer holding the subject's lock writes ``base``, and PostgreSQL
    releases that lock when the holder's connection dies, so under the lock a
    temporary of this base belongs to a dead writer. The redelivered task that
    rewrites the same (deterministic) base removes it.
    """
    removed = 0
    # A checked base holds no glob metacharacters: the pattern matches this base's temporaries only.
    for stale in folder(purpose).glob(f".{checked_base(purpose, base)}_*.tmp"):
        stale.unlink(missing_ok=True)
        removed += 1
    return removed


def variants_exist(purpose: str, base: str) -> bool:
    return all(path.is_file() for path in variant_paths(purpose, base).values())


def delete_variants(purpose: str, base: str) -> int:
    deleted = 0
    for path in variant_paths(purpose, base).values():
        try:
            path.unlink()
            deleted += 1
        except FileNotFoundError:
            pass
    return deleted
