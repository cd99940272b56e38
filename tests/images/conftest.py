"""Fixtures of the images tests: a MEDIA_ROOT of their own, uploads written into it."""
from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def media_root(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "media"
    (root / "uploads").mkdir(parents=True)
    monkeypatch.setenv("MEDIA_ROOT", str(root))
    return root


@pytest.fixture
def put_upload(media_root):
    """Write bytes to uploads/<name> and return the task's source_path."""

    def put(name: str, data: bytes) -> str:
        path = media_root / "uploads" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return name

    return put
