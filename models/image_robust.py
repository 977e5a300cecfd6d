"""Extra PDQ hashes that make near-copies match where one plain PDQ hash does not.

Both sides start from the canonical decoded image (:func:`models.image_decode.decode_image`):

* **Borders.** Uniform borders, letterboxes and screenshot frames are stripped and the
  rest hashed again, on both sides.
* **Rotations and flips.** The query is hashed in all eight dihedral orientations
  (PDQ derives them from one DCT), so the index holds one row per reference, not eight.
  Derived orientations land ~16 bits from a hash of the really turned pixels, so the
  reference also stores its exact mirror hash: mirrored uploads are the common case.
* **Crops.** The reference also stores the hash of its central window (``WINDOW`` of each
  side, from a 256 px copy). A query cropped to a fraction ``k`` of the original holds
  that window at relative size ``WINDOW / k`` somewhere in a small, known range of
  offsets; the query hashes windows at a 3 x 3 grid over that range for ``k`` of 0.95,
  0.925 and 0.90, so for crops up to ~10 % one of them lines up within ~1 % of the side.

Every variant but the plain hash carries a ``margin``: it matches only within the bank's
threshold minus the margin. Variants multiply the comparisons a query makes, and the
margin keeps the false matches they add below those of the plain hash alone
(``moderation bench robustness`` measures both).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import Image

from models.image_hash import PDQ_MIN_QUALITY

__all__ = [
    "DIHEDRAL_MARGIN",
    "MIRROR_MARGIN",
    "WINDOW",
    "WINDOW_MARGIN",
    "HashVariant",
    "frame_pdq",
    "query_variants",
    "reference_variants",
    "strip_borders",
]

# Bits a variant must beat the bank threshold by; chosen on the robustness benchmark so
# that the variants add no false match below the plain hash's own threshold there. PDQ's
# derived orientations sit up to ~16 bits from a hash of the really turned pixels, so an
# exact mirror of a banked image lands near 24: still inside the default threshold of 31.
DIHEDRAL_MARGIN = 4
WINDOW_MARGIN = 12
MIRROR_MARGIN = 8
# Share of each side in the reference's central window, and the crops the query covers.
WINDOW = 0.8
CROPS = (0.95, 0.925, 0.90)
_GRID = 3
_WINDOW_SIDE = 256

# Border stripping works on a copy at most this many pixels on a side, where a row of
# padding is flat to within a few grey levels even after JPEG ringing and resampling.
_STRIP_SIDE = 256
_FLAT_RANGE = 8
_MIN_KEEP = 0.3
# A 16:9 picture across a 9:16 phone frame fills 32 % of its height, a 21:9 film 24 %.
FRAME_MIN_KEEP = 0.2
# Video frames: a re-uploader's logo or caption often sits on the black bars it added.
FRAME_BORDER_TOLERANCE = 0.25
# Names of pdqhash.compute_dihedral's eight outputs, in its order.
# (checked against Pillow's transposes: "flip_v" is top-bottom, "mirror" left-right).
_DIHEDRAL = ("plain", "rot90", "rot180", "rot270", "flip_v", "mirror", "transpose", "transverse")


@dataclass(frozen=True)
class HashVariant:
    """One PDQ hash of an image (64 hex), what produced it, and its margin in bits."""

    name: str
    pdq: str
    quality: int
    margin: int = 0


def strip_borders(
    img: Image.Image, *, tolerance: float = 0.0, min_keep: float = _MIN_KEEP
) -> Image.Image | None:
    """The image without uniform borders, or None when it has none (or is nearly all border).

    ``tolerance``: the share of a border row's width that one overlay may cover (a logo or a
    caption laid over black bars); 0 means every pixel must be flat. ``min_keep``: the
    smallest share of the width and of the height left that still counts as a picture.
    """
    grey = img.convert("L")
    w0, h0 = grey.size
    factor = max(1, max(w0, h0) // _STRIP_SIDE)
    small = np.asarray(grey.reduce(factor) if factor > 1 else grey, dtype=np.int16)
    h, w = small.shape
    top, bottom, left, right = 0, h, 0, w
    # Peel rows, then columns, until stable: a title bar inside a frame needs two passes.
    for _ in range(4):
        before = (top, bottom, left, right)
        t, b = _flat_run(small[top:bottom, left:right], tolerance)
        top, bottom = top + t, top + b
        if bottom - top < h * min_keep:
            return None
        lft, rgt = _flat_run(small[top:bottom, left:right].T, tolerance)
        left, right = left + lft, left + rgt
        if right - left < w * min_keep:
            return None
        if (top, bottom, left, right) == before:
            break
    if (top, bottom, left, right) == (0, h, 0, w):
        return None
    # Back to full resolution, one small pixel further in: it mixes border and picture.
    box = (
        min(w0, (left + (left > 0)) * factor),
        min(h0, (top + (top > 0)) * factor),
        max(0, (right - (right < w)) * factor),
        max(0, (bottom - (bottom < h)) * factor),
    )
    if box[2] - box[0] < 8 or box[3] - box[1] < 8:
        return None
    return img.crop(box)


def frame_pdq(img: Image.Image, *, window: float = 1.0) -> tuple[str, int]:
    """PDQ (hex, quality) of a video frame with its uniform borders stripped.

    References and uploads both go through it, so letterboxing, pillarboxing and a
    re-uploader's black bars hash like the picture they frame. ``window`` < 1 hashes the
    central part of that picture (that fraction of its width and height).
    """
    picture = strip_borders(img, tolerance=FRAME_BORDER_TOLERANCE, min_keep=FRAME_MIN_KEEP) or img
    return _pdq(picture if window >= 1.0 else _center(picture, window))


def _flat_run(rows: npt.NDArray[np.int16], tolerance: float = 0.0) -> tuple[int, int]:
    """``(first, end)`` of the non-flat rows: flat rows are peeled from both ends."""
    if rows.size == 0:
        return 0, 0
    if tolerance <= 0.0:
        flat = (rows.max(axis=1) - rows.min(axis=1)) <= _FLAT_RANGE
    else:
        # Flat: the row is within the flat range of its median except in ONE stretch of at
        # most ``tolerance`` of its width. An overlay is one compact stretch; the stars of a
        # night sky or the texture of a dark picture are spread across the row, so a dark
        # picture's own rows are not peeled like the bars around it.
        off = np.abs(rows - np.median(rows, axis=1, keepdims=True)) > _FLAT_RANGE // 2
        width = rows.shape[1]
        first = np.argmax(off, axis=1)
        last = width - 1 - np.argmax(off[:, ::-1], axis=1)
        span = np.where(off.any(axis=1), last - first + 1, 0)
        flat = span <= tolerance * width
    n = len(flat)
    first = 0
    while first < n and flat[first]:
        first += 1
    end = n
    while end > first and flat[end - 1]:
        end -= 1
    return first, end


def reference_variants(img: Image.Image) -> list[HashVariant]:
    """Hashes stored with a bank entry besides its plain PDQ: stripped, central window, mirror."""
    out: list[HashVariant] = []
    content = img
    stripped = strip_borders(img)
    if stripped is not None:
        content = stripped
        out.append(_variant("stripped", _pdq(stripped)))
    window = _center(_resize(content, _WINDOW_SIDE), WINDOW)
    out.append(_variant("window", _pdq(window)))
    # PDQ's derived orientations are ~16 bits off; the mirror, the commonest evasion, is
    # hashed exactly here so that it matches well inside the default threshold too.
    mirror = _pdq(img.transpose(Image.Transpose.FLIP_LEFT_RIGHT))
    out.append(_variant("mirror", mirror, MIRROR_MARGIN))
    return [v for v in out if v.quality >= PDQ_MIN_QUALITY]


def query_variants(img: Image.Image, *, min_quality: int = PDQ_MIN_QUALITY) -> list[HashVariant]:
    """Every hash a query is matched with, the plain PDQ first (margin 0).

    Variants below ``min_quality`` are dropped (pass 0 to keep the plain hash whatever
    its quality, e.g. to record it)."""
    import pdqhash

    out: list[HashVariant] = []
    stripped = strip_borders(img)
    sources = [("", img)] + ([("stripped_", stripped)] if stripped is not None else [])
    for prefix, source in sources:
        hashes, quality = pdqhash.compute_dihedral(_pixels(source))
        for name, bits in zip(_DIHEDRAL, hashes, strict=True):
            margin = 0 if name == "plain" else DIHEDRAL_MARGIN
            label = (prefix + name).removesuffix("_plain") if prefix else name
            out.append(HashVariant(label or "plain", _hex(bits), int(quality), margin))
    base = _resize(stripped if stripped is not None else img, _WINDOW_SIDE)
    for k in CROPS:
        for x in _window_starts(k):
            for y in _window_starts(k):
                window = _box(base, WINDOW / k, x, y)
                out.append(_variant(f"window_{k:.2f}", _pdq(window), WINDOW_MARGIN))
    out.append(_variant("window", _pdq(_center(base, WINDOW)), WINDOW_MARGIN))
    return [v for v in out if v.quality >= min_quality]


def _window_starts(kept: float) -> npt.NDArray[np.float64]:
    """Where the reference's central window begins inside a query cropped to ``kept``."""
    lo = max(0.0, ((1 - WINDOW) / 2 - (1 - kept)) / kept)
    hi = ((1 - WINDOW) / 2) / kept
    return np.linspace(lo, hi, _GRID)


