"""Bytes of an upload in, four square JPEG variants out (or a stable rejection).

No database, no files: ``render(data)`` is a pure function, so it is what the
benchmark times and what most tests call.

Order of work, chosen so the expensive step happens once and small:
1. magic bytes -> one format out of JPEG / PNG / WebP (never the extension);
2. header only: dimensions, frame count, and the memory a decode of this
   mode and size needs (decode_cost) -> refuse pixel bombs, and files over
   DECODE_BUDGET_BYTES, before any pixel buffer is allocated;
3. decode once; a JPEG is decoded with DCT scaling (``draft``) straight to
   the smallest 1/2, 1/4 or 1/8 scale whose short side still covers 512 px;
4. colour to sRGB (embedded ICC, CMYK), 16-bit to 8-bit, alpha flattened on
   white, EXIF orientation applied;
5. one attention crop, one resize to 512, then 256/128/64 from the 512;
6. JPEG q85, progressive, optimised, with no EXIF, XMP or ICC at all.
"""
from __future__ import annotations

import hashlib
import io
import struct
import time
import warnings
from dataclasses import dataclass, field
from functools import lru_cache

from blurhash import encode as blurhash_encode
from PIL import Image, ImageChops, ImageCms, UnidentifiedImageError

from tasks.images import saliency
from tasks.images.errors import (
    CORRUPT, EMPTY_FILE, OUT_OF_MEMORY, TOO_LARGE, TOO_MANY_FRAMES, TOO_MANY_PIXELS, TOO_SMALL,
    UNSUPPORTED_FORMAT, ImageRejected,
)

# The seed's documented limit.
MAX_FILE_BYTES = 5 * 1024 * 1024
# 40 MP: a genuine photo that fits in 5 MB is at most ~40 MP (JPEG at ~1
# bit/pixel, already heavy compression), so more pixels in 5 MB means synthetic
# content, i.e. a bomb. Memory is capped separately, per mode (decode_cost).
MAX_PIXELS = 40_000_000
# What one render may add to a worker child's RSS. A child is only replaced after
# its task (worker_max_memory_per_child), so this must hold for every accepted
# file: 180 MB estimated keeps the measured peak under 200 MB
# (tests/images/test_memory.py decodes the worst case of each mode).
DECODE_BUDGET_BYTES = 180_000_000
# Bytes per pixel Pillow holds for a decoded image of each mode (every other mode: 4).
DECODED_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2}
# Peak bytes per pixel of a whole render when nothing can be reduced early (short
# side under 1024, so colour conversion and alpha flattening run at full size):
# measured peak RSS of a 40000x1000 PNG/JPEG of each mode (alpha not opaque), Pillow 13, plus 10 %.
# The part above DECODED_BYTES shrinks with the square of the early reduction.
WORKED_BYTES = {"1": 5.6, "L": 5.6, "P": 11.1, "I;16": 7.7, "I;16B": 7.7, "I;16L": 7.7, "I;16N": 7.7,
                "LA": 12.1, "RGB": 4.6, "RGBA": 11.0, "CMYK": 9.0}
WORST_WORKED_BYTES = max(WORKED_BYTES.values())
# WebP: Pillow decodes through libwebp's animation decoder, which allocates two
# RGBA canvases when the file is opened, plus the frame copy and Pillow's image:
# measured 16.3 bytes/pixel (18.3 with nothing reduced early), plus 10 %.
WEBP_DECODED_BYTES = 18.0
WEBP_WORKED_BYTES = 20.2
# Only the first frame is used; the count is checked so a header claiming a
# huge animation is refused before the demuxer walks it.
MAX_FRAMES = 1000
MIN_SIDE = 64
# Pillow refuses (DecompressionBombError) at 2x this while opening, and warns
# at 1x; our own header check refuses at 1x first.
Image.MAX_IMAGE_PIXELS = MAX_PIXELS
# ImageFile.LOAD_TRUNCATED_IMAGES must stay False (the default): a truncated
# file must be refused, never written out half grey.

VARIANT_SIZES = (("large", 512), ("medium", 256), ("small", 128), ("thumbnail", 64))
LARGEST = VARIANT_SIZES[0][1]
JPEG_OPTIONS = {"quality": 85, "progressive": True, "optimize": True}
MIME_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
# EXIF orientation -> the transpose that makes the picture upright (as ImageOps.exif_transpose).
ORIENTATION_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# What Pillow's parsers and decoders raise on bad data (a hostile header can reach
# struct, index and arithmetic errors inside the plugins).
DECODE_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, IndexError,
                 KeyError, TypeError, ZeroDivisionError, struct.error)


