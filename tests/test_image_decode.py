"""Safe decoding: limits, refusals, colour modes, animation and the canonical reduced path."""

from __future__ import annotations

import io
import random
import struct
import time
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile, features

from models.errors import CorruptMedia, MediaTooLarge, SignalError, UnsupportedFormat
from models.image_decode import (
    _MAX_CHUNKS,
    _MAX_JPEG_FILL,
    DecodedImage,
    ImageLimits,
    _count_gif_frames,
    decode_frames,
    decode_image,
    fit_size,
    sniff_format,
)
from models.image_hash import PDQ_MIN_QUALITY, hash_image
from tests.images import photo

LIMITS = ImageLimits()


def encode(img: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


def png_chunk(tag: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(tag + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + tag + payload + struct.pack(">I", crc)


def patch_png_size(data: bytes, width: int, height: int) -> bytes:
    """Rewrite IHDR's width/height (and its CRC) of a valid PNG, leaving the pixels alone."""
    assert data[12:16] == b"IHDR"
    ihdr = struct.pack(">II", width, height) + data[24:29]
    return data[:8] + png_chunk(b"IHDR", ihdr) + data[33:]


def bilevel_png(width: int, height: int) -> bytes:
    """A real, all-black 1-bit PNG: a few KB of zlib that inflate to width*height pixels."""
    row = b"\x00" * (1 + (width + 7) // 8)
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )


def animated(fmt: str, colours: list[tuple[int, int, int]], size: int = 32) -> bytes:
    frames = [Image.new("RGB", (size, size), c) for c in colours]
    return encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)


def rgb_at(decoded: DecodedImage, xy: tuple[int, int] = (0, 0)) -> tuple[int, int, int]:
    px = decoded.image.getpixel(xy)
    assert isinstance(px, tuple)
    return (int(px[0]), int(px[1]), int(px[2]))


# --- the canonical reduced path ---------------------------------------------------------


def test_jpeg_is_draft_decoded_and_reduced_to_target() -> None:
    data = encode(photo(size=(1280, 720)), "JPEG", quality=90)
    out = decode_image(data, LIMITS)
    assert out.image.mode == "RGB"
    assert out.image.size == (512, 288)
    assert (out.format, out.width, out.height, out.frames) == ("JPEG", 1280, 720, 1)


def test_png_and_jpeg_reach_the_same_size() -> None:
    img = photo(size=(1001, 667))
    a = decode_image(encode(img, "JPEG", quality=90), LIMITS)
    b = decode_image(encode(img, "PNG"), LIMITS)
    assert a.image.size == b.image.size == fit_size(1001, 667, 512)
    diff = np.abs(np.asarray(a.image, np.int16) - np.asarray(b.image, np.int16))
    assert diff.mean() < 4


def test_target_side_none_returns_full_decode() -> None:
    out = decode_image(encode(photo(size=(1280, 720)), "PNG"), LIMITS, target_side=None)
    assert out.image.size == (1280, 720)
    assert out.image.mode == "RGB"


def test_small_images_are_not_upscaled() -> None:
    out = decode_image(encode(photo(size=(300, 200)), "PNG"), LIMITS)
    assert out.image.size == (300, 200)


def test_fit_size() -> None:
    assert fit_size(1280, 720, 512) == (512, 288)
    assert fit_size(720, 1280, 512) == (288, 512)
    assert fit_size(100, 50, 512) == (100, 50)
    assert fit_size(20_000, 1, 512) == (512, 1)


def test_target_side_must_be_positive() -> None:
    with pytest.raises(ValueError):
        decode_image(encode(photo(size=(8, 8)), "PNG"), LIMITS, target_side=0)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "BMP", "WEBP"])
def test_one_pixel_images(fmt: str) -> None:
    out = decode_image(encode(Image.new("RGB", (1, 1), (200, 30, 30)), fmt), LIMITS)
    assert out.image.size == (1, 1)
    assert out.image.mode == "RGB"
    assert (out.width, out.height, out.frames) == (1, 1, 1)


def test_exif_orientation_is_applied() -> None:
    upright = photo(size=(400, 300))
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # what a sideways camera writes
    exif = Image.Exif()
    exif[0x0112] = 6
    out = decode_image(encode(stored, "JPEG", quality=95, exif=exif.tobytes()), LIMITS)
    assert (out.width, out.height) == (400, 300)
    assert out.image.size == (400, 300)
    diff = np.abs(np.asarray(out.image, np.int16) - np.asarray(upright, np.int16))
    assert diff.mean() < 4


