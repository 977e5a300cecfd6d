"""Safe decoding: limits, refusals, colour modes, animation and the canonical reduced path."""

from __future__ import annotations

import io
import random
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile, features

from models.errors import CorruptMedia, MediaTooLarge, SignalError, UnsupportedFormat
from models.image_decode import (
    DecodedImage,
    ImageLimits,
    _count_gif_frames,
    decode_image,
    fit_size,
    sniff_format,
)
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


@pytest.mark.parametrize("fmt", ["TIFF", "ICO", "TGA", "PPM"])
def test_formats_outside_the_allowlist_are_unsupported(fmt: str) -> None:
    with pytest.raises(UnsupportedFormat):
        decode_image(encode(Image.new("RGB", (8, 8)), fmt), LIMITS)


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