@dataclass
class Rendered:
    format: str
    mime_type: str
    file_size: int
    width: int                # after EXIF rotation, full resolution
    height: int
    sha256: str
    crop_box: tuple[int, int, int, int]   # in upright full-resolution pixels
    crop_method: str
    variants: dict[str, bytes]            # size name -> JPEG bytes, largest first
    blurhash: str
    dominant_color: str
    timings_ms: dict[str, float]
    notes: dict = field(default_factory=dict)


def sniff_format(data: bytes) -> str:
    if data[:3] == b"\xff\xd8\xff":
        return "JPEG"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "PNG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        raise ImageRejected(UNSUPPORTED_FORMAT, "GIF is not accepted; use JPEG, PNG or WebP")
    raise ImageRejected(UNSUPPORTED_FORMAT, "not a JPEG, PNG or WebP file (magic bytes)")


def webp_canvas_size(data: bytes) -> tuple[int, int]:
    """Canvas size from the first WebP chunk, read before libwebp allocates the canvas."""
    chunk = data[12:16]
    if chunk == b"VP8X" and len(data) >= 30:
        return 1 + int.from_bytes(data[24:27], "little"), 1 + int.from_bytes(data[27:30], "little")
    if chunk == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":
        return int.from_bytes(data[26:28], "little") & 0x3FFF, int.from_bytes(data[28:30], "little") & 0x3FFF
    if chunk == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    raise ImageRejected(CORRUPT, "WebP header is not VP8, VP8L or VP8X")


