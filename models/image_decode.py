"""Safe, bounded image decoding: the one canonical path from upload bytes to an RGB image.

Bank entries and queries must both go through :func:`decode_image` with the same
``target_side``; perceptual hashes are only comparable when the pixels were produced
the same way (same draft scaling, same resize filter, same alpha and orientation rules).

What happens to each kind of input (every refusal is a :class:`~models.errors.SignalError`
whose message names the problem; nothing else escapes, and nothing is decoded unbounded):

- **Accepted formats:** JPEG, PNG (and APNG), GIF, WebP, BMP, AVIF (when Pillow has it) and
  HEIC/HEIF (only when a plugin registered it). Anything else is :class:`UnsupportedFormat`
  naming what it is when recognisable ("TIFF images are not supported", "HEIC/HEIF ...",
  "SVG (vector) images ...", "the data is text, not an image"), else "unrecognised image
  format". TIFF (any number of pages), PSD, ICO and the rest of Pillow's plugins are refused
  on purpose: attack surface nobody uploads.
- **Limits before pixels:** the byte limit, then the size the header declares (read by our own
  parsers for PNG, GIF, JPEG, WebP and BMP, so no decoder ever allocates for it) against
  ``max_pixels``, ``max_side`` and Pillow's decompression-bomb limit: :class:`MediaTooLarge`
  naming the numbers. Files that would make Pillow loop in Python (PNG with tens of
  thousands of chunks, JPEG with many markers or long fill runs, GIF with endless extension
  blocks) are :class:`CorruptMedia` after a bounded walk.
- **Lying or truncated data:** a file cut short is :class:`CorruptMedia`, whatever its header
  says. libjpeg silently fills blocks missing before an end marker with grey, so each JPEG
  scan is also checked against a lower bound of the bytes its declared size needs (every
  block costs at least one Huffman code per symbol): a header that lies about its size by
  much is refused. Below that bound, a JPEG given back its end marker, like a GIF whose LZW
  data ends early, decodes as browsers show it, the missing area filled (cost bounded by the
  declared size, which passed the limits).
- **Colour:** CMYK, YCbCr, 1-bit, palette, 16-bit (high byte kept, not clipped) all become
  RGB; alpha (LA, RGBA, PA, palette ``tRNS``, a ``tRNS`` colour key on L, RGB and 16-bit
  greyscale) is composited onto white.
- **Animation:** :func:`decode_image` returns the first frame, which is what hash-sharing
  programmes hash, and counts frames up to ``max_frames`` without decoding them (an
  animation with more frames is not refused). :func:`decode_frames` returns up to
  ``max_frames`` displayed frames, stopping once the decoded frames add up to ``max_pixels``.
- **Tiny images** (1x1 and up) decode unchanged and are never upscaled: PDQ gives them
  quality 0, so their hash is recorded but never matched.
- **EXIF orientation** is applied (the image comes out upright); malformed EXIF is ignored.
"""

from __future__ import annotations

import codecs
import io
import re
import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from models.errors import CorruptMedia, MediaTooLarge, SignalError, UnsupportedFormat

