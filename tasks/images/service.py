"""Database side of the images family: plain functions that take a Session and never commit.

One upload moves through three short transactions, owned by the task:
``begin_processing`` (upsert the media_files row as PROCESSING), then, after
the CPU work ran with no transaction open, ``finish`` (write the variant files
and switch the reference, under a per-subject advisory lock), then
``sweep_unreferenced`` (delete variants nothing references any more).

The per-subject lock is what makes "never delete a file still referenced"
hold: variants are written and references switched while holding it, and
files are deleted only while holding it after checking the references.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from db.locks import xact_lock
from db.models import MediaFile, Post, ProcessingStatus, User
from tasks.images import storage
from tasks.images.errors import ImageRejected
from tasks.images.pipeline import Rendered

# A file that kills its worker (OOM, segfault) is requeued by acks_late +
# reject_on_worker_lost; the one poison-pill guard (workers/reliability/deliveries.py)
# dead-letters it after TASK_MAX_DELIVERIES, and ``close_out`` then fails its row.


@dataclass(frozen=True)
class Subject:
    """What an upload is for: a user's profile photo or a post's photo."""

    purpose: str
    user_id: int               # the owner (the post's author for post photos)
    post_id: str | None = None

    @property
    def key(self) -> str:
        return str(self.post_id if self.purpose == "post_photo" else self.user_id)


@dataclass
class Start:
    media_id: str
    status: ProcessingStatus
    attempts: int
    summary: dict | None = None    # set when the row was already finished


def find_subject(session: Session, purpose: str, subject_id: int | str) -> Subject | None:
    """The subject of an upload, or None when its user or post is gone."""
    if purpose == "profile_photo":
        return profile_subject(session, subject_id)
    return post_subject(session, subject_id)


def profile_subject(session: Session, user_id: int) -> Subject | None:
    exists = session.scalar(select(User.id).where(User.id == user_id))
    return Subject("profile_photo", user_id) if exists is not None else None


def post_subject(session: Session, post_id: str) -> Subject | None:
    author_id = session.scalar(select(Post.author_id).where(Post.id == post_id))
    return Subject("post_photo", author_id, post_id) if author_id is not None else None


def dedupe_key(subject: Subject, source_path: str) -> str:
    return hashlib.sha256(f"{subject.purpose}:{subject.key}:{source_path}".encode()).hexdigest()


def _row_values(subject: Subject, source_path: str, status: ProcessingStatus, attempts: int) -> dict:
    return {"user_id": subject.user_id, "post_id": subject.post_id, "purpose": subject.purpose,
            "dedupe_key": dedupe_key(subject, source_path), "original_name": source_path[:255],
            "storage_path": storage.FOLDERS[subject.purpose], "processing_status": status,
            "attempts": attempts}


def register_upload(session: Session, subject: Subject, source_path: str) -> str:
    """Record an upload as PENDING (for a web tier that wants the row before enqueuing). Idempotent."""
    statement = insert(MediaFile).values(_row_values(subject, source_path, ProcessingStatus.PENDING, 0))
    session.execute(statement.on_conflict_do_nothing(index_elements=[MediaFile.dedupe_key]))
    return session.scalar(select(MediaFile.id).where(MediaFile.dedupe_key == dedupe_key(subject, source_path)))


def begin_processing(session: Session, subject: Subject, source_path: str) -> Start:
    """Upsert the upload's row as PROCESSING; a finished row is returned untouched."""
    statement = insert(MediaFile).values(_row_values(subject, source_path, ProcessingStatus.PROCESSING, 1))
    statement = statement.on_conflict_do_update(
        index_elements=[MediaFile.dedupe_key],
        set_={"processing_status": ProcessingStatus.PROCESSING, "attempts": MediaFile.attempts + 1,
              "updated_at": func.now()},
        where=MediaFile.processing_status.in_([ProcessingStatus.PENDING, ProcessingStatus.PROCESSING]),
    ).returning(MediaFile.id, MediaFile.processing_status, MediaFile.attempts)
    row = session.execute(statement).first()
    if row is not None:
        return Start(row.id, row.processing_status, row.attempts)
    media = session.scalar(select(MediaFile).where(MediaFile.dedupe_key == dedupe_key(subject, source_path)))
    return Start(media.id, media.processing_status, media.attempts, summary=summarize(media, duplicate=True))


