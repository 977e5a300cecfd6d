"""PDQ and pHash through the canonical decode path: stability, separation, formats."""

from __future__ import annotations

import io
import itertools

import numpy as np
import pytest
from PIL import Image, ImageEnhance

from models.image_decode import ImageLimits, decode_image
from models.image_hash import (
    PDQ_MIN_QUALITY,
    ImageHashes,
    bytes_to_pdq_hex,
    hamming_hex,
    hash_image,
    hash_image_bytes,
    pdq_hex_to_bytes,
    validate_pdq_hex,
)

LIMITS = ImageLimits()
PHOTOS = ["astronaut", "coffee", "chelsea", "rocket", "camera", "hubble_deep_field"]
HEX = set("0123456789abcdef")


def photo(name: str, size: tuple[int, int] | None = None) -> Image.Image:
    from skimage import data

    img = Image.fromarray(getattr(data, name)()).convert("RGB")
    return img.resize(size, Image.Resampling.LANCZOS) if size else img


def encode(img: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


@pytest.fixture(scope="module")
def originals() -> dict[str, ImageHashes]:
    return {name: hash_image_bytes(encode(photo(name), "PNG"), LIMITS) for name in PHOTOS}


def test_hash_shapes(originals: dict[str, ImageHashes]) -> None:
    for h in originals.values():
        assert len(h.pdq) == 64 and set(h.pdq) <= HEX
        assert len(h.phash) == 16 and set(h.phash) <= HEX
        assert 0 <= h.pdq_quality <= 100
        assert h.pdq_quality >= PDQ_MIN_QUALITY  # real photos are well textured


def test_pdq_hex_is_the_reference_format() -> None:
    """Hex equals the PDQ reference Hash256::format(): words w[15]..w[0] as %04hx."""
    import pdqhash

    img = decode_image(encode(photo("coffee"), "PNG"), LIMITS).image
    bits, _ = pdqhash.compute(np.asarray(img))
    # pdqhash's vector lists bit k of the Hash256 at position 255 - k
    words = [
        sum(int(bits[255 - k]) << (k & 15) for k in range(16 * i, 16 * i + 16)) for i in range(16)
    ]
    reference = "".join(f"{words[i]:04x}" for i in range(15, -1, -1))
    assert hash_image(img).pdq == reference


def test_hashing_is_deterministic() -> None:
    data = encode(photo("rocket"), "JPEG", quality=85)
    assert hash_image_bytes(data, LIMITS) == hash_image_bytes(data, LIMITS)
    assert hash_image_bytes(data, LIMITS) == hash_image(decode_image(data, LIMITS).image)


@pytest.mark.parametrize("name", PHOTOS)
def test_near_copies_stay_within_31(name: str, originals: dict[str, ImageHashes]) -> None:
    img = photo(name)
    w, h = img.size
    smaller = img.resize((int(w * 0.6), int(h * 0.6)), Image.Resampling.BILINEAR)
    brighter = ImageEnhance.Brightness(img).enhance(1.1)
    variants = {
        "jpeg q70": encode(img, "JPEG", quality=70),
        "resize 60%": encode(smaller, "PNG"),
        "brightness +10%": encode(brighter, "PNG"),
        "all three": encode(ImageEnhance.Brightness(smaller).enhance(1.1), "JPEG", quality=70),
    }
    for label, data in variants.items():
        copy = hash_image_bytes(data, LIMITS)
        distance = hamming_hex(originals[name].pdq, copy.pdq)
        assert distance <= 31, f"{name} {label}: PDQ distance {distance}"
        assert hamming_hex(originals[name].phash, copy.phash) <= 10, f"{name} {label}"


def test_different_photos_are_far_apart(originals: dict[str, ImageHashes]) -> None:
    for a, b in itertools.combinations(PHOTOS, 2):
        distance = hamming_hex(originals[a].pdq, originals[b].pdq)
        assert distance > 80, f"{a} vs {b}: PDQ distance {distance}"


def test_jpeg_draft_path_matches_png_path() -> None:
    """The same 1280x720 photo as JPEG (draft-decoded) and as PNG hashes almost alike."""
    img = photo("astronaut", (1280, 720))
    via_jpeg = hash_image_bytes(encode(img, "JPEG", quality=90), LIMITS)
    via_png = hash_image_bytes(encode(img, "PNG"), LIMITS)
    distance = hamming_hex(via_jpeg.pdq, via_png.pdq)
    assert distance <= 10, f"draft JPEG vs PNG PDQ distance {distance}"  # measured: 4
    assert hamming_hex(via_jpeg.phash, via_png.phash) <= 4


def test_exif_rotated_upload_hashes_like_the_upright_original() -> None:
    upright = photo("chelsea")
    exif = Image.Exif()
    exif[0x0112] = 6
    sideways = upright.transpose(Image.Transpose.ROTATE_90)
    rotated = hash_image_bytes(encode(sideways, "JPEG", quality=95, exif=exif.tobytes()), LIMITS)
    original = hash_image_bytes(encode(upright, "PNG"), LIMITS)
    assert hamming_hex(rotated.pdq, original.pdq) <= 8
    # without the orientation tag the same pixels are a different picture to PDQ
    ignored = hash_image_bytes(encode(sideways, "JPEG", quality=95), LIMITS)
    assert hamming_hex(ignored.pdq, original.pdq) > 31


def test_flat_image_has_low_quality() -> None:
    flat = hash_image_bytes(encode(Image.new("RGB", (64, 64), (128, 128, 128)), "PNG"), LIMITS)
    assert flat.pdq_quality < PDQ_MIN_QUALITY


def test_tiny_and_non_rgb_inputs() -> None:
    one = hash_image_bytes(encode(Image.new("RGB", (1, 1), (5, 6, 7)), "PNG"), LIMITS)
    assert len(one.pdq) == 64
    with pytest.raises(ValueError, match="RGB"):
        hash_image(Image.new("L", (8, 8)))


def test_validate_pdq_hex() -> None:
    good = "F8F8F0CEE0F4A84F06370A22038F63F0B36E2ED596621E1D33E6B39C4E9C9B22"
    assert validate_pdq_hex(good) == good.lower()
    for bad in ("", good[:-1], good + "0", "g" * 64, " " + good[1:], "0x" + good[2:], None, 5):
        with pytest.raises(ValueError):
            validate_pdq_hex(bad)  # type: ignore[arg-type]


def test_hex_bytes_round_trip() -> None:
    h = "f8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22"
    raw = pdq_hex_to_bytes(h.upper())
    assert len(raw) == 32 and raw[0] == 0xF8 and raw[-1] == 0x22
    assert bytes_to_pdq_hex(raw) == h
    with pytest.raises(ValueError):
        bytes_to_pdq_hex(raw[:31])
    with pytest.raises(ValueError):
        pdq_hex_to_bytes("abc")


def test_hamming_hex() -> None:
    assert hamming_hex("00", "ff") == 8
    assert hamming_hex("0" * 64, "f" * 64) == 256
    assert hamming_hex("a" * 16, "A" * 16) == 0
    assert hamming_hex("8000", "0001") == 2
    with pytest.raises(ValueError):
        hamming_hex("00", "000")
    with pytest.raises(ValueError):
        hamming_hex("zz", "00")
    with pytest.raises(ValueError):
        hamming_hex(" 1", "01")
