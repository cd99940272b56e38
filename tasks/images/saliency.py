"""Content-aware square crop ("attention" crop), falling back to the centre.

The square always spans the image's short side, so the only choice is where
to put it along the long side. Interest is edge energy plus colour saturation,
measured on a copy whose long side is ~128 px and collapsed to one row (or
column) of averages with a BOX resize, so the window search is over at most
128 numbers. A mild centre bias keeps uniform pictures (sky, walls, noise)
centred; a window must beat the centre by MIN_GAIN to move the crop.
"""
from __future__ import annotations

from PIL import Image, ImageChops, ImageDraw, ImageFilter

PROFILE_LENGTH = 128
CENTRE_BIAS = 0.15   # score penalty at the far ends, linear in the distance from the centre
MIN_GAIN = 1.05      # the best window must score 5 % above the centre window
FLAT_ENERGY = 2.0    # mean energy (0..255) under which a picture counts as flat


def interest_profile(image: Image.Image, horizontal: bool) -> list[float]:
    """Mean interest of each column (horizontal) or row of a small copy of ``image``."""
    long_side = max(image.size)
    factor = max(1, long_side // PROFILE_LENGTH)
    small = image.reduce(factor) if factor > 1 else image
    small = small.convert("RGB")
    edges = small.convert("L").filter(ImageFilter.FIND_EDGES)
    # The filter leaves border pixels unfiltered (the source's grey values): zero them.
    ImageDraw.Draw(edges).rectangle((0, 0, edges.width - 1, edges.height - 1), outline=0)
    saturation = small.convert("HSV").getchannel("S")
    energy = ImageChops.add(edges, saturation, scale=2.0)
    size = (energy.width, 1) if horizontal else (1, energy.height)
    return [float(v) for v in energy.resize(size, Image.BOX).tobytes()]


def attention_box(image: Image.Image) -> tuple[tuple[int, int, int, int], str]:
    """The square crop box (left, top, right, bottom) of ``image`` and how it was chosen."""
    width, height = image.size
    side = min(width, height)
    if width == height:
        return (0, 0, width, height), "full"
    horizontal = width > height
    long_side = max(width, height)
    centre_offset = (long_side - side) // 2
    profile = interest_profile(image, horizontal)
    n = len(profile)
    window = max(1, min(n, round(n * side / long_side)))
    positions = n - window + 1
    if positions <= 1 or sum(profile) / n < FLAT_ENERGY:
        return _box(horizontal, centre_offset, side), "centre"
    prefix = [0.0]
    for value in profile:
        prefix.append(prefix[-1] + value)
    centre = (positions - 1) / 2
    half_span = max(centre, 1.0)

    def score(i: int) -> float:
        return (prefix[i + window] - prefix[i]) * (1 - CENTRE_BIAS * abs(i - centre) / half_span)

    best = max(range(positions), key=score)
    centre_score = score(int(round(centre)))
    if score(best) <= centre_score * MIN_GAIN:
        return _box(horizontal, centre_offset, side), "centre"
    offset = min(long_side - side, max(0, round(best * long_side / n)))
    return _box(horizontal, offset, side), "attention"


def _box(horizontal: bool, offset: int, side: int) -> tuple[int, int, int, int]:
    return (offset, 0, offset + side, side) if horizontal else (0, offset, side, offset + side)