def lock_subject(session: Session, subject: Subject) -> None:
    """Serialise writers and deleters of one subject's variants until the transaction ends."""
    xact_lock(session, "images.subject", subject.purpose, subject.key)


def summarize(media: MediaFile, *, duplicate: bool = False) -> dict[str, Any]:
    meta = media.meta or {}
    summary = {
        "status": media.processing_status.value, "media_file_id": str(media.id), "purpose": media.purpose,
        "user_id": media.user_id, "post_id": media.post_id, "source_path": media.original_name,
        "attempts": media.attempts,
    }
    if media.processing_status == ProcessingStatus.FAILED:
        summary.update(error_code=meta.get("error_code"), message=meta.get("message"))
    elif media.processing_status == ProcessingStatus.COMPLETED:
        summary.update(
            filename=media.filename, url=media.cdn_url, mime_type=media.mime_type, file_size=media.file_size,
            width=media.width, height=media.height, **{k: meta.get(k) for k in (
                "variants", "sha256", "blurhash", "dominant_color", "crop_box", "crop_method", "timings_ms",
                "referenced", "previous_filename")})
    if duplicate:
        summary["duplicate"] = True
    return summary


def _current_base(session: Session, subject: Subject, *, for_update: bool = False) -> tuple[bool, str | None]:
    """(subject still exists, the variant base its reference points at).

    Raises ImageRejected(bad_stored_name) when the stored reference is not
    exactly one of our names: it is about to be compared with, and swept
    against, real files.
    """
    if subject.purpose == "profile_photo":
        query = select(User.profile_photo_filename).where(User.id == subject.user_id)
        row = session.execute(query.with_for_update() if for_update else query).first()
        if row is None or row[0] is None:
            return (row is not None, None)
        return (True, storage.checked_base(
            subject.purpose, row[0], f"users.profile_photo_filename of user {subject.user_id}"))
    query = select(Post.image_url).where(Post.id == subject.post_id)
    row = session.execute(query.with_for_update() if for_update else query).first()
    return (row is not None, storage.base_from_url(subject.purpose, row[0]) if row else None)


def _same_subject(subject: Subject) -> list:
    return [MediaFile.purpose == subject.purpose, MediaFile.user_id == subject.user_id,
            MediaFile.post_id.is_(None) if subject.post_id is None else MediaFile.post_id == subject.post_id]


def _unswept_bases(session: Session, subject: Subject) -> set[str]:
    """The subject's completed variant bases whose files were not yet deleted, each checked."""
    rows = session.execute(select(MediaFile.id, MediaFile.filename).where(
        *_same_subject(subject), MediaFile.processing_status == ProcessingStatus.COMPLETED,
        MediaFile.filename.is_not(None),
        ~MediaFile.meta.has_key("variants_deleted_at"))).all()  # noqa: W601
    return {storage.checked_base(subject.purpose, row.filename, f"media_files.filename of {row.id}")
            for row in rows}


def _set_reference(session: Session, subject: Subject, base: str) -> None:
    if subject.purpose == "profile_photo":
        session.execute(update(User).where(User.id == subject.user_id).values(
            profile_image_url=storage.variant_url(subject.purpose, base), profile_photo_filename=base))
    else:
        session.execute(update(Post).where(Post.id == subject.post_id).values(
            image_url=storage.variant_url(subject.purpose, base)))


def fail(session: Session, media_id: str, rejection: ImageRejected, extra: dict | None = None) -> dict:
    media = session.get(MediaFile, media_id, with_for_update=True)
    if media is None:
        return {"status": "gone", "media_file_id": media_id}
    if media.processing_status in (ProcessingStatus.COMPLETED, ProcessingStatus.FAILED):
        return summarize(media, duplicate=True)
    media.processing_status = ProcessingStatus.FAILED
    if extra and extra.get("file_size"):
        media.file_size = extra["file_size"]
    media.meta = {"error_code": rejection.code, "message": rejection.message, **(extra or {})}
    session.flush()
    return summarize(media)


