"""Safe, bounded image decoding: the one canonical path from upload bytes to an RGB image.

Bank entries and queries must both go through :func:`decode_image` with the same
``target_side``; perceptual hashes are only comparable when the pixels were produced
the same way (same draft scaling, same resize filter, same alpha and orientation rules).
"""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from models.errors import CorruptMedia, MediaTooLarge, SignalError, UnsupportedFormat

__all__ = [
    "HASH_TARGET_SIDE",
    "RESAMPLE",
    "DecodedImage",
    "ImageLimits",
    "decode_image",
    "fit_size",
    "sniff_format",
]

# Longest side of the canonical hashing image. Changing it changes every hash a little:
# rehash the banks with the new value before serving queries with it.
HASH_TARGET_SIDE = 512

# BOX averages every source pixel exactly once, so the result does not depend on how
# far the JPEG draft already reduced the image; it is also the cheapest antialiasing filter.
RESAMPLE = Image.Resampling.BOX

_WHITE = (255, 255, 255)

# Pillow IDs we are willing to hand bytes to; the rest of Pillow's ~40 plugins (TGA, PSD,
# EPS, ...) are attack surface nobody uploads. HEIF only works if a plugin registered it.
_LABELS = {
    "JPEG": "JPEG",
    "PNG": "PNG",
    "GIF": "GIF",
    "WEBP": "WebP",
    "BMP": "BMP",
    "AVIF": "AVIF",
    "HEIF": "HEIC/HEIF",
}

_HEIF_BRANDS = frozenset(
    {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs", b"mif1", b"msf1"}
)
_AVIF_BRANDS = frozenset({b"avif", b"avis"})

# EXIF orientation -> the transpose that displays the image upright.
_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}

# What Pillow raises on malformed input varies by plugin (AVIF and WebP raise RuntimeError);
# all of it means "corrupt".
_DECODE_ERRORS = (
    OSError,
    RuntimeError,
    SyntaxError,
    ValueError,
    EOFError,
    IndexError,
    KeyError,
    TypeError,
    struct.error,
    zlib.error,
    ArithmeticError,
)


@dataclass(frozen=True)
class ImageLimits:
    """Refusal thresholds checked before any pixel is decoded."""

    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 40_000_000
    max_side: int = 20_000
    max_frames: int = 16

    def __post_init__(self) -> None:
        for name in ("max_bytes", "max_pixels", "max_side", "max_frames"):
            if getattr(self, name) < 1:
                raise ValueError(f"ImageLimits.{name} must be >= 1")


@dataclass
class DecodedImage:
    """An upright RGB image plus facts about the original file.

    ``width``/``height`` are the original dimensions after EXIF orientation (not the
    reduced ``image`` size); ``frames`` is counted up to ``ImageLimits.max_frames``.
    """

    image: Image.Image
    format: str
    width: int
    height: int
    frames: int


def sniff_format(data: bytes) -> str | None:
    """Return the Pillow format ID the magic bytes announce, or None if unrecognised."""
    head = bytes(data[:32])
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[:2] == b"BM":
        return "BMP"
    if head[4:8] == b"ftyp":
        box_len = int.from_bytes(head[:4], "big")
        brands = {head[8:12]}
        # compatible brands follow major brand and minor version
        brands.update(head[i : i + 4] for i in range(16, min(box_len, len(head)) - 3, 4))
        if brands & _AVIF_BRANDS:
            return "AVIF"
        if brands & _HEIF_BRANDS:
            return "HEIF"
    return None


def decode_image(
    data: bytes, limits: ImageLimits, *, target_side: int | None = HASH_TARGET_SIDE
) -> DecodedImage:
    """Decode untrusted bytes to an upright RGB image, longest side <= ``target_side``.

    This is the canonical hashing path: JPEGs are DCT-scaled with ``Image.draft`` to the
    smallest scale still >= the target, then every format is resized to exactly
    ``fit_size(width, height, target_side)`` with :data:`RESAMPLE`; alpha is composited onto
    white and EXIF orientation applied. ``target_side=None`` returns the full decode.
    Raises :class:`~models.errors.SignalError` subclasses for anything refused.
    """
    if target_side is not None and target_side < 1:
        raise ValueError("target_side must be >= 1 or None")
    size = len(data)
    if size == 0:
        raise CorruptMedia("image data is empty (0 bytes)")
    if size > limits.max_bytes:
        raise MediaTooLarge(f"image is {size} bytes, over the limit of {limits.max_bytes}")
    fmt = sniff_format(data)
    if fmt is None:
        supported = ", ".join(_LABELS[f] for f in _LABELS if _pillow_can_open(f))
        raise UnsupportedFormat(f"unrecognised image format (supported: {supported})")
    if not _pillow_can_open(fmt):
        raise UnsupportedFormat(f"{_LABELS[fmt]} images are not supported by this decoder")

    try:
        with warnings.catch_warnings():
            # Pillow only warns between MAX_IMAGE_PIXELS and twice that; refuse instead.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data), formats=[fmt])
            return _decode_opened(im, data, fmt, limits, target_side)
    except SignalError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise MediaTooLarge(
            f"image refused before decoding as a decompression bomb ({exc}); "
            f"the configured limit is {limits.max_pixels} pixels"
        ) from exc
    except UnidentifiedImageError as exc:
        raise CorruptMedia(f"{_LABELS[fmt]} header is malformed and cannot be read") from exc
    except _DECODE_ERRORS as exc:
        raise CorruptMedia(
            f"{_LABELS[fmt]} image is truncated or corrupt: {type(exc).__name__}: {exc}"
        ) from exc


