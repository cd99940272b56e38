"""What the CLI prints: aligned tables and a progress bar, in one place.

Cells are made safe for a terminal first: text that came from a message sender
(task names, error messages) may carry escape sequences that would rewrite the
operator's screen, so control characters are shown as ``\\x1b``-style escapes.
"""
from __future__ import annotations

import sys
import time

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