def decode_cost(fmt: str, mode: str, width: int, height: int) -> int:
    """Estimated peak bytes of rendering a ``mode`` image decoded at ``width`` x ``height``."""
    pixels = width * height
    factor = max(1, min(width, height) // LARGEST)  # shrink_early's reduction
    if fmt == "WEBP":
        decoded, worked = WEBP_DECODED_BYTES, WEBP_WORKED_BYTES
    else:
        decoded, worked = DECODED_BYTES.get(mode, 4), WORKED_BYTES.get(mode, WORST_WORKED_BYTES)
    return round(pixels * decoded + pixels / factor ** 2 * (worked - decoded))


def check_decode_memory(fmt: str, mode: str, width: int, height: int) -> None:
    """Refuse, from the header, a file whose render would exceed DECODE_BUDGET_BYTES."""
    cost = decode_cost(fmt, mode, width, height)
    if cost > DECODE_BUDGET_BYTES:
        raise ImageRejected(TOO_MANY_PIXELS, f"{width}x{height} {fmt} {mode} needs about {cost / 1e6:.0f} MB "
                                             f"to render; the limit is {DECODE_BUDGET_BYTES / 1e6:.0f} MB")


def check_dimensions(width: int, height: int) -> None:
    if width * height > MAX_PIXELS:
        raise ImageRejected(TOO_MANY_PIXELS,
                            f"{width}x{height} is {width * height:,} pixels; the limit is {MAX_PIXELS:,}")
    if min(width, height) < MIN_SIDE:
        raise ImageRejected(TOO_SMALL, f"{width}x{height}: the short side must be at least {MIN_SIDE} px")


@lru_cache(maxsize=1)
def _srgb() -> ImageCms.ImageCmsProfile:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


@lru_cache(maxsize=32)
def _transform_to_srgb(icc: bytes, mode: str) -> tuple[ImageCms.ImageCmsTransform, str]:
    source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
    name = (ImageCms.getProfileDescription(source) or "").strip()[:80]
    transform = ImageCms.buildTransform(source, _srgb(), mode, "RGB", ImageCms.Intent.RELATIVE_COLORIMETRIC)
    return transform, name


def to_srgb(image: Image.Image, notes: dict) -> Image.Image:
    """An RGB image in sRGB with alpha flattened onto white."""
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        # 16-bit grey: Pillow's convert("L") clips at 255 instead of scaling.
        if image.mode != "I;16":
            image = image.convert("I")
        image = image.point(lambda v: v * (1 / 257)).convert("L")
        notes["depth"] = 16
    alpha = None
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        # Every full-size copy counts against DECODE_BUDGET_BYTES: no copy of a
        # copy, and the flattening below works in place on a buffer of our own.
        rgba = image if image.mode == "RGBA" else image.convert("RGBA")
        alpha = rgba.getchannel("A")
        if alpha.getextrema() == (255, 255):
            alpha = None
        image = rgba.convert("RGB") if image.mode not in ("L", "LA", "La") else image.convert("L")
        del rgba
    elif image.mode not in ("RGB", "L", "CMYK"):
        image = image.convert("RGB")
    icc = image.info.get("icc_profile")
    converted = None
    if icc:
        try:
            transform, name = _transform_to_srgb(icc, image.mode)
            converted = transform.apply(image)
            notes["icc"] = name or "embedded"
        except (ImageCms.PyCMSError, OSError, ValueError, TypeError) as exc:
            # A broken or mismatched profile is not worth refusing a photo over.
            notes["icc_ignored"] = str(exc)[:120]
    if converted is not None:
        rgb = converted
    else:
        rgb = image if image.mode == "RGB" else image.convert("RGB")
    if image.mode == "CMYK":
        notes["cmyk"] = True
    if alpha is not None:
        # rgb is a new buffer here (converted from the alpha image): white goes in
        # where alpha is low, i.e. rgb * a + white * (1 - a), with no second canvas.
        rgb.paste((255, 255, 255), mask=ImageChops.invert(alpha))
        notes["alpha_flattened"] = True
    return rgb


# Modes Image.reduce() accepts (it premultiplies alpha, so no dark fringes).
REDUCIBLE_MODES = ("L", "LA", "RGB", "RGBA", "RGBX", "CMYK", "I", "F")
# Rows reduced at a time: a strip's copies (crop, mode conversion, premultiplied
# alpha) stay a few MB while the full decode is the only full-size buffer.
STRIP_ROWS = 64


def _reducible(strip: Image.Image) -> Image.Image:
    if strip.mode == "P":
        return strip.convert("RGBA" if "transparency" in strip.info else "RGB")
    if strip.mode == "1":
        return strip.convert("L")
    if strip.mode.startswith("I;16"):
        return strip.convert("I")
    return strip


def shrink_early(image: Image.Image) -> Image.Image:
    """Box-reduce a fully decoded source by an integer factor right after decoding.

    PNG and WebP cannot be decoded at reduced scale, so this is their DCT
    scaling: everything after it (colour, crop, resize) works on the small copy,
    and the full-size buffer is released, so a job's peak is one decode.
    The factor keeps the short side at or above 512 px. The reduction runs in
    strips of rows: Image.reduce() on RGBA/LA (and the conversion a P, 1 or
    16-bit source needs first) would otherwise make a second full-size copy.
    """
    factor = min(image.size) // LARGEST
    if factor < 2:
        return image
    if _reducible(image.crop((0, 0, 1, 1))).mode not in REDUCIBLE_MODES:
        return image
    rows = max(factor, STRIP_ROWS // factor * factor)  # a multiple of factor: strips reduce like the whole
    reduced = None
    for top in range(0, image.height, rows):
        strip = _reducible(image.crop((0, top, image.width, min(image.height, top + rows)))).reduce(factor)
        if reduced is None:
            reduced = Image.new(strip.mode, (-(-image.width // factor), -(-image.height // factor)))
        reduced.paste(strip, (0, top // factor))
    reduced.info = image.info  # keeps icc_profile for the colour conversion
    return reduced


def _orientation(image: Image.Image, notes: dict) -> int:
    try:
        with warnings.catch_warnings():  # corrupt EXIF warns per tag; the orientation is all we read
            warnings.simplefilter("ignore")
            value = image.getexif().get(0x0112, 1)
    except MemoryError:
        raise
    except Exception as exc:  # hostile EXIF must not sink an otherwise good photo
        notes["exif_ignored"] = str(exc)[:120]
        return 1
    return value if value in ORIENTATION_TRANSPOSE else 1


def dominant_color(image: Image.Image) -> str:
    small = image.resize((32, 32), Image.BILINEAR)
    quantised = small.quantize(colors=6, method=Image.Quantize.MEDIANCUT)
    count, index = max(quantised.getcolors())
    palette = quantised.getpalette()
    r, g, b = palette[index * 3:index * 3 + 3]
    return f"#{r:02x}{g:02x}{b:02x}"


def encode_jpeg(image: Image.Image) -> bytes:
    image.info = {}  # resize copies info (exif, icc_profile, xmp...): nothing may reach the output
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", **JPEG_OPTIONS)
    return buffer.getvalue()


BLURHASH_SIDE = 16  # the thumbnail shrunk to 16x16: a placeholder needs no more, and it keeps the cost < 2 ms


def blurhash_of(image: Image.Image) -> str:
    """BlurHash (4x3 components) of ``image``, by the ``blurhash`` package.

    Measured against the hand-written encoder this replaces, same input, same
    run: 1.30 ms vs 0.40 ms on the 64 px thumbnail, 1.97 ms vs 1.04 ms from the
    512 px variant (1.9x, under the 3x that would justify keeping our own).
    """
    small = image.convert("RGB").resize((BLURHASH_SIDE, BLURHASH_SIDE), Image.BILINEAR)
    raw, stride = small.tobytes(), BLURHASH_SIDE * 3
    rows = [[raw[i:i + 3] for i in range(y * stride, (y + 1) * stride, 3)] for y in range(BLURHASH_SIDE)]
    return blurhash_encode(rows, 4, 3)


def check_size(n_bytes: int) -> None:
    """The upload size rule, for the file before it is read and the bytes after."""
    if n_bytes == 0:
        raise ImageRejected(EMPTY_FILE, "the upload is empty")
    if n_bytes > MAX_FILE_BYTES:
        raise ImageRejected(TOO_LARGE, f"{n_bytes:,} bytes or more; the limit is {MAX_FILE_BYTES:,}")


def render(data: bytes) -> Rendered:
    """Validate and process one upload. Raises ImageRejected with a stable code."""
    try:
        return _render(data)
    except MemoryError:
        # Any allocation, not only the decode's: colour conversion and resizing of a
        # large source allocate too. The budget makes this rare; it is not a bug.
        raise ImageRejected(OUT_OF_MEMORY, "the decoder could not allocate memory") from None


def _render(data: bytes) -> Rendered:
    started = time.perf_counter()
    check_size(len(data))
    fmt = sniff_format(data)
    if fmt == "WEBP":
        # Before Image.open: libwebp allocates its canvases when the file is opened.
        check_dimensions(*webp_canvas_size(data))
        check_decode_memory(fmt, "RGBA", *webp_canvas_size(data))
    notes: dict = {}
    try:
        with warnings.catch_warnings():
            # Between 1x and 2x MAX_IMAGE_PIXELS Pillow only warns (check_dimensions refuses
            # it next), and corrupt EXIF warns once per tag: keep both out of the worker log.
            warnings.simplefilter("ignore")
            image = Image.open(io.BytesIO(data), formats=[fmt])
        width, height = image.size
        check_dimensions(width, height)
        frames = getattr(image, "n_frames", 1)
        if frames > MAX_FRAMES:
            raise ImageRejected(TOO_MANY_FRAMES, f"{frames} frames; the limit is {MAX_FRAMES}")
        if frames > 1:
            notes["frames"] = frames  # the first frame is used
        if fmt == "JPEG":
            image.draft(None, (LARGEST, LARGEST))
        check_decode_memory(fmt, image.mode, *image.size)  # the size and mode decoded (after draft)
        image.load()
        # After load(): a PNG's getexif() decodes the whole image to find an eXIf chunk,
        # which inside _orientation's blanket except would swallow a soft time limit.
        orientation = _orientation(image, notes)
    except ImageRejected:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageRejected(TOO_MANY_PIXELS, str(exc)[:200]) from None
    except DECODE_ERRORS as exc:
        raise ImageRejected(CORRUPT, f"cannot decode {fmt}: {str(exc)[:200]}") from None
    image = shrink_early(image)
    scale = width / image.width
    decoded = time.perf_counter()

    try:
        rgb = to_srgb(image, notes)
    except DECODE_ERRORS as exc:
        raise ImageRejected(CORRUPT, f"cannot convert colours: {str(exc)[:200]}") from None
    if orientation != 1:
        rgb = rgb.transpose(ORIENTATION_TRANSPOSE[orientation])
        notes["orientation"] = orientation
    upright_w, upright_h = (height, width) if orientation in (5, 6, 7, 8) else (width, height)
    coloured = time.perf_counter()

    box, method = saliency.attention_box(rgb)
    cropped = time.perf_counter()

    # One resampling from the decoded pixels: the decode is already within 2x
    # of 512 (DCT scaling), where bicubic is as sharp as Lanczos and 2x cheaper;
    # reducing_gap box-reduces big PNG/WebP sources first.
    large = rgb.resize((LARGEST, LARGEST), Image.BICUBIC, box=box, reducing_gap=2.0)
    images = {"large": large}
    previous = large
    for name, size in VARIANT_SIZES[1:]:
        # Each size is exactly half the previous: a 2x2 box average (what libvips'
        # shrink does for integer factors) is clean here and ~30x cheaper than Lanczos.
        previous = previous.reduce(previous.width // size)
        images[name] = previous
    resized = time.perf_counter()

    variants = {name: encode_jpeg(img) for name, img in images.items()}
    encoded = time.perf_counter()

    full_box = tuple(min(limit, round(v * scale)) for v, limit in zip(box, (upright_w, upright_h) * 2))
    result = Rendered(
        format=fmt, mime_type=MIME_TYPES[fmt], file_size=len(data), width=upright_w, height=upright_h,
        sha256=hashlib.sha256(data).hexdigest(), crop_box=full_box, crop_method=method,
        variants=variants, blurhash=blurhash_of(images["thumbnail"]),
        dominant_color=dominant_color(images["thumbnail"]), timings_ms={}, notes=notes)
    if scale != 1:
        notes["decode_scale"] = round(scale, 3)
    finished = time.perf_counter()
    result.timings_ms = {
        "decode": round((decoded - started) * 1000, 2), "colour": round((coloured - decoded) * 1000, 2),
        "crop": round((cropped - coloured) * 1000, 2), "resize": round((resized - cropped) * 1000, 2),
        "encode": round((encoded - resized) * 1000, 2), "total": round((finished - started) * 1000, 2),
    }
    return result
