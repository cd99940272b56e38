"""render(): every corpus file gets correct variants or the correct error_code."""
from __future__ import annotations

import io
import tracemalloc

import pytest
from PIL import Image, ImageDraw

from tasks.images import pipeline, saliency
from tasks.images.errors import ALL_CODES, ImageRejected
from tests.images import corpus

SIZES = {"large": 512, "medium": 256, "small": 128, "thumbnail": 64}


def render_or_code(data: bytes):
    try:
        return pipeline.render(data), None
    except ImageRejected as exc:
        return None, exc.code


def open_variant(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data), formats=["JPEG"])
    image.load()
    return image


def close(a, b, tolerance):
    return all(abs(x - y) <= tolerance for x, y in zip(a, b))


@pytest.mark.parametrize("name", sorted(corpus.CORPUS))
def test_each_corpus_file_gets_variants_or_its_error_code(name):
    factory, expected_code = corpus.CORPUS[name]
    rendered, code = render_or_code(factory())
    assert code == expected_code
    if expected_code is not None:
        return
    assert list(rendered.variants) == list(SIZES)
    for size_name, data in rendered.variants.items():
        image = open_variant(data)
        assert image.format == "JPEG" and image.mode == "RGB"
        assert image.size == (SIZES[size_name], SIZES[size_name])
        assert image.info.get("progressive") or image.info.get("progression")
        # No metadata of any kind: no EXIF, no ICC, no XMP, no comment.
        assert "exif" not in image.info and "icc_profile" not in image.info and "xmp" not in image.info
        assert b"Exif\0\0" not in data and b"ICC_PROFILE" not in data and b"http://ns.adobe.com" not in data
    assert len(rendered.sha256) == 64 and len(rendered.blurhash) == 28
    assert rendered.dominant_color.startswith("#") and len(rendered.dominant_color) == 7
    left, top, right, bottom = rendered.crop_box
    assert right - left == bottom - top == min(rendered.width, rendered.height)
    assert 0 <= left and 0 <= top and right <= rendered.width and bottom <= rendered.height


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_comes_out_upright(orientation):
    rendered = pipeline.render(corpus.oriented_jpeg(orientation))
    assert (rendered.width, rendered.height) == (320, 240)
    large = open_variant(rendered.variants["large"])
    samples = {"tl": (128, 128), "tr": (384, 128), "bl": (128, 384), "br": (384, 384)}
    for quadrant, point in samples.items():
        assert close(large.getpixel(point), corpus.QUADRANT_COLOURS[quadrant], 24), (quadrant, large.getpixel(point))


@pytest.mark.parametrize("profile, colour", [("Display P3", (200, 80, 60)), ("Adobe RGB (1998)", (100, 150, 120))])
def test_wide_gamut_colour_is_converted_to_srgb(profile, colour):
    rendered = pipeline.render(corpus.icc_jpeg(profile, colour))
    assert rendered.notes["icc"] == profile
    got = open_variant(rendered.variants["large"]).getpixel((256, 256))
    expected = corpus.expected_srgb(profile, colour)
    assert close(got, expected, 4), (got, expected)
    # and it is not the unconverted value (the test can fail if ICC is ignored)
    assert max(abs(a - b) for a, b in zip(got, colour)) > 10


def test_cmyk_jpeg_becomes_rgb():
    rendered = pipeline.render(corpus.cmyk_jpeg())
    assert rendered.notes.get("cmyk")
    assert close(open_variant(rendered.variants["medium"]).getpixel((128, 128)), (0, 255, 255), 12)


def test_gps_exif_never_reaches_the_output():
    data = corpus.gps_jpeg()
    assert Image.open(io.BytesIO(data)).getexif().get_ifd(0x8825)  # the source really has GPS
    rendered = pipeline.render(data)
    for variant in rendered.variants.values():
        image = open_variant(variant)
        assert not image.getexif()
        assert b"PhoneMaker" not in variant and b"Exif" not in variant


def test_alpha_is_flattened_on_white():
    large = open_variant(pipeline.render(corpus.alpha_png()).variants["large"])
    assert close(large.getpixel((5, 5)), (255, 255, 255), 3)
    assert close(large.getpixel((256, 256)), (200, 20, 20), 12)