def test_all_orientations_come_out_upright() -> None:
    upright = photo(size=(64, 48))
    # stored image for each orientation = inverse of the transpose that displays it
    inverse = {
        2: Image.Transpose.FLIP_LEFT_RIGHT,
        3: Image.Transpose.ROTATE_180,
        4: Image.Transpose.FLIP_TOP_BOTTOM,
        5: Image.Transpose.TRANSPOSE,
        6: Image.Transpose.ROTATE_90,
        7: Image.Transpose.TRANSVERSE,
        8: Image.Transpose.ROTATE_270,
    }
    for orientation, op in inverse.items():
        exif = Image.Exif()
        exif[0x0112] = orientation
        out = decode_image(encode(upright.transpose(op), "PNG", exif=exif.tobytes()), LIMITS)
        assert np.array_equal(np.asarray(out.image), np.asarray(upright)), orientation
        assert (out.width, out.height) == (64, 48)


def test_malformed_exif_is_ignored() -> None:
    data = encode(photo(size=(40, 30)), "JPEG", exif=b"Exif\x00\x00garbage-not-tiff")
    assert decode_image(data, LIMITS).image.size == (40, 30)


# --- colour modes -----------------------------------------------------------------------


def test_cmyk_jpeg_decodes_to_rgb() -> None:
    img = photo(size=(160, 120))
    out = decode_image(encode(img.convert("CMYK"), "JPEG", quality=95), LIMITS)
    assert out.image.mode == "RGB"
    diff = np.abs(np.asarray(out.image, np.int16) - np.asarray(img, np.int16))
    assert diff.mean() < 6


def test_16bit_greyscale_is_scaled_not_clipped() -> None:
    grey = np.arange(256, dtype=np.uint16).reshape(16, 16)
    img16 = Image.fromarray(grey * 257)
    assert img16.mode.startswith("I")
    out = decode_image(encode(img16, "PNG"), LIMITS, target_side=None)
    arr = np.asarray(out.image)
    assert out.image.mode == "RGB"
    assert np.array_equal(arr[..., 0], grey.astype(np.uint8))
    assert np.array_equal(arr[..., 0], arr[..., 2])


def test_greyscale_becomes_rgb() -> None:
    out = decode_image(encode(Image.new("L", (10, 10), 77), "JPEG"), LIMITS)
    assert out.image.mode == "RGB"
    assert abs(rgb_at(out)[0] - 77) <= 2


def test_palette_transparency_is_composited_on_white() -> None:
    img = Image.new("P", (8, 8), 0)
    img.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)
    img.paste(1, (4, 0, 8, 8))
    for fmt in ("PNG", "GIF"):
        out = decode_image(encode(img, fmt, transparency=0), LIMITS)
        assert rgb_at(out, (0, 0)) == (255, 255, 255), fmt
        assert rgb_at(out, (6, 0)) == (0, 0, 255), fmt


def test_palette_without_transparency() -> None:
    img = Image.new("RGB", (8, 8), (10, 200, 10)).convert("P", palette=Image.Palette.ADAPTIVE)
    out = decode_image(encode(img, "PNG"), LIMITS)
    assert rgb_at(out) == (10, 200, 10)


def test_la_and_rgba_are_composited_on_white() -> None:
    la = Image.new("LA", (4, 4), (0, 0))
    la.putpixel((1, 1), (100, 255))
    out = decode_image(encode(la, "PNG"), LIMITS)
    assert rgb_at(out, (0, 0)) == (255, 255, 255)
    assert rgb_at(out, (1, 1)) == (100, 100, 100)

    rgba = Image.new("RGBA", (4, 4), (0, 0, 0, 128))
    r, g, b = rgb_at(decode_image(encode(rgba, "PNG"), LIMITS))
    assert 120 <= r <= 135 and r == g == b


# --- animation --------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "PNG"])
def test_animated_counts_frames_and_uses_the_first(fmt: str) -> None:
    data = animated(fmt, [(255, 0, 0), (0, 255, 0), (0, 0, 255)])
    out = decode_image(data, LIMITS)
    assert out.frames == 3
    r, g, b = rgb_at(out, (16, 16))
    assert r > 200 and g < 50 and b < 50