def _box(img: Image.Image, size: float, x: float, y: float) -> Image.Image:
    w, h = img.size
    cw, ch = round(w * size), round(h * size)
    left, top = round(w * x), round(h * y)
    return img.crop((left, top, min(w, left + cw), min(h, top + ch)))


def _center(img: Image.Image, size: float) -> Image.Image:
    w, h = img.size
    cw, ch = round(w * size), round(h * size)
    left, top = (w - cw) // 2, (h - ch) // 2
    return img.crop((left, top, left + cw, top + ch))


def _resize(img: Image.Image, side: int) -> Image.Image:
    from models.image_decode import RESAMPLE, fit_size

    size = fit_size(img.width, img.height, side)
    return img if size == img.size else img.resize(size, RESAMPLE)


def _pixels(img: Image.Image) -> npt.NDArray[np.uint8]:
    return np.ascontiguousarray(np.asarray(img.convert("RGB"), dtype=np.uint8))


def _pdq(img: Image.Image) -> tuple[str, int]:
    import pdqhash

    bits, quality = pdqhash.compute(_pixels(img))
    return _hex(bits), int(quality)


def _hex(bits: object) -> str:
    # Same bit order as models.image_hash: big-endian packbits gives the reference hex.
    return np.packbits(np.asarray(bits, dtype=np.uint8)).tobytes().hex()


def _variant(name: str, hashed: tuple[str, int], margin: int = 0) -> HashVariant:
    return HashVariant(name, hashed[0], hashed[1], margin)
