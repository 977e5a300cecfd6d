"""Test images built from scikit-image's bundled photos, and their near-copies."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageEnhance


def photo(name: str = "astronaut", size: tuple[int, int] | None = None) -> Image.Image:
    from skimage import data

    arr = getattr(data, name)()
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    img = Image.fromarray(arr[..., :3].astype(np.uint8)).convert("RGB")
    return img.resize(size, Image.Resampling.LANCZOS) if size else img


def jpeg(img: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def near_copy(img: Image.Image) -> bytes:
    """Re-encoded at 70 %, resized to 80 % and slightly brightened: a typical re-upload."""
    w, h = img.size
    out = img.resize((int(w * 0.8), int(h * 0.8)), Image.Resampling.BILINEAR)
    out = ImageEnhance.Brightness(out).enhance(1.08)
    return jpeg(out, quality=70)


def patch_png_size(data: bytes, width: int, height: int) -> bytes:
    """A PNG whose header lies about its size (IHDR patched, CRC recomputed)."""
    import struct
    import zlib

    ihdr = data[12:29]  # type + 13 bytes of IHDR payload
    payload = struct.pack(">II", width, height) + ihdr[12:]
    chunk = b"IHDR" + payload
    return data[:12] + chunk + struct.pack(">I", zlib.crc32(chunk)) + data[33:]