@pytest.mark.parametrize("fmt", ["GIF", "WEBP"])
def test_frame_count_stops_at_the_limit(fmt: str) -> None:
    colours = [(i * 12, 255 - i * 12, 0) for i in range(20)]
    assert decode_image(animated(fmt, colours), LIMITS).frames == 16
    assert decode_image(animated(fmt, colours), ImageLimits(max_frames=4)).frames == 4


def test_gif_frame_walker_agrees_with_pillow() -> None:
    for n in (1, 2, 5, 9):
        colours = [(i * 25, 0, 255 - i * 25) for i in range(n)]
        data = animated("GIF", colours, size=10 + n)
        with Image.open(io.BytesIO(data)) as im:
            assert _count_gif_frames(data, 100) == getattr(im, "n_frames", 1) == n


def test_gif_truncated_after_first_frame_still_decodes() -> None:
    data = animated("GIF", [(255, 0, 0), (0, 255, 0), (0, 0, 255)])
    second = data.index(b"\x21\xf9\x04", data.index(b"\x21\xf9\x04") + 1)  # 2nd frame's GCE
    out = decode_image(data[: second + 12], LIMITS)
    assert out.frames >= 1
    assert rgb_at(out)[0] > 200


# --- refusals ---------------------------------------------------------------------------


def test_signal_errors_are_value_errors() -> None:
    for cls in (MediaTooLarge, UnsupportedFormat, CorruptMedia):
        assert issubclass(cls, SignalError)
        assert issubclass(cls, ValueError)


def test_empty_bytes() -> None:
    with pytest.raises(CorruptMedia, match="empty"):
        decode_image(b"", LIMITS)


def test_random_bytes() -> None:
    data = random.Random(7).randbytes(4096)
    with pytest.raises(UnsupportedFormat, match="unrecognised image format"):
        decode_image(data, LIMITS)


@pytest.mark.timeout(20)
@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "WEBP", "BMP"])
@pytest.mark.parametrize("keep", [0.1, 0.5, 0.9])
def test_truncated_files_are_corrupt(fmt: str, keep: float) -> None:
    data = encode(photo(size=(200, 150)), fmt)
    with pytest.raises(CorruptMedia):
        decode_image(data[: int(len(data) * keep)], LIMITS)


def test_truncated_header_is_corrupt_not_unsupported() -> None:
    with pytest.raises(CorruptMedia):
        decode_image(b"\x89PNG\r\n\x1a\n\x00\x00", LIMITS)


def test_load_truncated_images_is_not_enabled() -> None:
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_header_claiming_30000_square_is_refused_before_decoding() -> None:
    data = patch_png_size(encode(Image.new("RGB", (16, 16), (9, 9, 9)), "PNG"), 30000, 30000)
    with pytest.raises(MediaTooLarge, match="pixels"):
        decode_image(data, LIMITS)


def test_header_over_our_pixel_limit_names_the_numbers() -> None:
    # 48 Mpx: under Pillow's own bomb threshold, so only our check stands in the way
    data = patch_png_size(encode(Image.new("RGB", (16, 16)), "PNG"), 8000, 6000)
    with pytest.raises(MediaTooLarge) as exc:
        decode_image(data, LIMITS)
    assert str(exc.value) == "image is 8000x6000 = 48000000 pixels, over the limit of 40000000"


def test_header_over_max_side_is_refused() -> None:
    data = patch_png_size(encode(Image.new("RGB", (16, 16)), "PNG"), 20_001, 10)
    with pytest.raises(MediaTooLarge, match="over the limit of 20000"):
        decode_image(data, LIMITS)


def test_zero_size_header_is_corrupt() -> None:
    data = patch_png_size(encode(Image.new("RGB", (16, 16)), "PNG"), 0, 16)
    with pytest.raises(CorruptMedia):
        decode_image(data, LIMITS)


def test_decompression_bomb_is_refused() -> None:
    bomb = bilevel_png(10_000, 10_000)  # 100 Mpx in ~15 KB
    assert len(bomb) < 64 * 1024
    with pytest.raises(MediaTooLarge):
        decode_image(bomb, LIMITS)
    # With our own limits wide open, Pillow's bomb warning must still refuse it.
    lax = ImageLimits(max_pixels=10**10, max_side=10**6)
    with pytest.raises(MediaTooLarge, match="decompression bomb"):
        decode_image(bomb, lax)


