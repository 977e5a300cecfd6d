"""Perceptual hashes (PDQ and pHash) of images decoded by :mod:`models.image_decode`.

Hex format: ``pdq`` is Meta's canonical 64-char hex, most significant bit first, exactly
what ThreatExchange, the PDQ reference ``toHexString`` and StopNCII exchange.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from models.image_decode import ImageLimits, decode_image

__all__ = [
    "PDQ_BITS",
    "PDQ_MIN_QUALITY",
    "ImageHashes",
    "bytes_to_pdq_hex",
    "hamming_hex",
    "hash_image",
    "hash_image_bytes",
    "pdq_hex_to_bytes",
    "validate_pdq_hex",
]

PDQ_BITS = 256
# PDQ's own guidance: hashes below quality 50 are too featureless to match reliably;
# record them, but do not match on them.
PDQ_MIN_QUALITY = 50

_HEX_DIGITS = frozenset("0123456789abcdef")


@dataclass(frozen=True)
class ImageHashes:
    """PDQ (256-bit hex + quality 0..100) and imagehash pHash (64-bit hex) of one image."""

    pdq: str
    pdq_quality: int
    phash: str


def hash_image(img: Image.Image, *, pdq: tuple[str, int] | None = None) -> ImageHashes:
    """Hash an RGB image produced by :func:`~models.image_decode.decode_image`.

    ``pdq`` is its (hex, quality) when the caller already has it (the query variants
    compute it along with the rotations), so it is not computed twice.
    """
    import imagehash
    import pdqhash

    if img.mode != "RGB":
        raise ValueError(f"hash_image expects an RGB image from decode_image, got mode {img.mode}")
    if pdq is None:
        pixels = np.ascontiguousarray(np.asarray(img, dtype=np.uint8))
        bits, quality = pdqhash.compute(pixels)
        # pdqhash returns bit 255 first (its hash_to_vector reverses), so big-endian packbits
        # yields the reference hex: word 15 first, each 16-bit word most significant nibble
        # first.
        pdq = np.packbits(np.asarray(bits, dtype=np.uint8)).tobytes().hex(), int(quality)
    phash = str(imagehash.phash(img))
    return ImageHashes(pdq=pdq[0], pdq_quality=int(pdq[1]), phash=phash)


def hash_image_bytes(data: bytes, limits: ImageLimits) -> ImageHashes:
    """Decode ``data`` through the canonical path (default ``target_side``) and hash it."""
    return hash_image(decode_image(data, limits).image)


def validate_pdq_hex(s: str) -> str:
    """Return ``s`` lowercased; raise ValueError unless it is exactly 64 hex characters."""
    if not isinstance(s, str):
        raise ValueError(f"PDQ hash must be a string, got {type(s).__name__}")
    low = s.lower()
    if len(low) != PDQ_BITS // 4 or not _HEX_DIGITS.issuperset(low):
        raise ValueError(f"PDQ hash must be 64 hex characters, got {s[:80]!r}")
    return low


def pdq_hex_to_bytes(s: str) -> bytes:
    """32 bytes of a PDQ hex string, in the same (most significant first) order."""
    return bytes.fromhex(validate_pdq_hex(s))


def bytes_to_pdq_hex(b: bytes) -> str:
    """Inverse of :func:`pdq_hex_to_bytes`."""
    if len(b) != PDQ_BITS // 8:
        raise ValueError(f"PDQ hash must be 32 bytes, got {len(b)}")
    return bytes(b).hex()


def hamming_hex(a: str, b: str) -> int:
    """Bit distance between two equal-length hex hashes (PDQ, pHash or any other)."""
    if len(a) != len(b):
        raise ValueError(f"hashes differ in length: {len(a)} vs {len(b)} hex characters")
    if not a or not _HEX_DIGITS.issuperset(a.lower()) or not _HEX_DIGITS.issuperset(b.lower()):
        raise ValueError("hashes must be non-empty hex strings")
    return (int(a, 16) ^ int(b, 16)).bit_count()