@pytest.mark.parametrize("transparent, corner", [(True, (255, 255, 255)), (False, (0, 0, 0))])
def test_palette_png_with_and_without_transparency(transparent, corner):
    large = open_variant(pipeline.render(corpus.palette_png(transparent)).variants["large"])
    assert close(large.getpixel((5, 5)), corner, 3)
    assert close(large.getpixel((256, 256)), (20, 120, 220), 12)


def test_16_bit_png_is_scaled_not_clipped():
    large = open_variant(pipeline.render(corpus.png16()).variants["large"])
    assert close(large.getpixel((256, 256)), (128, 128, 128), 3)  # Pillow's convert("L") would give 255


@pytest.mark.parametrize("fmt", ["WEBP", "PNG"])
def test_animations_use_their_first_frame(fmt):
    rendered = pipeline.render(corpus.animated(fmt))
    assert rendered.notes["frames"] == 3
    assert close(open_variant(rendered.variants["large"]).getpixel((256, 256)), (220, 20, 20), 12)


def test_small_sources_are_upscaled_and_large_jpegs_decode_at_reduced_scale():
    small = pipeline.render(corpus.solid_png(100, 64))
    assert open_variant(small.variants["large"]).size == (512, 512)
    big = pipeline.render(corpus.photo_jpeg(2400, 1800))
    assert big.notes["decode_scale"] == 2.0  # DCT scaling: 1200x900 decoded, not 2400x1800
    assert (big.width, big.height) == (2400, 1800)
    assert big.crop_box[2] - big.crop_box[0] == 1800


def test_pixel_bomb_is_refused_before_any_large_allocation():
    for data in (corpus.png_bomb(), corpus.webp_bomb(), corpus.png_bomb(8000, 6000)):
        tracemalloc.start()
        try:
            _, code = render_or_code(data)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert code == "too_many_pixels"
        assert peak < 2_000_000


def test_attention_crop_follows_the_interesting_part_and_falls_back_to_centre():
    image = Image.new("RGB", (900, 300), (128, 128, 128))
    draw = ImageDraw.Draw(image)
    for i in range(0, 200, 10):  # a busy, colourful patch on the right
        draw.rectangle((650 + i // 2, 40 + i, 880 - i // 2, 50 + i), fill=(250, 40 + i, 30))
    box, method = saliency.attention_box(image)
    assert method == "attention" and box[0] >= 450 and box[2] - box[0] == 300
    flat_box, flat_method = saliency.attention_box(Image.new("RGB", (900, 300), (90, 90, 90)))
    assert flat_method == "centre" and flat_box == (300, 0, 600, 300)
    portrait = image.transpose(Image.Transpose.ROTATE_90)  # patch now at the top
    box, method = saliency.attention_box(portrait)
    assert method == "attention" and box[1] <= 150 and box[3] - box[1] == 300


def test_blurhash_is_the_packages_encoding_of_the_thumbnail():
    import blurhash as package

    photo = corpus.photo_jpeg(800, 600)
    rendered = pipeline.render(photo)
    thumbnail = Image.open(io.BytesIO(rendered.variants["thumbnail"]))
    # Decoding the hash gives back the photo's broad colour: compare with the thumbnail's mean.
    decoded = package.decode(rendered.blurhash, 4, 4)
    mean_decoded = [sum(px[c] for row in decoded for px in row) / 16 for c in range(3)]
    mean_thumb = thumbnail.convert("RGB").resize((1, 1), Image.BOX).getpixel((0, 0))
    assert all(abs(a - b) < 40 for a, b in zip(mean_decoded, mean_thumb)), (mean_decoded, mean_thumb)
    assert len(rendered.blurhash) == 28  # 4x3 components
    assert pipeline.render(photo).blurhash == rendered.blurhash  # same upload, same placeholder


def test_dominant_colour_of_a_mostly_red_picture_is_red():
    image = Image.new("RGB", (64, 64), (210, 30, 40))
    ImageDraw.Draw(image).rectangle((0, 0, 15, 15), fill=(20, 200, 20))
    r, g, b = (int(pipeline.dominant_color(image)[i:i + 2], 16) for i in (1, 3, 5))
    assert r > 180 and g < 80 and b < 80


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "P"])
def test_large_png_sources_are_reduced_right_after_decoding(mode):
    image = corpus.photo_like(2200, 1100, sigma=4)
    if mode == "RGBA":
        image.putalpha(255)
    elif mode == "P":
        image = image.convert("P")
    rendered = pipeline.render(corpus.save(image, "PNG"))
    assert rendered.notes["decode_scale"] == 2.0  # 1100 // 512 = 2: colour and crop ran on 1100x550
    assert (rendered.width, rendered.height) == (2200, 1100)
    assert rendered.crop_box[3] - rendered.crop_box[1] == 1100