def test_data_over_max_bytes() -> None:
    data = encode(photo(size=(200, 150)), "PNG")
    with pytest.raises(MediaTooLarge, match=f"image is {len(data)} bytes"):
        decode_image(data, ImageLimits(max_bytes=len(data) - 1))
    assert decode_image(data, ImageLimits(max_bytes=len(data))).width == 200


def test_fake_heic_is_unsupported() -> None:
    data = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(200)
    assert sniff_format(data) == "HEIF"
    if "HEIF" in Image.OPEN:
        pytest.skip("a HEIF plugin is registered in this environment")
    with pytest.raises(UnsupportedFormat, match="HEIC"):
        decode_image(data, LIMITS)


@pytest.mark.parametrize(
    ("fmt", "named"),
    [
        ("TIFF", "TIFF images are not supported"),
        ("ICO", "ICO icons are not supported"),
        ("PPM", "PNM/PAM images are not supported"),
        ("JPEG2000", "JPEG 2000 images are not supported"),
        ("QOI", "QOI images are not supported"),
        ("PDF", "PDF documents are not images"),
        ("TGA", "unrecognised image format"),  # TGA has no magic number
    ],
)
def test_formats_outside_the_allowlist_are_unsupported(fmt: str, named: str) -> None:
    with pytest.raises(UnsupportedFormat) as exc:
        decode_image(encode(Image.new("RGB", (8, 8)), fmt), LIMITS)
    assert str(exc.value).startswith(named)
    assert "(supported: JPEG, PNG, GIF, WebP, BMP" in str(exc.value)


@pytest.mark.skipif(not features.check("avif"), reason="Pillow built without AVIF")
def test_avif_decodes() -> None:
    data = encode(photo(size=(64, 48)), "AVIF")
    assert sniff_format(data) == "AVIF"
    out = decode_image(data, LIMITS)
    assert (out.format, out.width, out.height) == ("AVIF", 64, 48)


