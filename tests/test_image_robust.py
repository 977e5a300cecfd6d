"""Robust hash variants: border stripping, rotations and flips, crop windows."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageOps

from models.image_hash import hamming_hex, hash_image
from models.image_robust import (
    DIHEDRAL_MARGIN,
    FRAME_BORDER_TOLERANCE,
    FRAME_MIN_KEEP,
    MIRROR_MARGIN,
    WINDOW_MARGIN,
    frame_pdq,
    query_variants,
    reference_variants,
    strip_borders,
)
from moderation.bench_robustness import canonical
from tests.images import photo


def _padded(img: Image.Image, colour: tuple[int, int, int], frac: float = 0.1) -> Image.Image:
    w, h = img.size
    pw, ph = int(w * frac), int(h * frac)
    canvas = Image.new("RGB", (w + 2 * pw, h + 2 * ph), colour)
    canvas.paste(img, (pw, ph))
    return canvas


@pytest.mark.parametrize("colour", [(0, 0, 0), (255, 255, 255), (120, 130, 140)])
def test_strip_borders_recovers_the_picture_inside_padding(colour: tuple[int, int, int]) -> None:
    inner = canonical(photo("coffee"))
    stripped = strip_borders(_padded(inner, colour))
    assert stripped is not None
    # Within a couple of pixels per side of the original picture.
    assert abs(stripped.width - inner.width) <= 6
    assert abs(stripped.height - inner.height) <= 6
    assert hamming_hex(hash_image(stripped).pdq, hash_image(inner).pdq) <= 16


def test_strip_borders_peels_a_screenshot_frame_with_a_title_bar() -> None:
    inner = canonical(photo("chelsea")).resize((360, 240))
    canvas = Image.new("RGB", (480, 360), (236, 236, 236))
    ImageDraw.Draw(canvas).rectangle((0, 0, 480, 30), fill=(40, 44, 52))
    canvas.paste(inner, (50, 70))
    stripped = strip_borders(canvas)
    assert stripped is not None
    assert abs(stripped.width - 360) <= 6 and abs(stripped.height - 240) <= 6


def test_strip_borders_leaves_a_borderless_photo_and_a_blank_image_alone() -> None:
    assert strip_borders(canonical(photo("astronaut"))) is None
    assert strip_borders(Image.new("RGB", (300, 200), (10, 200, 30))) is None
    # A thin picture in a huge border is mostly border: not worth trusting.
    tiny = _padded(canonical(photo("coffee")).resize((40, 40)), (0, 0, 0), frac=3.0)
    assert strip_borders(tiny) is None


def test_frame_strip_keeps_a_dark_picture_whole_and_peels_a_logo_on_the_bars() -> None:
    # A phone re-upload: a starry 16:9 picture across a 9:16 frame, a logo on the top bar.
    # Rows of the picture are dark with scattered stars: not bars, though mostly black.
    picture = photo("hubble_deep_field", (360, 202))
    frame = Image.new("RGB", (360, 640), (0, 0, 0))
    frame.paste(picture, (0, 219))
    ImageDraw.Draw(frame).rounded_rectangle((290, 150, 346, 172), radius=5, fill=(200, 30, 30))
    stripped = strip_borders(frame, tolerance=FRAME_BORDER_TOLERANCE, min_keep=FRAME_MIN_KEEP)
    assert stripped is not None
    assert abs(stripped.width - 360) <= 6 and abs(stripped.height - 202) <= 6, stripped.size
    reference = photo("hubble_deep_field", (640, 360))
    assert hamming_hex(frame_pdq(frame)[0], frame_pdq(reference)[0]) <= 31


def test_query_variants_start_with_the_plain_hash_and_carry_margins() -> None:
    img = canonical(photo("rocket"))
    variants = query_variants(img)
    assert variants[0].name == "plain" and variants[0].margin == 0
    assert variants[0].pdq == hash_image(img).pdq
    names = {v.name for v in variants}
    assert {"rot90", "rot180", "rot270", "mirror", "flip_v", "transpose"} <= names
    assert all(v.margin == DIHEDRAL_MARGIN for v in variants if v.name.startswith("rot"))
    assert all(v.margin == WINDOW_MARGIN for v in variants if v.name.startswith("window"))
    assert len({v.pdq for v in variants}) > 20  # windows and orientations really differ


@pytest.mark.parametrize(
    "transform",
    [ImageOps.mirror, ImageOps.flip, lambda im: im.rotate(90, expand=True)],
    ids=["mirror", "flip", "rot90"],
)
def test_a_flipped_or_rotated_copy_matches_through_a_dihedral_variant(transform) -> None:  # type: ignore[no-untyped-def]
    original = canonical(photo("coffee"))
    ref = hash_image(original).pdq
    copy = canonical(transform(original))
    assert hamming_hex(hash_image(copy).pdq, ref) > 80  # plain PDQ misses it
    best = min(query_variants(copy), key=lambda v: hamming_hex(v.pdq, ref))
    assert best.name != "plain" and best.margin == DIHEDRAL_MARGIN
    assert hamming_hex(best.pdq, ref) <= 20  # PDQ's derived orientations are near, not exact


@pytest.mark.parametrize("name", ["coffee", "rocket", "astronaut"])
def test_a_ten_percent_crop_matches_the_reference_window(name: str) -> None:
    original = canonical(photo(name))
    w, h = original.size
    # 10 % off each dimension, all of it from the left and top: the hardest offset.
    cropped = canonical(original.crop((w // 10, h // 10, w, h)))
    refs = {v.name: v.pdq for v in reference_variants(original)}
    plain = hamming_hex(hash_image(cropped).pdq, hash_image(original).pdq)
    windows = [v for v in query_variants(cropped) if v.name.startswith("window")]
    best = min(hamming_hex(v.pdq, refs["window"]) for v in windows)
    assert best + WINDOW_MARGIN < plain
    assert best + WINDOW_MARGIN <= 64


def test_reference_variants_of_a_padded_image_include_the_stripped_hash() -> None:
    inner = canonical(photo("chelsea"))
    padded = canonical(_padded(inner, (0, 0, 0), frac=0.15))
    refs = {v.name: v for v in reference_variants(padded)}
    assert set(refs) == {"stripped", "window", "mirror"}
    assert hamming_hex(refs["stripped"].pdq, hash_image(inner).pdq) <= 20
    assert refs["stripped"].margin == refs["window"].margin == 0
    # The mirror is hashed from the real mirrored pixels: exact, unlike PDQ's derived one.
    mirrored = hash_image(padded.transpose(Image.Transpose.FLIP_LEFT_RIGHT)).pdq
    assert refs["mirror"].pdq == mirrored and refs["mirror"].margin == MIRROR_MARGIN


def test_featureless_variants_are_dropped() -> None:
    flat = Image.fromarray(np.full((256, 256, 3), 127, dtype=np.uint8))
    assert query_variants(flat) == []
    assert reference_variants(flat) == []


@pytest.fixture()
def bank_photo(runtime, uid):  # type: ignore[no-untyped-def]
    """Put a photo in a block bank of its own; the bank is deleted afterwards, because the
    test database is shared and other tests send near-copies of the same photos."""
    from moderation import banks
    from moderation.pipeline import hash_reference_image, image_limits_from
    from tests.images import png

    created: list[str] = []

    def put(img: Image.Image, *, with_references: bool, threshold: int = 31) -> int:
        limits = image_limits_from(runtime.settings)
        plain, refs = hash_reference_image(png(img), limits, "entry")
        name = f"robust-{uid}-{len(created)}"
        with runtime.session() as s:
            banks.create_bank(s, name, action="block", threshold=threshold)
            bank = banks.get_bank_row(s, name)
            (entry_id,) = banks.add_entries(
                s, bank, [banks.EntryInput(plain.pdq, plain.pdq_quality)]
            )
            if with_references:
                banks.add_reference_hashes(s, entry_id, refs)
        created.append(name)
        runtime.refresh(force=True)
        return int(entry_id)

    yield put
    with runtime.session() as s:
        for name in created:
            banks.delete_bank(s, name)


def _item(uid: str, img: Image.Image):  # type: ignore[no-untyped-def]
    import base64

    from moderation.domain import Item, MediaRef
    from tests.images import jpeg

    data = base64.b64encode(jpeg(img, quality=85)).decode()
    return Item(
        content_id=f"robust-{uid}",
        uploader_id="u",
        media=[MediaRef(kind="image", data_b64=data)],
    )


def test_a_mirrored_upload_of_a_banked_photo_is_blocked_via_its_variant(
    runtime, uid, bank_photo
) -> None:  # type: ignore[no-untyped-def]
    from moderation.pipeline import moderate

    original = photo("chelsea")
    entry_id = bank_photo(original, with_references=False)
    verdict, analysis = moderate(runtime, _item(uid, ImageOps.mirror(original)))
    assert verdict.decision == "block"
    (hit,) = [h for h in analysis.hits if h.entry_id == entry_id]
    assert hit.variant == "mirror" and hit.distance <= hit.threshold
    assert any("via the mirror variant" in r.detail for r in verdict.reasons)

    plain_only = runtime.policy.model_copy(
        update={"matching": runtime.policy.matching.model_copy(update={"variants": False})}
    )
    runtime.policy = plain_only
    verdict, _ = moderate(runtime, _item(uid + "-plain", ImageOps.mirror(original)))
    assert all(m.entry_id != entry_id for m in verdict.matches)


@pytest.mark.parametrize("crop", [0.05, 0.08, 0.10])
@pytest.mark.parametrize("with_references", [True, False])
def test_a_cropped_upload_matches_through_the_reference_window(
    runtime, uid, bank_photo, crop, with_references
) -> None:  # type: ignore[no-untyped-def]
    from moderation.pipeline import moderate

    original = canonical(photo("coffee"))
    w, h = original.size
    cropped = original.crop((0, 0, w - int(w * crop), h - int(h * crop)))  # all on one side
    # A copyright bank with a looser threshold than the default: crops are far in PDQ terms.
    entry_id = bank_photo(original, with_references=with_references, threshold=56)
    verdict, analysis = moderate(runtime, _item(uid, cropped))
    hits = [h for h in analysis.hits if h.entry_id == entry_id]
    if with_references:
        assert hits and hits[0].variant.startswith("window")
        assert verdict.decision in ("block", "review")
    else:  # a bare imported hash has no window to meet: plain PDQ alone is too far
        assert hits == []


def _animation(*frames: Image.Image, fmt: str = "GIF") -> bytes:
    import io

    buf = io.BytesIO()
    first, *rest = [f.convert("RGB").resize((320, 240)) for f in frames]
    first.save(buf, fmt, save_all=True, append_images=rest, duration=100, loop=0)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["GIF", "WEBP"])
def test_a_banked_frame_behind_a_harmless_first_frame_is_still_matched(  # type: ignore[no-untyped-def]
    runtime, uid, bank_photo, fmt
) -> None:
    import base64

    from models.image_decode import decode_image
    from moderation.domain import Item, MediaRef
    from moderation.pipeline import image_limits_from, moderate

    banked = photo("astronaut").resize((320, 240))
    data = _animation(photo("immunohistochemistry"), photo("moon"), banked, fmt=fmt)
    # Bank the frame exactly as the animation carries it (palette or lossy encoding).
    third = Image.open(__import__("io").BytesIO(data))
    third.seek(2)
    entry_id = bank_photo(third.convert("RGB"), with_references=False)
    assert decode_image(data, image_limits_from(runtime.settings)).frames == 3
    item = Item(
        content_id=f"anim-{uid}-{fmt}",
        uploader_id="u",
        media=[MediaRef(kind="image", data_b64=base64.b64encode(data).decode())],
    )
    verdict, analysis = moderate(runtime, item)
    hits = [h for h in analysis.hits if h.entry_id == entry_id]
    assert hits and hits[0].variant == "frame_3"
    assert verdict.decision == "block"


def test_sample_frames_spreads_over_the_animation() -> None:
    from moderation.pipeline import sample_frames

    frames = [Image.new("RGB", (2, 2), (i, 0, 0)) for i in range(10)]
    picked = sample_frames(frames, 3)  # type: ignore[arg-type]
    assert [f.getpixel((0, 0))[0] for f in picked] == [2, 6, 9]
    assert sample_frames(frames[:2], 3) == frames[:2]
    assert sample_frames(frames, 0) == []
