"""Files only their owner may read, written so that no reader ever sees half of one (dev only).

``write_private`` replaces a file whole (temporary name, then rename): the dev peers'
``.eml`` and push records. ``generated_once`` creates a secret on first use and keeps
it (a draft, then a hard link): two starters racing either win the link or read the
complete winner. Both write 0600; callers create their directories 0700.
"""
from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path


def write_private(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def generated_once(path: Path, make: Callable[[], bytes]) -> Path:
    """``path``, holding what ``make()`` returned the first time anyone asked."""
    if not path.exists():
        draft = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as file:
            file.write(make())
        try:
            os.link(draft, path)
        except FileExistsError:
            pass
        finally:
            draft.unlink()
    return path
