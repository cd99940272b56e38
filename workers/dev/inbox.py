"""What a dev peer (the SMTP sink, the push receiver) received, in arrival order.

The server's thread adds; tests wait for a count. With a directory, each item is
also kept as a 0600 file named by arrival, written whole.
"""
from __future__ import annotations

import itertools
import secrets
import threading
import time
from pathlib import Path
from typing import Generic, TypeVar

from workers.private_files import write_private

T = TypeVar("T")


class Inbox(Generic[T]):
    def __init__(self, noun: str, directory: Path | None = None, suffix: str = ""):
        self.noun = noun                  # "message(s)", for the timeout error
        self.directory = Path(directory) if directory is not None else None
        self.suffix = suffix
        self.items: list[T] = []
        self._arrived = threading.Condition()
        self._sequence = itertools.count(1)

    def open(self) -> None:
        if self.directory is not None:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)

    def add(self, item: T, record: bytes | None = None) -> None:
        if self.directory is not None and record is not None:
            # Sortable by arrival; the sequence and random parts keep two items in the same
            # second (or two peers sharing a directory) from overwriting each other.
            name = f"{time.strftime('%Y%m%dT%H%M%S')}-{next(self._sequence):05d}-{secrets.token_hex(3)}{self.suffix}"
            write_private(self.directory / name, record)
        with self._arrived:
            self.items.append(item)
            self._arrived.notify_all()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[T]:
        """Block until at least ``count`` items arrived; return all received so far."""
        deadline = time.monotonic() + timeout
        with self._arrived:
            while len(self.items) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"expected {count} {self.noun} within {timeout}s, "
                                       f"{len(self.items)} arrived")
                self._arrived.wait(remaining)
            return list(self.items)

    def clear(self) -> None:
        with self._arrived:
            self.items.clear()
