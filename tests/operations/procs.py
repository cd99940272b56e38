"""Process helpers for chaos tests (Linux /proc; no extra dependency)."""
from __future__ import annotations

import os
import signal
from pathlib import Path


def children(pid: int) -> list[int]:
    found: list[int] = []
    task_dir = Path(f"/proc/{pid}/task")
    if not task_dir.exists():
        return found
    for thread in task_dir.iterdir():
        try:
            found.extend(int(p) for p in (thread / "children").read_text().split())
        except (FileNotFoundError, ProcessLookupError, ValueError):
            continue
    return found


def kill(pid: int, sig: int = signal.SIGKILL) -> bool:
    try:
        os.kill(pid, sig)
        return True
    except ProcessLookupError:
        return False


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0