def test_sniff_format() -> None:
    small = Image.new("RGB", (4, 4))
    for fmt in ("JPEG", "PNG", "GIF", "WEBP", "BMP"):
        assert sniff_format(encode(small, fmt)) == fmt
    assert sniff_format(b"") is None
    assert sniff_format(b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1") == "AVIF"
    assert sniff_format(b"\x00\x00\x00\x1cftypmif1\x00\x00\x00\x00mif1heic") == "HEIF"


def test_image_limits_validate() -> None:
    with pytest.raises(ValueError):
        ImageLimits(max_pixels=0)
    assert LIMITS.max_bytes == 20 * 1024 * 1024


@pytest.mark.timeout(120)
def test_mutated_files_raise_only_signal_errors() -> None:
    """Random byte flips must either decode or raise a SignalError, never anything else."""
    rng = random.Random(1234)
    sources = [
        encode(photo(size=(64, 48)), "JPEG"),
        encode(photo(size=(64, 48)), "PNG"),
        encode(photo(size=(64, 48)), "WEBP"),
        encode(photo(size=(64, 48)), "BMP"),
        animated("GIF", [(255, 0, 0), (0, 0, 255)]),
        animated("PNG", [(255, 0, 0), (0, 0, 255)]),
    ]
    if features.check("avif"):
        sources.append(encode(photo(size=(64, 48)), "AVIF"))
    for source in sources:
        for _ in range(120):
            data = bytearray(source)
            for _ in range(rng.randint(1, 8)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            try:
                out = decode_image(bytes(data), LIMITS)
            except SignalError:
                continue
            assert out.image.mode == "RGB"


# --- bad input, one case each (issue #3) --------------------------------------------------
#
# Every refusal below happens before a pixel is decoded; FAST is generous for a slow CI box.

FAST = 0.5


def refused(data: bytes, exc_type: type[SignalError], limits: ImageLimits = LIMITS) -> str:
    start = time.perf_counter()
    with pytest.raises(exc_type) as exc:
        decode_image(data, limits)
    assert time.perf_counter() - start < FAST
    return str(exc.value)


def png16(arr: np.ndarray, colour_type: int, trns: bytes | None = None) -> bytes:
    """A 16-bit PNG written by hand (Pillow cannot write 16-bit RGB or RGBA)."""
    height, width = arr.shape[:2]
    rows = np.ascontiguousarray(arr, dtype=">u2").reshape(height, -1)
    raw = b"".join(b"\x00" + row.tobytes() for row in rows)
    ihdr = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    extra = png_chunk(b"tRNS", trns) if trns is not None else b""
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + extra
        + png_chunk(b"IDAT", zlib.compress(raw))
        + png_chunk(b"IEND", b"")
    )


def patch_jpeg_size(data: bytes, width: int, height: int) -> bytes:
    """Rewrite the SOF frame size of a JPEG, leaving the scan data alone."""
    pos = 2
    while True:
        marker = data[pos + 1]
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker in (0xC0, 0xC1, 0xC2):
            return data[: pos + 5] + struct.pack(">HH", height, width) + data[pos + 9 :]
        pos += 2 + length


def patch_gif(
    data: bytes, *, screen: tuple[int, int] | None = None, frame: tuple[int, int] | None = None
) -> bytes:
    out = bytearray(data)
    if screen is not None:
        out[6:10] = struct.pack("<HH", *screen)
    if frame is not None:
        at = data.index(b"\x2c", 13)  # the first image descriptor of a Pillow-written GIF
        out[at + 5 : at + 9] = struct.pack("<HH", *frame)
    return bytes(out)


def test_cmyk_tiff_is_refused_by_name() -> None:
    data = encode(photo(size=(64, 48)).convert("CMYK"), "TIFF")
    message = refused(data, UnsupportedFormat)
    assert message.startswith("TIFF images are not supported")


def test_tiff_with_many_pages_is_refused_unread() -> None:
    pages = [Image.new("RGB", (16, 16), (i, 0, 0)) for i in range(300)]
    data = encode(pages[0], "TIFF", save_all=True, append_images=pages[1:])
    assert refused(data, UnsupportedFormat).startswith("TIFF images are not supported")


def test_16bit_rgb_png_keeps_the_high_byte() -> None:
    arr = np.zeros((4, 6, 3), np.uint16)
    arr[..., 0], arr[..., 1], arr[..., 2] = 0xFF00, 0x80FF, 0x00FF
    out = decode_image(png16(arr, 2), LIMITS)
    assert (out.format, out.image.mode, out.image.size) == ("PNG", "RGB", (6, 4))
    assert rgb_at(out) == (255, 128, 0)


def test_16bit_rgba_and_grey_alpha_png_are_composited_on_white() -> None:
    rgba = np.zeros((4, 4, 4), np.uint16)
    rgba[..., 0] = 0xFFFF  # red
    rgba[0, 0, 3] = 0  # transparent
    rgba[1, 1, 3] = 0xFFFF  # opaque
    out = decode_image(png16(rgba, 6), LIMITS)
    assert rgb_at(out, (0, 0)) == (255, 255, 255)
    assert rgb_at(out, (1, 1)) == (255, 0, 0)

    grey_alpha = np.zeros((4, 4, 2), np.uint16)
    grey_alpha[..., 0] = 0x4000
    grey_alpha[1, 1, 1] = 0xFFFF
    out = decode_image(png16(grey_alpha, 4), LIMITS)
    assert rgb_at(out, (0, 0)) == (255, 255, 255)
    assert rgb_at(out, (1, 1)) == (64, 64, 64)


def test_16bit_greyscale_colour_key_is_white() -> None:
    arr = np.full((4, 4), 0x1000, np.uint16)
    arr[2, 2] = 0x8000
    out = decode_image(png16(arr, 0, trns=struct.pack(">H", 0x1000)), LIMITS)
    assert rgb_at(out, (0, 0)) == (255, 255, 255)
    assert rgb_at(out, (2, 2)) == (128, 128, 128)


@pytest.mark.parametrize(("mode", "key"), [("L", 10), ("RGB", (1, 2, 3))])
def test_colour_key_transparency_is_white(mode: str, key: int | tuple[int, int, int]) -> None:
    img = Image.new(mode, (4, 4), key)
    img.putpixel((1, 1), 200 if mode == "L" else (200, 0, 0))
    out = decode_image(encode(img, "PNG", transparency=key), LIMITS)
    assert rgb_at(out, (0, 0)) == (255, 255, 255)
    assert rgb_at(out, (1, 1)) == ((200, 200, 200) if mode == "L" else (200, 0, 0))


@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "PNG"])
def test_long_animation_is_cut_at_max_frames_quickly(fmt: str) -> None:
    """More frames than max_frames is not refused: the count stops at the limit, the first
    frame is the image, and nothing past the first frame is decoded."""
    colours = [(255, 0, 0)] + [(0, (i * 7) % 256, 255) for i in range(999)]
    data = animated(fmt, colours, size=8)
    start = time.perf_counter()
    out = decode_image(data, LIMITS)
    assert time.perf_counter() - start < FAST
    assert out.frames == LIMITS.max_frames
    r, g, b = rgb_at(out)
    assert r > 200 and g < 50 and b < 50