def test_reducing_keeps_the_icc_profile_for_conversion():
    image = Image.new("RGB", (1100, 1100), (200, 80, 60))
    rendered = pipeline.render(corpus.save(image, "PNG", icc_profile=corpus.rgb_icc_profile("Display P3")))
    assert rendered.notes["icc"] == "Display P3" and rendered.notes["decode_scale"] == 2.0
    got = open_variant(rendered.variants["large"]).getpixel((256, 256))
    assert close(got, corpus.expected_srgb("Display P3", (200, 80, 60)), 4)


def test_mutated_files_are_either_processed_or_rejected_with_a_code():
    """A small seeded fuzz: flipped bytes and cuts in valid JPEG, PNG, WebP and APNG
    files never escape as anything but ImageRejected (a 1,500-case run found none)."""
    import random

    seeds = [corpus.photo_jpeg(160, 120), corpus.alpha_png(), corpus.animated("WEBP"), corpus.gps_jpeg(),
             corpus.icc_jpeg("Display P3", (200, 80, 60)), corpus.animated("PNG"), corpus.palette_png(True)]
    rng = random.Random(20261125)
    outcomes = set()
    for _ in range(150):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.choice((1, 2, 4, 8, 16))):
            data[rng.randrange(min(len(data), rng.choice((64, 512, len(data)))))] = rng.randrange(256)
        if rng.random() < 0.2:
            data = data[:rng.randrange(len(data))]
        rendered, code = render_or_code(bytes(data))
        outcomes.add(code)
        assert code is None or code in ALL_CODES
    assert {None, "corrupt", "unsupported_format"} <= outcomes


@pytest.mark.parametrize("profile", ["cmyk", "p3"])
def test_libvips_tagged_cmyk_and_p3_jpegs_round_trip_to_the_original_srgb(profile):
    """libvips' built-in CMYK (a real press profile) and Display P3 profiles, as a
    second, independent source of tagged files: sRGB -> profile -> our pipeline -> sRGB."""
    pyvips = pytest.importorskip("pyvips")
    colour = (200, 80, 60)
    source = pyvips.Image.black(300, 300, bands=3).new_from_image(list(colour)).copy(interpretation="srgb")
    data = source.cast("uchar").icc_export(output_profile=profile, intent="relative").jpegsave_buffer(Q=95)
    tagged = Image.open(io.BytesIO(data))
    assert tagged.mode == ("CMYK" if profile == "cmyk" else "RGB") and tagged.info.get("icc_profile")
    got = open_variant(pipeline.render(data).variants["large"]).getpixel((256, 256))
    assert close(got, colour, 6), got
    assert not close(tagged.convert("RGB").getpixel((150, 150)), colour, 6)  # ignoring the profile is wrong


def many_frames(fmt: str, count: int) -> bytes:
    # Distinct frames: Pillow's APNG writer and libwebp merge identical (or, lossy, similar) ones.
    frames = [Image.new("RGB", (64, 64), (i * 37 % 256, i * 91 % 256, i // 4)) for i in range(count)]
    return corpus.save(frames[0], fmt, save_all=True, append_images=frames[1:], duration=20, loop=0,
                       **({"lossless": True} if fmt == "WEBP" else {}))


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_an_animation_over_the_frame_cap_is_too_many_frames(fmt):
    at_cap, over = many_frames(fmt, pipeline.MAX_FRAMES), many_frames(fmt, pipeline.MAX_FRAMES + 1)
    assert Image.open(io.BytesIO(over)).n_frames == pipeline.MAX_FRAMES + 1  # the file really has them
    assert render_or_code(over)[1] == "too_many_frames"
    rendered, code = render_or_code(at_cap)
    assert code is None and rendered.notes["frames"] == pipeline.MAX_FRAMES
