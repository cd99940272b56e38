"""A BlurHash encoder (https://blurha.sh), small enough not to need a dependency.

It runs on a tiny copy (32x32 by default), so pure Python costs about a millisecond.
"""
from __future__ import annotations

import math
from functools import lru_cache

from PIL import Image

_BASE83 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz#$%*+,-.:;=?@[]^_{|}~"
_SRGB_TO_LINEAR = [((v / 255) / 12.92) if v / 255 <= 0.04045 else (((v / 255) + 0.055) / 1.055) ** 2.4
                   for v in range(256)]


def _base83(value: int, length: int) -> str:
    return "".join(_BASE83[(value // 83 ** (length - i - 1)) % 83] for i in range(length))


def _linear_to_srgb(value: float) -> int:
    v = min(1.0, max(0.0, value))
    if v <= 0.0031308:
        return int(v * 12.92 * 255 + 0.5)
    return int((1.055 * v ** (1 / 2.4) - 0.055) * 255 + 0.5)


def _sign_pow(value: float, exponent: float) -> float:
    return math.copysign(abs(value) ** exponent, value)


@lru_cache(maxsize=16)
def _cosines(components: int, size: int) -> tuple[tuple[float, ...], ...]:
    return tuple(tuple(math.cos(math.pi * c * x / size) for x in range(size)) for c in range(components))


def encode(image: Image.Image, x_components: int = 4, y_components: int = 3, size: int = 32) -> str:
    """BlurHash of an RGB image, computed on a ``size``x``size`` copy."""
    if not (1 <= x_components <= 9 and 1 <= y_components <= 9):
        raise ValueError("components must be 1..9")
    small = image.convert("RGB").resize((size, size), Image.BILINEAR)
    width = height = size
    raw = small.tobytes()
    pixels = [(_SRGB_TO_LINEAR[raw[i]], _SRGB_TO_LINEAR[raw[i + 1]], _SRGB_TO_LINEAR[raw[i + 2]])
              for i in range(0, len(raw), 3)]
    cos_x, cos_y = _cosines(x_components, width), _cosines(y_components, height)
    factors = []
    for j in range(y_components):
        for i in range(x_components):
            norm = (1 if i == 0 and j == 0 else 2) / (width * height)
            r = g = b = 0.0
            cx, cy = cos_x[i], cos_y[j]
            for y in range(height):
                cyy = cy[y]
                row = pixels[y * width:(y + 1) * width]
                for x in range(width):
                    basis = cx[x] * cyy
                    pr, pg, pb = row[x]
                    r += basis * pr
                    g += basis * pg
                    b += basis * pb
            factors.append((r * norm, g * norm, b * norm))
    dc, ac = factors[0], factors[1:]
    result = _base83((x_components - 1) + (y_components - 1) * 9, 1)
    if ac:
        actual_max = max(abs(c) for f in ac for c in f)
        quantised_max = max(0, min(82, int(math.floor(actual_max * 166 - 0.5))))
        max_value = (quantised_max + 1) / 166
        result += _base83(quantised_max, 1)
    else:
        max_value = 1.0
        result += _base83(0, 1)
    result += _base83((_linear_to_srgb(dc[0]) << 16) + (_linear_to_srgb(dc[1]) << 8) + _linear_to_srgb(dc[2]), 4)
    for factor in ac:
        quant = [max(0, min(18, int(math.floor(_sign_pow(c / max_value, 0.5) * 9 + 9.5)))) for c in factor]
        result += _base83(quant[0] * 19 * 19 + quant[1] * 19 + quant[2], 2)
    return result
