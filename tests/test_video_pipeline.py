"""Video items: fingerprints, time-aligned bank matches, frame signals (moderation/video.py)."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session

from models.image_hash import hamming_hex
from models.video_decode import VideoLimits
from moderation import banks
from moderation.errors import InvalidInput
from moderation.index import hashes_from_hex
from moderation.matching import BankMatcher, hamming_matrix, load_reference_frames
from moderation.policy import Signal
from moderation.video import (
    REFERENCE_FPS,
    FrameHash,
    add_video_entry,
    fingerprint_reference,
    fingerprint_video,
    frame_signals,
    match_frames,
    thumbnail,
)

av = pytest.importorskip("av")
vs = pytest.importorskip("moderation.video_synth")

SIZE = (320, 180)
LIMITS = VideoLimits()


@pytest.fixture(scope="module")
def reference() -> tuple[object, bytes]:
    script = vs.reference_scripts(1, 30.0, seed=11, size=SIZE)[0]
    return script, vs.make_video(script, preset="ultrafast")


@pytest.fixture(scope="module")
def distractor() -> bytes:
    script = vs.distractor_scripts(1, 20.0, seed=11, size=SIZE)[0]
    return vs.make_video(script, preset="ultrafast")


def test_hamming_matrix_equals_pairwise_distances() -> None:
    hexes = ["0" * 64, "f" * 64, "0f" * 32, "a5" * 32, "1" + "0" * 63]
    codes = hashes_from_hex(hexes)
    d = hamming_matrix(codes[:3], codes)
    for i in range(3):
        for j in range(len(hexes)):
            assert d[i, j] == hamming_hex(hexes[i], hexes[j])
    assert hamming_matrix(codes[:0], codes).shape == (0, 5)


def test_reference_fingerprint_is_denser_and_has_windows(reference) -> None:  # type: ignore[no-untyped-def]
    _, data = reference
    info, plain = fingerprint_video(data, LIMITS)
    _, ref = fingerprint_reference(data, LIMITS)
    assert info.duration_s == pytest.approx(30.0, abs=0.1)
    assert 30 <= len(plain) <= 45  # 1 fps plus the cuts
    grid = [f for f in ref if f.variant == "plain"]
    assert len(grid) >= 30 * REFERENCE_FPS
    assert {f.variant for f in ref} == {"plain", "w90"}
    # Every 1 fps frame of the upload path is also a reference frame (vPDQ's grid).
    ref_times = {f.t for f in grid}
    assert {f.t for f in plain if not f.t % 1} <= ref_times


def test_thumbnail_is_a_detailed_early_frame(reference) -> None:  # type: ignore[no-untyped-def]
    _, data = reference
    info, thumb = thumbnail(data, LIMITS, "media[0]")
    assert thumb is not None and thumb.t <= 2.0
    assert thumb.quality >= 50
    assert max(thumb.image.size) == 256
    assert info.width == SIZE[0]


def test_frame_signals_name_the_timestamps_that_drove_each_score() -> None:
    per_frame = [
        (0.0, Signal("image_model:x", "sexual", 0.10, "media[0]: porn=0.1000")),
        (1.0, Signal("image_model:x", "sexual", 0.92, "media[0]: porn=0.9200")),
        (2.0, Signal("image_model:x", "sexual", 0.85, "media[0]: porn=0.8500")),
        (1.0, Signal("image_model:x", "violence", 0.05, "media[0]: gore=0.0500")),
    ]
    out = {s.category: s for s in frame_signals(per_frame, 0)}
    assert out["sexual"].score == 0.92
    assert out["sexual"].detail.startswith("media[0] at 1.0s: porn=0.9200; next: 2.0s (0.85)")
    assert out["violence"].score == 0.05


def test_blank_video_cannot_be_a_reference(runtime, uid: str) -> None:  # type: ignore[no-untyped-def]
    frames = [FrameHash(float(t), "0" * 64, 0) for t in range(10)]
    with runtime.session() as s:
        banks.create_bank(s, f"v-{uid}", kind="video")
        row = banks.get_bank_row(s, f"v-{uid}")
        with pytest.raises(InvalidInput, match="no frame is detailed enough"):
            add_video_entry(s, row, frames, "", "blank.mp4")
        banks.delete_bank(s, f"v-{uid}")


@pytest.fixture()
def video_bank(runtime, uid: str, reference):  # type: ignore[no-untyped-def]
    """A video bank holding the reference (unique name; deleted afterwards)."""
    _, data = reference
    name = f"videos-{uid}"
    _, frames = fingerprint_reference(data, LIMITS)
    with runtime.session() as s:
        banks.create_bank(s, name, kind="video", action="block")
        entry_id = add_video_entry(s, banks.get_bank_row(s, name), frames, "", "ref.mp4")
    yield name, entry_id
    with runtime.session() as s:
        banks.delete_bank(s, name)


def _match(engine_session: Session, data: bytes, name: str) -> list:  # type: ignore[type-arg]
    matcher = BankMatcher()
    matcher.load(engine_session)
    _, frames = fingerprint_video(data, LIMITS)
    hits = match_frames(
        matcher, frames, lambda ids: load_reference_frames(engine_session, ids), media_index=0
    )
    return [h for h in hits if h.bank == name]


@pytest.mark.parametrize("transform", ["plain", "crop_10", "logo", "speed_1.1"])
def test_a_clip_finds_where_it_sits_in_the_reference(
    runtime, video_bank, reference, transform: str
) -> None:  # type: ignore[no-untyped-def]
    script, _ = reference
    name, entry_id = video_bank
    start, seconds = 8.4, 12.0
    tr = vs.TRANSFORMS[transform]
    clip = vs.make_clip(script, start, seconds, tr, preset="ultrafast")
    with runtime.session() as s:
        hits = _match(s, clip, name)
    assert [h.entry_id for h in hits] == [entry_id]
    assert hits[0].segments is not None
    [seg] = hits[0].segments
    assert set(seg) == {"query_start", "query_end", "reference_start", "reference_end", "score"}
    assert seg["query_start"] == pytest.approx(0.0, abs=1.0)
    assert seg["query_end"] == pytest.approx(seconds - 1.0, abs=1.0)
    assert seg["reference_start"] == pytest.approx(start, abs=1.0)
    assert seg["reference_end"] == pytest.approx(start + (seconds - 1.0) * tr.speed, abs=1.0)
    speed = (seg["reference_end"] - seg["reference_start"]) / (
        seg["query_end"] - seg["query_start"]
    )
    assert speed == pytest.approx(tr.speed, abs=0.05)
    assert 0.0 < seg["score"] <= 1.0 and hits[0].score == seg["score"]
    assert hits[0].distance <= hits[0].threshold


def test_an_unrelated_video_of_the_same_kind_matches_nothing(
    runtime, video_bank, distractor: bytes
) -> None:  # type: ignore[no-untyped-def]
    name, _ = video_bank
    with runtime.session() as s:
        assert _match(s, distractor, name) == []


def test_image_of_a_reference_frame_matches_the_video_bank(runtime, video_bank, reference) -> None:  # type: ignore[no-untyped-def]
    """A still taken from a banked video (a screenshot) is caught by the image path."""
    from PIL import Image

    from moderation.pipeline import hash_image_data, image_limits_from
    from tests.images import jpeg

    script, _ = reference
    name, entry_id = video_bank
    still = Image.fromarray(vs.render_frame(script, 10 * 30))
    hashes = hash_image_data(jpeg(still), image_limits_from(runtime.settings), "media[0]")
    runtime.refresh(force=True)
    hits = [h for h in runtime.banks.match_pdq(hashes.pdq) if h.bank == name]
    assert [h.entry_id for h in hits] == [entry_id]


def _cli(*args: str) -> list[dict]:  # type: ignore[type-arg]
    import json

    from click.testing import CliRunner

    from moderation.cli import cli

    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def test_cli_banks_a_video_and_matches_a_clip_with_its_segments(
    runtime, reference, distractor: bytes, uid: str, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    script, data = reference
    name = f"cli-videos-{uid}"
    (tmp_path / "ref.mp4").write_bytes(data)
    (tmp_path / "clip.mp4").write_bytes(
        vs.make_clip(script, 12.2, 10.0, vs.TRANSFORMS["resize_50"], preset="ultrafast")
    )
    (tmp_path / "other.mp4").write_bytes(distractor)
    try:
        [created] = _cli("bank", "create", name, "--kind", "video", "--json")
        assert created["kind"] == "video" and created["threshold"] == 100
        [added] = _cli("bank", "add", name, str(tmp_path / "ref.mp4"), "--json")
        assert added["path"] == str(tmp_path / "ref.mp4") and added["frames"] >= 120
        clip, other = _cli(
            "match", str(tmp_path / "clip.mp4"), str(tmp_path / "other.mp4"), "--bank", name,
            "--json",
        )  # fmt: skip
        assert clip["path"] == str(tmp_path / "clip.mp4")
        [m] = clip["matches"]
        assert set(m) == {"bank", "entry_id", "score", "segments"}
        assert (m["bank"], m["entry_id"]) == (name, added["entry_id"])
        [seg] = m["segments"]
        assert set(seg) == {"query_start", "query_end", "reference_start", "reference_end", "score"}
        assert seg["reference_start"] == pytest.approx(12.2, abs=1.0)
        assert seg["reference_end"] == pytest.approx(21.2, abs=1.0)
        assert seg["query_start"] == pytest.approx(0.0, abs=1.0)
        assert other == {"path": str(tmp_path / "other.mp4"), "matches": []}
    finally:
        with runtime.session() as s:
            banks.delete_bank(s, name)


def test_cli_moderate_a_video_prints_the_final_verdict_with_its_segment(
    runtime, video_bank, reference, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    script, _ = reference
    name, entry_id = video_bank
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(vs.make_clip(script, 3.0, 10.0, vs.TRANSFORMS["plain"], preset="ultrafast"))
    [verdict] = _cli("moderate", "--video", str(clip), "--text", "look", "--json")
    assert verdict["decision"] == "block"
    assert not any(r["source"] == "video" for r in verdict["reasons"])  # final, not pending
    [m] = [m for m in verdict["matches"] if m["bank"] == name]
    assert m["entry_id"] == entry_id
    assert m["segments"][0]["reference_start"] == pytest.approx(3.0, abs=1.0)