@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "PNG"])
def test_decode_frames_gives_each_displayed_frame_up_to_the_limit(fmt: str) -> None:
    colours = [(i * 12, 255 - i * 12, 0) for i in range(20)]
    data = animated(fmt, colours)
    frames = decode_frames(data, LIMITS)
    assert len(frames) == LIMITS.max_frames
    first = decode_image(data, LIMITS)
    assert np.array_equal(np.asarray(frames[0].image), np.asarray(first.image))
    for i, frame in enumerate(frames):
        assert frame.image.mode == "RGB" and frame.frames == LIMITS.max_frames
        r, g, _ = rgb_at(frame, (16, 16))
        assert abs(r - i * 12) <= 3 and abs(g - (255 - i * 12)) <= 3, i
    assert len(decode_frames(data, ImageLimits(max_frames=3))) == 3


def test_decode_frames_of_a_still_image_is_that_image() -> None:
    data = encode(photo(size=(64, 48)), "JPEG")
    [frame] = decode_frames(data, LIMITS)
    assert np.array_equal(np.asarray(frame.image), np.asarray(decode_image(data, LIMITS).image))


def test_decode_frames_stops_at_the_pixel_budget() -> None:
    data = animated("GIF", [(i * 20, 0, 0) for i in range(10)], size=100)
    assert len(decode_frames(data, ImageLimits(max_pixels=35_000))) == 3  # 3 x 10,000 px


def test_decode_frames_keeps_frames_before_a_broken_one() -> None:
    data = animated("GIF", [(255, 0, 0), (0, 255, 0), (0, 0, 255)])
    third = data.index(b"\x21\xf9\x04", data.index(b"\x21\xf9\x04") + 1)
    third = data.index(b"\x21\xf9\x04", third + 1)  # 3rd frame's graphic control extension
    frames = decode_frames(data[: third + 20], LIMITS)
    assert 1 <= len(frames) <= 2
    assert rgb_at(frames[0])[0] > 200


def test_avif_without_a_decoder_is_unsupported_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(Image.OPEN, "AVIF", raising=False)
    monkeypatch.setattr(Image, "_initialized", 2)  # keep init() from registering it again
    data = b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1" + bytes(64)
    message = refused(data, UnsupportedFormat)
    assert message.startswith("AVIF images are not supported")
    assert "AVIF" not in message.partition("supported:")[2]


def test_heic_message_names_the_format() -> None:
    if "HEIF" in Image.OPEN:
        pytest.skip("a HEIF plugin is registered in this environment")
    data = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(200)
    assert refused(data, UnsupportedFormat).startswith("HEIC/HEIF images are not supported")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "BMP", "WEBP"])
@pytest.mark.parametrize("size", [(1, 1), (1, 9), (9, 1), (2, 2)])
def test_tiny_images_decode_unscaled_and_hash(fmt: str, size: tuple[int, int]) -> None:
    img = Image.fromarray(np.random.default_rng(1).integers(0, 256, (*size[::-1], 3), np.uint8))
    out = decode_image(encode(img, fmt), LIMITS)
    assert out.image.size == size and out.image.mode == "RGB"
    hashes = hash_image(out.image)
    assert len(hashes.pdq) == 64 and len(hashes.phash) == 16
    assert hashes.pdq_quality < PDQ_MIN_QUALITY  # recorded, never matched


@pytest.mark.parametrize("size", [(30_000, 10), (10, 30_000)])
def test_30000_px_side_is_too_large(size: tuple[int, int]) -> None:
    data = encode(Image.new("L", size), "PNG")
    message = refused(data, MediaTooLarge)
    w, h = size
    assert message == (f"image is {w}x{h}: its longest side (30000 px) is over the limit of 20000")