def fit_size(width: int, height: int, target_side: int) -> tuple[int, int]:
    """Size with the same aspect ratio and longest side <= ``target_side`` (never upscales)."""
    longest = max(width, height)
    if longest <= target_side:
        return width, height
    scale = target_side / longest
    return max(1, round(width * scale)), max(1, round(height * scale))


def _pillow_can_open(fmt: str) -> bool:
    if fmt not in Image.OPEN:
        Image.init()
    return fmt in Image.OPEN


def _check_dimensions(width: int, height: int, limits: ImageLimits) -> None:
    if width < 1 or height < 1:
        raise CorruptMedia(f"image declares an empty size of {width}x{height}")
    if width > limits.max_side or height > limits.max_side:
        raise MediaTooLarge(
            f"image is {width}x{height}, a side is over the limit of {limits.max_side}"
        )
    pixels = width * height
    if pixels > limits.max_pixels:
        raise MediaTooLarge(
            f"image is {width}x{height} = {pixels} pixels, over the limit of {limits.max_pixels}"
        )


def _decode_opened(
    im: Image.Image, data: bytes, fmt: str, limits: ImageLimits, target_side: int | None
) -> DecodedImage:
    width, height = im.size
    _check_dimensions(width, height, limits)
    frames = _count_frames(im, data, limits.max_frames)
    if im.tell() != 0:
        im.seek(0)
        width, height = im.size
        _check_dimensions(width, height, limits)

    final_size = None if target_side is None else fit_size(width, height, target_side)
    if final_size is not None and im.format in ("JPEG", "MPO"):
        # DCT scaling: decode at 1/2, 1/4 or 1/8 while staying >= final_size.
        im.draft("RGB", final_size)
    im.load()
    orientation = _orientation(im)

    img = _to_rgb(im)
    if final_size is not None and img.size != final_size:
        img = img.resize(final_size, RESAMPLE)
    # Transposing after the resize is cheaper and commutes with it up to rounding.
    transpose = _ORIENTATION.get(orientation)
    if transpose is not None:
        img = img.transpose(transpose)
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    return DecodedImage(image=img, format=fmt, width=width, height=height, frames=frames)


def _count_frames(im: Image.Image, data: bytes, max_frames: int) -> int:
    if im.format == "GIF":
        return _count_gif_frames(data, max_frames)
    try:
        n = int(getattr(im, "n_frames", 1))
    except _DECODE_ERRORS:
        # A broken trailing frame must not stop the first one from being matched.
        n = 1
    return max(1, min(n, max_frames))


def _count_gif_frames(data: bytes, max_frames: int) -> int:
    """Count GIF image descriptors up to ``max_frames`` by walking blocks.

    Pillow's ``n_frames`` parses every frame in Python; a 20 MiB GIF of 1x1 frames
    would take seconds, so we stop at the limit.
    """
    frames = 0
    try:
        pos = 13
        flags = data[10]
        if flags & 0x80:
            pos += 3 << ((flags & 7) + 1)
        while frames < max_frames:
            block = data[pos]
            if block == 0x2C:
                flags = data[pos + 9]
                pos += 10
                if flags & 0x80:
                    pos += 3 << ((flags & 7) + 1)
                pos = _skip_gif_sub_blocks(data, pos + 1)  # +1: LZW minimum code size
                frames += 1
            elif block == 0x21:
                pos = _skip_gif_sub_blocks(data, pos + 2)
            else:  # trailer or garbage
                break
    except IndexError:
        pass  # truncated after the first frame: Pillow decoded that one, count what we saw
    return max(frames, 1)


def _skip_gif_sub_blocks(data: bytes, pos: int) -> int:
    while True:
        n = data[pos]
        pos += 1
        if n == 0:
            return pos
        pos += n


def _orientation(im: Image.Image) -> int:
    try:
        value = im.getexif().get(0x0112, 1)
        return int(value) if int(value) in _ORIENTATION else 1
    except Exception:
        # Malformed EXIF is common in the wild and must not make an image unmatchable.
        return 1


def _to_rgb(im: Image.Image) -> Image.Image:
    mode = im.mode
    if mode == "RGB":
        return im
    if mode == "P" and "transparency" not in im.info:
        return im.convert("RGB")
    if mode in ("P", "PA", "LA", "La", "RGBA", "RGBa"):
        rgba = im.convert("RGBA")
        out = Image.new("RGB", rgba.size, _WHITE)
        out.paste(rgba, mask=rgba.getchannel("A"))
        return out
    if mode.startswith("I;16") or mode == "I":
        # Pillow's I;16 -> L conversion clips at 255 instead of scaling; keep the high byte.
        arr = np.asarray(im).astype(np.int64, copy=False)
        grey = (np.clip(arr, 0, 65535) >> 8).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if mode == "F":
        grey = np.clip(np.asarray(im), 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    try:
        return im.convert("RGB")
    except ValueError as exc:
        raise UnsupportedFormat(f"image colour mode {mode} is not supported") from exc