__all__ = [
    "HASH_TARGET_SIDE",
    "RESAMPLE",
    "DecodedImage",
    "ImageLimits",
    "decode_frames",
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
# EPS, TIFF, ...) are attack surface nobody uploads. HEIF only works if a plugin registered it.
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

# Pillow walks PNG chunks, JPEG markers (and the fill bytes between them) and GIF extension
# blocks in Python at about 1-3 us each: 20 MB of empty chunks would cost seconds of CPU.
# Real files have tens of them (a PNG in 8 KB IDAT chunks at the 20 MB limit: 2,560).
_MAX_CHUNKS = 20_000
_MAX_JPEG_FILL = 64 * 1024
# Counting GIF frames walks their data sub-blocks in Python; stop counting after this many.
_GIF_COUNT_BUDGET = 200_000


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
        brands = _ftyp_brands(head)
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
    white and EXIF orientation applied. Animations give their first frame.
    ``target_side=None`` returns the full decode.
    Raises :class:`~models.errors.SignalError` subclasses for anything refused.
    """
    return _decode(data, limits, target_side, all_frames=False)[0]


def decode_frames(
    data: bytes, limits: ImageLimits, *, target_side: int | None = HASH_TARGET_SIDE
) -> list[DecodedImage]:
    """Every displayed frame of an animation, up to ``limits.max_frames``, each as
    :func:`decode_image` would produce it (the first is identical to it).

    Later frames are composited as a viewer shows them. Decoding stops early, keeping the
    frames already decoded, once the next frame would take the total decoded pixels over
    ``limits.max_pixels``, or at a frame that is corrupt or over the limits; only a problem
    with the first frame raises.
    """
    return _decode(data, limits, target_side, all_frames=True)


def fit_size(width: int, height: int, target_side: int) -> tuple[int, int]:
    """Size with the same aspect ratio and longest side <= ``target_side`` (never upscales)."""
    longest = max(width, height)
    if longest <= target_side:
        return width, height
    scale = target_side / longest
    return max(1, round(width * scale)), max(1, round(height * scale))


# --- the decode ---------------------------------------------------------------------------


def _decode(
    data: bytes, limits: ImageLimits, target_side: int | None, *, all_frames: bool
) -> list[DecodedImage]:
    if target_side is not None and target_side < 1:
        raise ValueError("target_side must be >= 1 or None")
    fmt, gif_frames = _precheck(data, limits)
    with _refusals(fmt, limits), Image.open(io.BytesIO(data), formats=[fmt]) as im:
        width, height = im.size
        _check_dimensions(width, height, limits)
        frames = gif_frames if gif_frames is not None else _count_frames(im, limits)
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
        out = [_render(im, fmt, width, height, frames, orientation, target_side)]
        if all_frames:
            out.extend(_later_frames(im, fmt, frames, orientation, limits, target_side))
        return out


def _later_frames(
    im: Image.Image,
    fmt: str,
    frames: int,
    orientation: int,
    limits: ImageLimits,
    target_side: int | None,
) -> Iterator[DecodedImage]:
    spent = im.size[0] * im.size[1]
    for index in range(1, frames):
        try:
            im.seek(index)
            width, height = im.size
            _check_dimensions(width, height, limits)
            if spent + width * height > limits.max_pixels:
                return
            spent += width * height
            im.load()
            yield _render(im, fmt, width, height, frames, orientation, target_side)
        except (SignalError, Image.DecompressionBombError, *_DECODE_ERRORS):
            # A broken or oversized later frame must not cost the frames before it.
            return


def _render(
    im: Image.Image,
    fmt: str,
    width: int,
    height: int,
    frames: int,
    orientation: int,
    target_side: int | None,
) -> DecodedImage:
    final_size = None if target_side is None else fit_size(width, height, target_side)
    img = _to_rgb(im)
    if final_size is not None and img.size != final_size:
        img = img.resize(final_size, RESAMPLE)
    elif img is im:
        img = im.copy()  # the opened image is closed on return and reused by seek()
    # Transposing after the resize is cheaper and commutes with it up to rounding.
    transpose = _ORIENTATION.get(orientation)
    if transpose is not None:
        img = img.transpose(transpose)
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    return DecodedImage(image=img, format=fmt, width=width, height=height, frames=frames)


@contextmanager
def _refusals(fmt: str, limits: ImageLimits) -> Iterator[None]:
    """Turn whatever Pillow raises into the SignalError that names the problem."""
    try:
        yield
    except SignalError:
        raise
    except Image.DecompressionBombError as exc:
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


def _pillow_can_open(fmt: str) -> bool:
    if fmt not in Image.OPEN:
        Image.init()
    return fmt in Image.OPEN


def _supported() -> str:
    return ", ".join(_LABELS[f] for f in _LABELS if _pillow_can_open(f))


def _precheck(data: bytes, limits: ImageLimits) -> tuple[str, int | None]:
    """Byte limit, format, declared size and structure, before Pillow sees the bytes.

    Returns the Pillow format ID and, for GIF, the frame count (others count in Pillow).
    """
    size = len(data)
    if size == 0:
        raise CorruptMedia("image data is empty (0 bytes)")
    if size > limits.max_bytes:
        raise MediaTooLarge(f"image is {size} bytes, over the limit of {limits.max_bytes}")
    fmt = sniff_format(data)
    if fmt is None:
        what = _identify_unsupported(data)
        if what is None:
            raise UnsupportedFormat(f"unrecognised image format (supported: {_supported()})")
        raise UnsupportedFormat(f"{what} (supported: {_supported()})")
    if not _pillow_can_open(fmt):
        raise UnsupportedFormat(
            f"{_LABELS[fmt]} images are not supported by this decoder (supported: {_supported()})"
        )
    frames = None
    dims: tuple[int, int] | None = None
    try:
        if fmt == "PNG":
            dims = _inspect_png(data)
        elif fmt == "JPEG":
            dims = _inspect_jpeg(data, limits)
        elif fmt == "GIF":
            dims, frames = _inspect_gif(data, limits.max_frames)
        elif fmt == "WEBP":
            dims = _webp_size(data)
        elif fmt == "BMP":
            dims = _bmp_size(data)
    except SignalError:
        raise
    except (IndexError, ValueError, struct.error):
        dims = None  # a header our parsers cannot read: Pillow will name what is wrong
    if dims is not None:
        _check_dimensions(*dims, limits)
    return fmt, frames


def _check_dimensions(width: int, height: int, limits: ImageLimits) -> None:
    if width < 1 or height < 1:
        raise CorruptMedia(f"image declares an empty size of {width}x{height}")
    pixels = width * height
    if pixels > limits.max_pixels:
        raise MediaTooLarge(
            f"image is {width}x{height} = {pixels} pixels, over the limit of {limits.max_pixels}"
        )
    longest = max(width, height)
    if longest > limits.max_side:
        raise MediaTooLarge(
            f"image is {width}x{height}: its longest side ({longest} px) is over the limit "
            f"of {limits.max_side}"
        )
    # Our limits are normally far below Pillow's; this keeps its bomb check when they are not
    # (Pillow only warns between MAX_IMAGE_PIXELS and twice that).
    bomb = Image.MAX_IMAGE_PIXELS
    if bomb is not None and pixels > bomb:
        raise MediaTooLarge(
            f"image is {width}x{height} = {pixels} pixels, refused as a possible "
            f"decompression bomb (over Pillow's limit of {bomb})"
        )


# --- recognising what we refuse ---------------------------------------------------------


def _ftyp_brands(head: bytes) -> set[bytes]:
    box_len = int.from_bytes(head[:4], "big")
    brands = {head[8:12]}
    # compatible brands follow major brand and minor version
    brands.update(head[i : i + 4] for i in range(16, min(box_len, len(head)) - 3, 4))
    return brands


_OTHER_MAGIC: tuple[tuple[bytes, int, str], ...] = (
    (b"II*\x00", 0, "TIFF images are not supported"),
    (b"MM\x00*", 0, "TIFF images are not supported"),
    (b"II+\x00", 0, "TIFF images are not supported"),
    (b"MM\x00+", 0, "TIFF images are not supported"),
    (b"%PDF-", 0, "PDF documents are not images"),
    (b"%!PS", 0, "PostScript/EPS documents are not supported"),
    (b"\xc5\xd0\xd3\xc6", 0, "PostScript/EPS documents are not supported"),
    (b"8BPS", 0, "Photoshop (PSD) images are not supported"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", 0, "JPEG 2000 images are not supported"),
    (b"\xff\x4f\xff\x51", 0, "JPEG 2000 images are not supported"),
    (b"\xff\x0a", 0, "JPEG XL images are not supported"),
    (b"\x00\x00\x00\x0cJXL \r\n\x87\n", 0, "JPEG XL images are not supported"),
    (b"qoif", 0, "QOI images are not supported"),
    (b"\x1a\x45\xdf\xa3", 0, "WebM/Matroska video is not an image"),
    (b"AVI ", 8, "AVI video is not an image"),
    (b"PK\x03\x04", 0, "ZIP archives are not images"),
    (b"\x1f\x8b", 0, "gzip data is not an image (compressed SVG is not supported either)"),
)


def _identify_unsupported(data: bytes) -> str | None:
    """A phrase naming what an unaccepted file is, or None if it is unrecognisable."""
    head = bytes(data[:4096])
    for magic, offset, what in _OTHER_MAGIC:
        if head[offset : offset + len(magic)] == magic:
            return what
    if head[4:8] == b"ftyp":
        return "MP4/QuickTime (ISO media) files are not images"
    if head[:4] == b"\x00\x00\x01\x00" and head[4:6] != b"\x00\x00":  # + count of icons
        return "ICO icons are not supported"
    if re.match(rb"P[1-7][ \t\r\n]", head):
        return "PNM/PAM images are not supported"
    text = head.removeprefix(b"\xef\xbb\xbf").lstrip()
    low = text.lower()
    if low.startswith(b"<"):
        if b"<svg" in low:
            return "SVG (vector) images are not supported; send a raster image"
        if low.startswith((b"<!doctype html", b"<html")):
            return "HTML documents are not images"
        return "XML documents are not images"
    try:
        chars = codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return None
    if chars and all(c.isprintable() or c in "\t\r\n\f" for c in chars):
        return "the data is text, not an image"
    return None


# --- format structure, read without decoding ------------------------------------------------


def _inspect_png(data: bytes) -> tuple[int, int] | None:
    """IHDR's size; refuses a PNG with more chunks than Pillow should walk."""
    if len(data) < 24 or data[12:16] != b"IHDR":
        return None  # Pillow will say what is wrong
    pos, chunks, end = 8, 0, len(data)
    while pos + 8 <= end:
        chunks += 1
        if chunks > _MAX_CHUNKS:
            raise CorruptMedia(f"PNG has more than {_MAX_CHUNKS} chunks; refused unread")
        if data[pos + 4 : pos + 8] == b"IEND":
            break
        pos += 12 + int.from_bytes(data[pos : pos + 4], "big")
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


# The end of entropy-coded data: 0xFF followed by anything but a stuffed 0x00 or an RSTn.
_JPEG_SCAN_END = re.compile(rb"\xff[^\x00\xd0-\xd7]")
# SOFn markers (C4 DHT, C8 JPG and CC DAC are not frames).
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


@dataclass
class _JpegFrame:
    marker: int
    width: int
    height: int
    components: dict[int, tuple[int, int]]  # id -> (horizontal, vertical) sampling


def _inspect_jpeg(data: bytes, limits: ImageLimits) -> tuple[int, int] | None:
    """Walk the JPEG markers up to EOI: the frame size, and refuse bad structure.

    The declared size is checked against ``limits`` as soon as it is read. Refuses
    (CorruptMedia) more markers or fill bytes than Pillow should loop over, and a
    Huffman scan with fewer bytes than the declared size needs: libjpeg fills the missing
    blocks with grey instead of failing, so a header that lies about its size would decode.
    """
    end = len(data)
    pos, segments, fill = 2, 0, 0
    frame: _JpegFrame | None = None
    min_code: dict[tuple[int, int], int] = {}  # (class 0=DC/1=AC, table id) -> shortest code
    while pos + 1 < end:
        if data[pos] != 0xFF:  # junk between segments; Pillow skips it a byte at a time
            nxt = data.find(b"\xff", pos)
            if nxt < 0:
                break
            fill += nxt - pos
            pos = nxt
        marker = data[pos + 1]
        if marker == 0xFF:
            fill += 1
            pos += 1
        elif marker == 0xD9:  # EOI
            break
        elif marker in (0x00, 0x01, 0xD8) or 0xD0 <= marker <= 0xD7:  # no length field
            pos += 2
        else:
            segments += 1
            if segments > _MAX_CHUNKS:
                raise CorruptMedia(f"JPEG has more than {_MAX_CHUNKS} markers; refused unread")
            if pos + 4 > end:
                break
            length = int.from_bytes(data[pos + 2 : pos + 4], "big")
            if length < 2:
                break  # Pillow or libjpeg will name it
            body = data[pos + 4 : pos + 2 + length]
            pos += 2 + length
            if marker in _JPEG_SOF and frame is None and len(body) >= 6:
                frame = _JpegFrame(
                    marker,
                    width=int.from_bytes(body[3:5], "big"),
                    height=int.from_bytes(body[1:3], "big"),
                    components={
                        body[i]: (body[i + 1] >> 4, body[i + 1] & 15)
                        for i in range(6, min(len(body) - 2, 6 + 3 * body[5]), 3)
                    },
                )
                _check_dimensions(frame.width, frame.height, limits)
            elif marker == 0xC4:
                _read_dht(body, min_code)
            elif marker == 0xDA:
                scan_end = _JPEG_SCAN_END.search(data, pos)
                stop = scan_end.start() if scan_end else end
                if frame is not None:
                    _check_scan(frame, body, min_code, stop - pos)
                pos = stop
        if fill > _MAX_JPEG_FILL:
            raise CorruptMedia(
                f"JPEG has over {_MAX_JPEG_FILL} fill or junk bytes between markers; refused"
            )
    return None if frame is None else (frame.width, frame.height)


def _read_dht(body: bytes, min_code: dict[tuple[int, int], int]) -> None:
    i = 0
    while i + 17 <= len(body):
        counts = body[i + 1 : i + 17]
        shortest = next((n + 1 for n, c in enumerate(counts) if c), None)
        if shortest is not None:
            min_code[(body[i] >> 4, body[i] & 15)] = shortest
        i += 17 + sum(counts)


def _check_scan(
    frame: _JpegFrame, body: bytes, min_code: dict[tuple[int, int], int], nbytes: int
) -> None:
    """Refuse a Huffman scan too short for the blocks the frame header declares.

    In a sequential scan every block codes a DC symbol and at least one AC symbol (EOB or
    the 63rd coefficient); in a progressive DC-first scan every block codes a DC symbol.
    Each symbol takes at least the shortest code of its table, so this never refuses a
    well-formed file. Other scans (progressive AC, arithmetic, lossless) are not checked.
    """
    if frame.marker not in (0xC0, 0xC1, 0xC2) or not body:
        return
    ns = body[0]
    if ns < 1 or len(body) < 4 + 2 * ns:
        return
    ss, ah = body[1 + 2 * ns], body[3 + 2 * ns] >> 4
    progressive = frame.marker == 0xC2
    if progressive and (ss != 0 or ah != 0):
        return
    comps = frame.components
    if not comps:
        return
    hmax = max(h for h, _ in comps.values())
    vmax = max(v for _, v in comps.values())
    width, height = frame.width, frame.height
    if not (hmax and vmax and width and height):
        return
    need = 0
    for i in range(ns):
        cid, tables = body[1 + 2 * i], body[2 + 2 * i]
        if cid not in comps:
            return
        h, v = comps[cid]
        bits = min_code.get((0, tables >> 4), 1)
        if not progressive:
            bits += min_code.get((1, tables & 15), 1)
        if ns == 1:  # non-interleaved: only the component's own blocks are coded
            cols = _ceil_div(_ceil_div(width * h, hmax), 8)
            rows = _ceil_div(_ceil_div(height * v, vmax), 8)
            need += cols * rows * bits
        else:  # interleaved: whole MCUs, padding blocks included
            mcus = _ceil_div(width, 8 * hmax) * _ceil_div(height, 8 * vmax)
            need += mcus * h * v * bits
    if nbytes * 8 < need:
        raise CorruptMedia(
            f"JPEG declares {width}x{height} but a scan holds {nbytes} bytes, fewer than the "
            f"{_ceil_div(need, 8)} that size needs: the data is truncated or the header lies"
        )


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _inspect_gif(data: bytes, max_frames: int) -> tuple[tuple[int, int] | None, int]:
    """Pillow's size for frame 0 (screen enlarged to the first image) and the frame count.

    Frames are counted up to ``max_frames`` by walking blocks, never decoding them: Pillow's
    ``n_frames`` decodes every frame. Refuses more extension sub-blocks before the first image
    than Pillow should walk; after it, counting just stops at a budget of sub-blocks.
    """
    if len(data) < 13:
        return None, 1
    width, height = struct.unpack_from("<HH", data, 6)
    frames = 0
    budget = [_MAX_CHUNKS]
    try:
        pos = 13
        flags = data[10]
        if flags & 0x80:
            pos += 3 << ((flags & 7) + 1)
        while frames < max_frames:
            block = data[pos]
            if block == 0x2C:
                x0, y0, w, h = struct.unpack_from("<HHHH", data, pos + 1)
                if frames == 0:
                    width, height = max(width, x0 + w), max(height, y0 + h)
                    budget[0] = _GIF_COUNT_BUDGET
                flags = data[pos + 9]
                pos += 10
                if flags & 0x80:
                    pos += 3 << ((flags & 7) + 1)
                pos = _skip_gif_sub_blocks(data, pos + 1, budget)  # +1: LZW minimum code size
                frames += 1
            elif block == 0x21:
                pos = _skip_gif_sub_blocks(data, pos + 2, budget)
            else:  # trailer or garbage
                break
    except (IndexError, struct.error):
        pass  # truncated: Pillow decides about the first frame; count what we saw
    except _OverBudget:
        if frames == 0:
            raise CorruptMedia(
                f"GIF has more than {_MAX_CHUNKS} extension blocks before its first image; "
                "refused unread"
            ) from None
    return (width, height), max(frames, 1)


class _OverBudget(Exception):
    pass


def _skip_gif_sub_blocks(data: bytes, pos: int, budget: list[int]) -> int:
    left = budget[0]
    while True:
        n = data[pos]
        pos += 1
        left -= 1
        if left < 0:
            raise _OverBudget
        if n == 0:
            budget[0] = left
            return pos
        pos += n


def _count_gif_frames(data: bytes, max_frames: int) -> int:
    """Frames of a GIF counted up to ``max_frames`` without decoding any."""
    return _inspect_gif(data, max_frames)[1]


def _webp_size(data: bytes) -> tuple[int, int] | None:
    if len(data) < 30:
        return None
    chunk = data[12:16]
    if chunk == b"VP8X":  # extended: canvas size, 24 bits each, minus one
        return 1 + int.from_bytes(data[24:27], "little"), 1 + int.from_bytes(data[27:30], "little")
    if chunk == b"VP8L" and data[20] == 0x2F:  # lossless: 14 bits each, minus one
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":  # lossy key frame
        w, h = struct.unpack_from("<HH", data, 26)
        return w & 0x3FFF, h & 0x3FFF
    return None


def _bmp_size(data: bytes) -> tuple[int, int] | None:
    if len(data) < 26:
        return None
    header = int.from_bytes(data[14:18], "little")
    if header == 12:  # OS/2 BITMAPCOREHEADER
        w, h = struct.unpack_from("<HH", data, 18)
        return w, h
    if header >= 40:
        w, h = struct.unpack_from("<ii", data, 18)
        return (w, abs(h)) if w > 0 else None  # negative height: top-down rows
    return None


def _count_frames(im: Image.Image, limits: ImageLimits) -> int:
    try:
        n = int(getattr(im, "n_frames", 1))
    except _DECODE_ERRORS:
        # A broken trailing frame must not stop the first one from being matched.
        n = 1
    return max(1, min(n, limits.max_frames))


# --- pixels -------------------------------------------------------------------------------


def _orientation(im: Image.Image) -> int:
    try:
        value = im.getexif().get(0x0112, 1)
        return int(value) if int(value) in _ORIENTATION else 1
    except Exception:
        # Malformed EXIF is common in the wild and must not make an image unmatchable.
        return 1


def _on_white(rgba: Image.Image) -> Image.Image:
    out = Image.new("RGB", rgba.size, _WHITE)
    out.paste(rgba, mask=rgba.getchannel("A"))
    return out


def _to_rgb(im: Image.Image) -> Image.Image:
    mode = im.mode
    keyed = im.info.get("transparency") is not None
    if mode == "RGB" and not keyed:
        return im
    if mode == "P" and not keyed:
        return im.convert("RGB")
    if mode in ("P", "PA", "LA", "La", "RGBA", "RGBa") or (keyed and mode in ("1", "L", "RGB")):
        # Palette tRNS and a tRNS colour key on L/RGB become alpha in Pillow's RGBA conversion.
        return _on_white(im if mode == "RGBA" else im.convert("RGBA"))
    if mode.startswith("I;16") or mode == "I":
        # Pillow's I;16 -> L conversion clips at 255 instead of scaling; keep the high byte.
        arr = np.asarray(im)
        if mode == "I":
            arr = np.clip(arr, 0, 65535)
        grey = (arr >> 8).astype(np.uint8)
        key = im.info.get("transparency")
        if isinstance(key, int):
            grey[arr == key] = 255
        return Image.fromarray(grey).convert("RGB")
    if mode == "F":
        grey = np.clip(np.asarray(im), 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    try:
        return im.convert("RGB")
    except ValueError as exc:
        raise UnsupportedFormat(f"image colour mode {mode} is not supported") from exc