def _lying_60000(fmt: str) -> bytes:
    small = Image.new("RGB", (16, 16), (40, 80, 120))
    if fmt == "PNG":
        return patch_png_size(encode(small, "PNG"), 60_000, 60_000)
    if fmt == "JPEG":
        return patch_jpeg_size(encode(small, "JPEG"), 60_000, 60_000)
    if fmt == "GIF-screen":
        return patch_gif(encode(small, "GIF"), screen=(60_000, 60_000))
    if fmt == "GIF-frame":
        return patch_gif(encode(small, "GIF"), frame=(60_000, 60_000))
    if fmt == "WEBP":
        data = animated("WEBP", [(255, 0, 0), (0, 0, 255)], size=16)  # VP8X: 24-bit canvas
        at = data.index(b"VP8X") + 12
        return data[:at] + (16382).to_bytes(3, "little") * 2 + data[at + 6 :]
    assert fmt == "BMP"
    data = encode(small, "BMP")
    return data[:18] + struct.pack("<ii", 60_000, 60_000) + data[26:]


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF-screen", "GIF-frame", "WEBP", "BMP"])
def test_tiny_file_declaring_a_huge_size_is_refused_fast(fmt: str) -> None:
    data = _lying_60000(fmt)
    assert len(data) < 2048
    message = refused(data, MediaTooLarge)
    side = 16383 if fmt == "WEBP" else 60000
    assert message.startswith(f"image is {side}x{side} = {side * side} pixels, over the limit")


