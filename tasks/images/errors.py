"""Stable rejection codes of the images family.

A rejection is permanent: the upload is recorded as FAILED with the code and a
human message, and the task returns normally (it is not retried).
"""
from __future__ import annotations

from workers.errors import JobError

BAD_PATH = "bad_path"                  # absolute, '..', NUL, symlink out of uploads/, not a regular file
BAD_STORED_NAME = "bad_stored_name"    # a stored variant name (users, posts, media_files) is not one we write
NOT_FOUND = "not_found"                # no such file under uploads/
EMPTY_FILE = "empty_file"              # zero bytes
TOO_LARGE = "too_large"                # more than MAX_FILE_BYTES
UNSUPPORTED_FORMAT = "unsupported_format"  # magic bytes are not JPEG, PNG or WebP (GIF, text, ...)
TOO_MANY_PIXELS = "too_many_pixels"    # header dimensions above MAX_PIXELS (pixel bomb)
TOO_MANY_FRAMES = "too_many_frames"    # animation header declares more than MAX_FRAMES
TOO_SMALL = "too_small"                # short side under MIN_SIDE
CORRUPT = "corrupt"                    # header or pixel data cannot be decoded (truncated, garbage)
TIMEOUT = "timeout"                    # the queue's soft time limit fired while decoding
OUT_OF_MEMORY = "out_of_memory"        # the decoder could not allocate
WORKER_LOST = "worker_lost"            # its worker died on every delivery: a poison pill, dead-lettered
DEAD_LETTERED = "dead_lettered"        # its task was dead-lettered for another reason (retries exhausted, ...)
INTERNAL_ERROR = "internal_error"      # a bug: recorded, and the task fails visibly (not retried)

ALL_CODES = (BAD_PATH, BAD_STORED_NAME, NOT_FOUND, EMPTY_FILE, TOO_LARGE, UNSUPPORTED_FORMAT, TOO_MANY_PIXELS,
             TOO_MANY_FRAMES, TOO_SMALL, CORRUPT, TIMEOUT, OUT_OF_MEMORY, WORKER_LOST, DEAD_LETTERED,
             INTERNAL_ERROR)


class ImageRejected(JobError):
    """The upload cannot become variants; ``code`` is one of ALL_CODES."""

    code = CORRUPT

    def __init__(self, code: str, message: str):
        super().__init__(message, code=code)