def close_out(session: Session, subject: Subject, source_path: str, rejection: ImageRejected) -> None:
    """Fail an upload that will not be processed again (its task was dead-lettered).

    An upsert: the task may have died before its first transaction created the
    row. A row already COMPLETED or FAILED is left as it is.
    """
    values = _row_values(subject, source_path, ProcessingStatus.FAILED, 0)
    # The table, not the mapped class: its column is named `metadata`, which the ORM reserves.
    table = MediaFile.__table__
    statement = insert(table).values(**values, metadata={"error_code": rejection.code, "message": rejection.message})
    session.execute(statement.on_conflict_do_update(
        index_elements=[table.c.dedupe_key],
        set_={"processing_status": ProcessingStatus.FAILED, "metadata": statement.excluded["metadata"],
              "updated_at": func.now()},
        where=table.c.processing_status.in_([ProcessingStatus.PENDING, ProcessingStatus.PROCESSING])))


def finish(session: Session, subject: Subject, media_id: str, rendered: Rendered) -> dict:
    """Write the variants and point the subject at them, under the subject's lock.

    A row already finished by a concurrent duplicate is left as it is. If a newer
    upload of the same subject has completed meanwhile, this one is recorded but
    does not take the reference back (its files are then swept as unreferenced).
    """
    lock_subject(session, subject)
    media = session.get(MediaFile, media_id, with_for_update=True)
    if media is None:
        return {"status": "gone", "media_file_id": media_id}
    if media.processing_status in (ProcessingStatus.COMPLETED, ProcessingStatus.FAILED):
        return summarize(media, duplicate=True)
    exists, previous_base = _current_base(session, subject, for_update=True)
    if not exists:
        return {"status": "gone", "media_file_id": media_id}
    # Every stored name the sweep after this will turn into a path is checked now,
    # so a bad one fails this upload (recorded) before any file is written.
    _unswept_bases(session, subject)
    base = storage.variant_base(subject.purpose, subject.key, rendered.sha256)
    newer = session.scalar(select(func.count()).select_from(MediaFile).where(
        *_same_subject(subject), MediaFile.processing_status == ProcessingStatus.COMPLETED,
        MediaFile.filename == previous_base, MediaFile.created_at > media.created_at,
    )) if previous_base and previous_base != base else 0
    storage.write_variants(subject.purpose, base, rendered.variants)
    referenced = not newer
    if referenced:
        _set_reference(session, subject, base)
    media.processing_status = ProcessingStatus.COMPLETED
    media.filename = base
    media.mime_type = rendered.mime_type
    media.file_size = rendered.file_size
    media.width, media.height = rendered.width, rendered.height
    media.cdn_url = storage.variant_url(subject.purpose, base)
    media.meta = {
        "sha256": rendered.sha256, "blurhash": rendered.blurhash, "dominant_color": rendered.dominant_color,
        "variants": storage.variant_names(base), "crop_box": list(rendered.crop_box),
        "crop_method": rendered.crop_method, "timings_ms": rendered.timings_ms, "source": rendered.notes,
        "format": rendered.format, "referenced": referenced,
        "previous_filename": previous_base if previous_base != base else None,
    }
    session.flush()
    return summarize(media)


def sweep_unreferenced(session: Session, subject: Subject, extra_bases: tuple[str, ...] = ()) -> list[str]:
    """Delete the variants of this subject that nothing references any more.

    Candidates are the subject's completed rows whose files were not yet
    deleted, plus ``extra_bases`` (a previous reference with no row, or files
    written by a transaction that rolled back). Safe to run any number of times.
    A stored name that is not exactly one of ours raises
    ImageRejected(bad_stored_name) before anything is deleted.
    """
    lock_subject(session, subject)
    _exists, current = _current_base(session, subject)
    same_subject = _same_subject(subject)
    # All names are checked before the first delete: a bad one deletes nothing at all.
    rows = _unswept_bases(session, subject)
    extra = {storage.checked_base(subject.purpose, base, "swept base") for base in extra_bases if base}
    candidates = {base for base in (*rows, *extra) if base != current}
    deleted = []
    now = datetime.now(timezone.utc).isoformat()
    for base in sorted(candidates):
        storage.delete_variants(subject.purpose, base)
        deleted.append(base)
    if deleted:
        session.execute(update(MediaFile).where(*same_subject, MediaFile.filename.in_(deleted)).values(
            meta=MediaFile.meta.op("||")(func.jsonb_build_object("variants_deleted_at", now))))
    return deleted
