"""Demo: uploads as the web tier would make them, then the two tasks.

Alice gets a profile photo (a sideways phone JPEG with GPS in its EXIF), Bob's
photo post gets a PNG with transparency, and Carol uploads a pixel bomb, which
is rejected: the task succeeds and records FAILED with too_many_pixels.
"""
from __future__ import annotations

import io
import struct
import uuid
import zlib

from PIL import Image, ImageChops, ImageDraw
from sqlalchemy import select

from db.models import MediaFile
from db.session import session_scope
from tasks.images import storage
from tasks.images.tasks import process_post_photo, process_profile_photo
from workers.dev.demo import DemoGraph

FAMILY = "images"
EXPECTED_FAILURES = 0  # a rejected upload is a successful task that records FAILED


def _phone_photo() -> bytes:
    size = (1600, 1200)
    base = Image.merge("RGB", [Image.linear_gradient("L").resize(size),
                               Image.radial_gradient("L").resize(size),
                               Image.linear_gradient("L").rotate(90).resize(size)])
    noise = Image.effect_noise((800, 600), 30).resize(size).convert("RGB")
    image = ImageChops.add(base, noise, offset=-64)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways, as phones do
    exif.get_ifd(0x8825).update({1: "N", 2: (52.0, 22.0, 31.0), 3: "E", 4: (4.0, 53.0, 12.0)})
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=88, exif=exif.tobytes())
    return buffer.getvalue()


def _transparent_png() -> bytes:
    image = Image.new("RGBA", (900, 600), (0, 0, 0, 0))
    ImageDraw.Draw(image).ellipse((300, 150, 600, 450), fill=(236, 72, 153, 255))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def _pixel_bomb() -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 50000, 50000, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 1024)) + chunk(b"IEND", b""))


def _upload(name: str, data: bytes) -> str:
    source_path = f"demo/{uuid.uuid4().hex[:12]}-{name}"
    path = storage.uploads_dir() / source_path
    path.parent.mkdir(parents=True, exist_ok=True)
    storage.write_atomically(path, data)
    return source_path


def enqueue(graph: DemoGraph) -> list:
    uploads = {"profile": _upload("alice.jpg", _phone_photo()), "post": _upload("morning.png", _transparent_png()),
               "bomb": _upload("carol.png", _pixel_bomb())}
    graph.notes["images"] = uploads
    return [
        process_profile_photo.delay(graph.user_ids["alice"], uploads["profile"]),
        process_post_photo.delay(graph.post_ids[1], uploads["post"]),
        process_profile_photo.delay(graph.user_ids["carol"], uploads["bomb"]),
    ]


def summarize(graph: DemoGraph) -> str:
    uploads = graph.notes.get("images", {})
    with session_scope() as session:
        rows = {row.original_name: row for row in session.scalars(
            select(MediaFile).where(MediaFile.original_name.in_(list(uploads.values()))))}
    parts = []
    for label, key in (("alice profile", "profile"), ("bob post", "post"), ("carol bomb", "bomb")):
        row = rows.get(uploads.get(key))
        if row is None:
            parts.append(f"{label}: no row")
        elif row.processing_status.value == "FAILED":
            parts.append(f"{label}: FAILED {row.meta.get('error_code')}")
        else:
            parts.append(f"{label}: {row.processing_status.value} {row.width}x{row.height} -> 4 variants")
    return "; ".join(parts)
