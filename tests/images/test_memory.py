"""Peak memory of a render, measured: no accepted file may add 200 MB to a worker child.

For each format and mode, the largest file the per-mode cap accepts (and one a
little larger) is generated here and rendered in a fresh Python process, whose
peak RSS (VmHWM, reset just before the render through /proc/self/clear_refs)
is the number checked: Pillow allocates pixels in C, out of tracemalloc's sight.
Two shapes per mode: elongated (short side under 1024, so nothing is reduced
early and colour conversion runs at full size) and square (reduced early).
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from tasks.images import pipeline
from tasks.images.errors import OUT_OF_MEMORY
from tests.images import corpus

ROOT = Path(__file__).resolve().parents[2]
LIMIT_BYTES = 200_000_000
REFUSED_BEFORE_DECODING_BYTES = 10_000_000

MEASURE = r"""
import json, resource, sys
from pathlib import Path
from tasks.images import pipeline
from tasks.images.errors import ImageRejected

def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024

def render(path):
    data = Path(path).read_bytes()
    with open("/proc/self/clear_refs", "w") as refs:  # VmHWM := current RSS
        refs.write("5")
    before = status("VmRSS:")
    try:
        pipeline.render(data)
        code = None
    except ImageRejected as exc:
        code = exc.code
    return {"code": code, "peak_delta": status("VmHWM:") - before}

if len(sys.argv) > 2:
    resource.setrlimit(resource.RLIMIT_AS, (int(sys.argv[2]), int(sys.argv[2])))
print(json.dumps([render(path) for path in sys.argv[1].split(",")]))
"""

# (format, mode, fill); every fill has some transparency where the mode can, so alpha is flattened.
CASES = [
    ("PNG", "1", 1), ("PNG", "L", 90), ("PNG", "P", 0), ("PNG", "I;16", 30000), ("PNG", "LA", (90, 128)),
    ("PNG", "RGB", (10, 20, 30)), ("PNG", "RGBA", (10, 20, 30, 128)),
    ("JPEG", "L", 90), ("JPEG", "RGB", (10, 20, 30)), ("JPEG", "CMYK", (0, 90, 200, 10)),
    ("WEBP", "RGB", (10, 20, 30)), ("WEBP", "RGBA", (10, 20, 30, 128)),
]
MAX_SIDE = {"PNG": 1 << 20, "JPEG": 65535, "WEBP": 16383}


def largest_accepted(fmt: str, mode: str, shape: str) -> tuple[int, int]:
    """The largest image of this shape the caps accept: one pixel more (in width) is refused."""
    def fits(w: int, h: int) -> bool:
        return w * h <= pipeline.MAX_PIXELS and pipeline.decode_cost(fmt, mode, w, h) <= pipeline.DECODE_BUDGET_BYTES

    if shape == "elongated":
        height = 1000
        low, high = height, MAX_SIDE[fmt]
        while low < high:
            mid = (low + high + 1) // 2
            low, high = (mid, high) if fits(mid, height) else (low, mid - 1)
        return low, height
    side = int(pipeline.MAX_PIXELS ** 0.5)
    while not fits(side, side):
        side -= 8
    return side, side


def encode(fmt: str, mode: str, fill, size: tuple[int, int]) -> bytes:
    image = Image.new(mode, size, fill)
    if fmt == "PNG":
        return corpus.save(image, "PNG", **({"transparency": 0} if mode == "P" else {}))
    if fmt == "WEBP":
        return corpus.save(image, "WEBP", lossless=mode == "RGBA", quality=50)
    return corpus.save(image, "JPEG", quality=50)


def measure(paths: list[Path], address_space: int | None = None) -> list[dict]:
    argv = [sys.executable, "-c", MEASURE, ",".join(map(str, paths))]
    if address_space:
        argv.append(str(address_space))
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


# Elongated for every case; square only where the decoded buffer itself is large:
# a square JPEG decodes at 1/8 scale (draft, ~8 MB at 40 MP), and a square
# 1-2 byte mode is at most 80 MB at MAX_PIXELS (measured 42-84 MB).
WORST_CASES = [(fmt, mode, fill, shape) for fmt, mode, fill in CASES for shape in ("elongated", "square")
               if shape == "elongated" or (fmt != "JPEG" and pipeline.DECODED_BYTES.get(mode, 4) >= 4)]


@pytest.mark.parametrize("fmt, mode, fill, shape", WORST_CASES, ids=[f"{f}-{m}-{s}" for f, m, _, s in WORST_CASES])
def test_the_largest_accepted_file_of_each_mode_stays_under_200_mb(tmp_path, fmt, mode, fill, shape):
    width, height = largest_accepted(fmt, mode, shape)
    over = (width + 8, height) if width * height <= pipeline.MAX_PIXELS - 8 * height else (width, height + 8)
    accepted, refused = tmp_path / "accepted", tmp_path / "refused"
    accepted.write_bytes(encode(fmt, mode, fill, (width, height)))
    refused.write_bytes(encode(fmt, mode, fill, over))
    refused_result, accepted_result = measure([refused, accepted])
    assert refused_result["code"] == "too_many_pixels", (over, refused_result)
    assert refused_result["peak_delta"] < REFUSED_BEFORE_DECODING_BYTES, (over, refused_result)
    assert accepted_result["code"] is None, ((width, height), accepted_result)
    assert accepted_result["peak_delta"] < LIMIT_BYTES, ((width, height), accepted_result)


def test_the_reported_6300_square_pngs_are_accepted_under_200_mb(tmp_path):
    """The issue's files: 6300x6300 16-bit grey and RGBA PNGs peaked at 328-368 MB."""
    paths = []
    for mode, fill in (("I;16", 30000), ("RGBA", (10, 20, 30, 128)), ("LA", (90, 128))):
        paths.append(tmp_path / f"{mode.replace(';', '')}.png")
        paths[-1].write_bytes(encode("PNG", mode, fill, (6300, 6300)))
    for result in measure(paths):
        assert result["code"] is None and result["peak_delta"] < LIMIT_BYTES, result


def test_a_decoder_that_cannot_allocate_is_out_of_memory(tmp_path):
    """A real allocation failure (the process's address space capped with RLIMIT_AS),
    not a mocked MemoryError: the render is refused as out_of_memory."""
    path = tmp_path / "big.png"
    path.write_bytes(encode("PNG", "RGBA", (10, 20, 30, 128), (4000, 4000)))  # 64 MB once decoded
    baseline = subprocess.run([sys.executable, "-c", "import resource, sys; from tasks.images import pipeline;"
                               "print(open('/proc/self/status').read().split('VmSize:')[1].split()[0])"],
                              cwd=ROOT, capture_output=True, text=True, check=True)
    address_space = (int(baseline.stdout) + 30_000) * 1024  # 30 MB above what the imports map
    (result,) = measure([path], address_space)
    assert result["code"] == OUT_OF_MEMORY, result
