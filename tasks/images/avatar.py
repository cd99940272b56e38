"""The seed's deterministic default avatar: a colour from the user id, rendered on demand.

No database row is involved. The picture depends only on the colour and the
size, so it is cached once per (colour, size) under MEDIA_ROOT/avatars/ and
shared by every user with that colour.
"""
from __future__ import annotations

import io
from pathlib import Path

from PIL import Image, ImageDraw

from tasks.images import storage
from tasks.images.pipeline import VARIANT_SIZES

# Seed 000, "Default Avatar System".
AVATAR_COLORS = ["#7C3AED", "#A855F7", "#C084FC", "#DDD6FE", "#8B5CF6", "#9333EA", "#A21CAF", "#BE185D"]
AVATAR_SIZES = {size for _name, size in VARIANT_SIZES}
SUPERSAMPLE = 4  # draw large and downscale: smooth edges without an antialiasing renderer


def avatar_color(user_id: int) -> str:
    return AVATAR_COLORS[user_id % len(AVATAR_COLORS)]


def default_avatar_url(user_id: int) -> str:
    """The URL the web tier serves for users without a photo (seed format)."""
    return f"/api/avatar/{user_id}?color={avatar_color(user_id).replace('#', '')}"


def render_avatar(color: str, size: int) -> bytes:
    """A PNG: the colour as background and a light head-and-shoulders silhouette."""
    big = size * SUPERSAMPLE
    image = Image.new("RGB", (big, big), color)
    draw = ImageDraw.Draw(image)
    light = (255, 255, 255)
    head = big * 0.19
    cx, cy = big / 2, big * 0.40
    draw.ellipse((cx - head, cy - head, cx + head, cy + head), fill=light)
    draw.ellipse((big * 0.18, big * 0.66, big * 0.82, big * 1.30), fill=light)
    buffer = io.BytesIO()
    image.resize((size, size), Image.LANCZOS).save(buffer, "PNG", optimize=True)
    return buffer.getvalue()


def default_avatar(user_id: int, size: int = 256) -> Path:
    """The path of the user's default avatar PNG, rendered and cached on first use."""
    if size not in AVATAR_SIZES:
        raise ValueError(f"size must be one of {sorted(AVATAR_SIZES)}")
    color = avatar_color(user_id)
    path = storage.media_root() / "avatars" / f"default_{color[1:].lower()}_{size}.png"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        storage.write_atomically(path, render_avatar(color, size))
    return path
