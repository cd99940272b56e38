"""What the CLI prints: aligned tables and a progress bar, in one place.

Cells are made safe for a terminal first: text that came from a message sender
(task names, error messages) may carry escape sequences that would rewrite the
operator's screen, so control characters are shown as ``\\x1b``-style escapes.
"""
from __future__ import annotations

import re
import sys
import time
from collections.abc import Sequence
from datetime import timedelta

_CONTROL = {code: f"\\x{code:02x}" for code in [*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0)]}


def printable(value: object) -> str:
    """``value`` as text with every control character (ESC, CR, BEL …) escaped."""
    return str(value).translate(_CONTROL)


def table(header: tuple, rows: list[tuple], indent: str = "  ") -> str:
    cells = [[printable(cell) for cell in row] for row in [header, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]

    def line(row: list[str]) -> str:
        return (indent + "  ".join(cell.ljust(width) for cell, width in zip(row, widths))).rstrip()

    return "\n".join([line(cells[0]), line(["-" * w for w in widths]), *(line(row) for row in cells[1:])])


def progress_bar(unit: str, stream=None, width: int = 30):
    """``show(done, total)``: redraws one line with a bar, the counts and the elapsed time."""
    started = time.monotonic()
    stream = stream or sys.stdout

    def show(done: int, total: int) -> None:
        filled = int(width * done / total) if total else width
        elapsed = time.monotonic() - started
        stream.write(f"\r  [{'#' * filled}{'.' * (width - filled)}] {done}/{total} {unit}  {elapsed:5.1f} s")
        if done >= total:
            stream.write("\n")
        stream.flush()

    return show


_DURATION = re.compile(r"^(\d+)([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_duration(text: str) -> timedelta:
    """``30d``, ``12h``, ``15m``, ``90s``, ``2w``: what the CLI's --older-than and --since take."""
    match = _DURATION.match(text.strip())
    if not match:
        raise ValueError(f"not a duration: {text!r} (use e.g. 30d, 12h, 15m)")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


_BLOCKS = "▁▂▃▄▅▆▇█"


def sparkline(values: Sequence[float]) -> str:
    """One block character per value, scaled from the lowest to the highest (all equal: the lowest block)."""
    if not values:
        return ""
    low, high = min(values), max(values)
    span = high - low
    return "".join(_BLOCKS[0] if span == 0 else _BLOCKS[round((v - low) / span * (len(_BLOCKS) - 1))]
                   for v in values)