@pytest.mark.parametrize("fmt", ["PNG", "GIF", "JPEG"])
def test_header_claiming_100x100_with_truncated_data_is_corrupt(fmt: str) -> None:
    small = encode(photo(size=(16, 16)), fmt)
    if fmt == "PNG":
        lying = patch_png_size(small, 100, 100)
    elif fmt == "GIF":
        lying = patch_gif(small, screen=(100, 100), frame=(100, 100))
    else:
        lying = patch_jpeg_size(small, 100, 100)
    refused(lying[: len(lying) * 2 // 3], CorruptMedia)


def test_jpeg_header_lying_about_its_size_is_corrupt_even_with_an_end_marker() -> None:
    """libjpeg fills blocks missing at the end marker with grey and reports nothing, so a
    scan shorter than any encoder could make for the declared size is refused by us."""
    lying = patch_jpeg_size(encode(photo(size=(16, 16)), "JPEG"), 100, 100)
    assert lying.endswith(b"\xff\xd9")
    message = refused(lying, CorruptMedia)
    assert message.startswith("JPEG declares 100x100 but a scan holds")
    assert message.endswith("the data is truncated or the header lies")
    data = encode(photo(size=(400, 300)), "JPEG", quality=90)
    header = data.index(b"\xff\xda")
    refused(data[: header + 200] + b"\xff\xd9", CorruptMedia)


def test_streams_ending_early_but_properly_decode_as_viewers_show_them() -> None:
    """A limitation, documented: a JPEG cut short and given back its end marker (beyond what
    the scan-size bound can prove) or a GIF whose LZW data ends early decode like browsers
    show them, the missing area filled. Cost stays bounded by the declared size's limits."""
    data = encode(photo(size=(400, 300)), "JPEG", quality=90)
    out = decode_image(data[: len(data) // 3] + b"\xff\xd9", LIMITS)
    assert (out.width, out.height) == (400, 300)
    gif = patch_gif(encode(photo(size=(16, 16)), "GIF"), screen=(100, 100), frame=(100, 100))
    assert decode_image(gif, LIMITS).image.size == (100, 100)


@pytest.mark.parametrize("image", ["photo", "flat", "grey", "cmyk"])
def test_jpeg_scan_check_accepts_every_encoder_setting(image: str) -> None:
    """The lower bound on scan size must never refuse a well-formed file: the smallest
    scans come from flat images at quality 1 with optimised Huffman tables."""
    img = {
        "photo": photo(size=(97, 61)),
        "flat": Image.new("RGB", (1500, 1000), (255, 255, 255)),
        "grey": Image.new("L", (333, 222), 0),
        "cmyk": photo(size=(64, 48)).convert("CMYK"),
    }[image]
    for quality in (1, 90):
        for subsampling in (0, 1, 2) if img.mode == "RGB" else (-1,):
            for progressive in (False, True):
                for restart in (0, 2):
                    data = encode(
                        img,
                        "JPEG",
                        quality=quality,
                        subsampling=subsampling,
                        progressive=progressive,
                        optimize=True,
                        restart_marker_blocks=restart,
                    )
                    assert decode_image(data, LIMITS).width == img.width


def test_png_with_too_many_chunks_is_refused_unread() -> None:
    ok = encode(Image.new("RGB", (8, 8)), "PNG")
    flood = ok[:33] + png_chunk(b"prIv", b"") * (_MAX_CHUNKS + 1) + ok[33:]
    assert refused(flood, CorruptMedia) == f"PNG has more than {_MAX_CHUNKS} chunks; refused unread"
    a_few = ok[:33] + png_chunk(b"prIv", b"") * 100 + ok[33:]
    assert decode_image(a_few, LIMITS).width == 8


def test_jpeg_with_too_many_markers_or_fill_bytes_is_refused_unread() -> None:
    ok = encode(Image.new("RGB", (8, 8)), "JPEG")
    markers = ok[:2] + b"\xff\xfe\x00\x02" * (_MAX_CHUNKS + 1) + ok[2:]
    assert refused(markers, CorruptMedia).startswith(f"JPEG has more than {_MAX_CHUNKS} markers")
    fill = ok[:2] + b"\xff" * (_MAX_JPEG_FILL + 2) + ok[2:]
    assert refused(fill, CorruptMedia).startswith("JPEG has over")
    assert decode_image(ok[:2] + b"\xff" * 100 + ok[2:], LIMITS).width == 8


def test_gif_with_endless_extension_blocks_is_refused_unread() -> None:
    ok = encode(Image.new("P", (8, 8)), "GIF")
    first = ok.index(b"\x2c", 13)
    comment = b"\x21\xfe" + b"\x01x" * (_MAX_CHUNKS + 1) + b"\x00"
    message = refused(ok[:first] + comment + ok[first:], CorruptMedia)
    assert message.startswith(f"GIF has more than {_MAX_CHUNKS} extension blocks")
    # after the first image they are never read, only counted within a budget
    trailing = ok[:-1] + b"\x21\xfe\x01x\x00" * 300_000 + ok[-1:]
    start = time.perf_counter()
    assert decode_image(trailing, LIMITS).frames == 1
    assert time.perf_counter() - start < FAST


@pytest.mark.parametrize(
    ("data", "named"),
    [
        (
            b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="9"/>',
            "SVG (vector) images are not supported",
        ),
        (b'\xef\xbb\xbf  <svg viewBox="0 0 1 1"></svg>', "SVG (vector) images are not supported"),
        (b"<!DOCTYPE html><html><body>hi</body></html>", "HTML documents are not images"),
        (b"<?xml version='1.0'?><feed/>", "XML documents are not images"),
        ("just some text, 中文也一样\n".encode(), "the data is text, not an image"),
        (b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2mp41", "MP4/QuickTime"),
        (b"%!PS-Adobe-3.0 EPSF-3.0\n", "PostScript/EPS documents are not supported"),
    ],
)
def test_svg_text_and_documents_are_unsupported_by_name(data: bytes, named: str) -> None:
    assert refused(data, UnsupportedFormat).startswith(named)


@pytest.mark.parametrize(
    ("data", "code", "status"),
    [
        (b"", "media_decode_error", 422),
        (b"not an image at all", "unsupported_media", 415),
        (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64), "unsupported_media", 415),
        (
            patch_png_size(encode(Image.new("RGB", (4, 4)), "PNG"), 30_000, 30_000),
            "input_too_large",
            413,
        ),
        (encode(photo(size=(64, 48)), "JPEG")[:300], "media_decode_error", 422),
    ],
)
def test_refusals_map_to_service_errors(data: bytes, code: str, status: int) -> None:
    from moderation.errors import from_signal_error

    with pytest.raises(SignalError) as exc:
        decode_image(data, LIMITS)
    err = from_signal_error(exc.value, "media[0]")
    assert (err.code, err.http_status, err.field) == (code, status, "media[0]")
    assert err.message == str(exc.value)
