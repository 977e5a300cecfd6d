"""Synthetic test videos: scripts, encoding, and the re-upload transforms of the video bench."""

from __future__ import annotations

import io
from functools import lru_cache

import numpy as np
import numpy.typing as npt
import pytest

pytest.importorskip("av")
pytest.importorskip("skimage")

from moderation import video_synth as vs
from moderation.bench_robustness import PHOTOS

SIZE = (320, 180)
FPS = 30.0
Frames = list[npt.NDArray[np.uint8]]


@lru_cache(maxsize=4)
def _script(seconds: float = 12.0, seed: int = 3) -> vs.Script:
    return vs.reference_scripts(1, seconds, seed, size=SIZE, fps=FPS)[0]


def _decode(data: bytes) -> tuple[Frames, int, int, float, float]:
    """Decoded RGB frames, width, height, frame rate and container duration (s)."""
    import av

    with av.open(io.BytesIO(data)) as f:
        stream = f.streams.video[0]
        frames = [fr.to_ndarray(format="rgb24") for fr in f.decode(stream)]
        assert f.duration is not None
        return frames, stream.width, stream.height, float(stream.average_rate), f.duration / 1e6


def _mae(a: npt.NDArray[np.uint8], b: npt.NDArray[np.uint8]) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def test_photo_folds_are_disjoint_halves() -> None:
    refs, distractors = set(vs.reference_photos()), set(vs.distractor_photos())
    assert not refs & distractors
    assert refs | distractors == set(PHOTOS)
    assert abs(len(refs) - len(distractors)) <= 1
    for script in vs.reference_scripts(4, 30, seed=1, size=SIZE):
        assert {s.photo for s in script.shots} <= refs
    for script in vs.distractor_scripts(4, 30, seed=1, size=SIZE):
        assert {s.photo for s in script.shots} <= distractors


def test_random_script_shape_and_motion() -> None:
    script = vs.reference_scripts(1, 60, seed=5)[0]
    assert script.frames == 1800 and script.size == (1280, 720)
    starts = vs._shot_starts(script)
    assert starts[-1] == 1800
    for shot in script.shots:  # the last one too: no runt at the end
        assert 2.0 - 1e-9 <= shot.seconds <= 6.0 + 1e-9
    for a, b in zip(script.shots, script.shots[1:], strict=False):
        assert a.photo != b.photo  # every cut changes the picture
    for shot in script.shots:
        pw, ph = vs._photo(shot.photo).size
        for box in (shot.start_box, shot.end_box):
            assert 0 <= box[0] < box[2] <= 1 and 0 <= box[1] < box[3] <= 1
            # Boxes have the frame's aspect ratio in pixels: no stretching.
            aspect = (box[2] - box[0]) * pw / ((box[3] - box[1]) * ph)
            assert aspect == pytest.approx(16 / 9, rel=1e-6)
    # 1 s apart within a shot: visibly moved, still mostly the same view.
    overlaps = [
        vs.box_overlap(script.source(t), script.source(t + 1))
        for t in np.arange(0.0, 59.0, 0.5)
        if script.shot_at(round(t * 30))[0] is script.shot_at(round((t + 1) * 30))[0]
    ]
    assert len(overlaps) > 50
    assert min(overlaps) > 0.6 and max(overlaps) < 0.95


def test_scripts_are_deterministic() -> None:
    assert vs.reference_scripts(3, 20, seed=9) == vs.reference_scripts(3, 20, seed=9)
    assert vs.reference_scripts(3, 20, seed=9)[2] == vs.reference_scripts(5, 20, seed=9)[2]
    assert vs.reference_scripts(1, 20, seed=9) != vs.reference_scripts(1, 20, seed=10)


def test_video_is_byte_identical_and_decodes_to_the_script() -> None:
    script = _script(4.0)
    data = vs.make_video(script)
    vs._source.cache_clear()  # a cold cache must not change a byte either
    assert vs.make_video(script) == data
    frames, w, h, fps, duration = _decode(data)
    assert (w, h) == SIZE and fps == FPS
    assert len(frames) == script.frames == 120
    assert duration == pytest.approx(4.0, abs=1 / FPS)
    for n in (0, 59, 119):
        rendered = vs.render_frame(script, n)
        assert rendered.shape == (180, 320, 3)
        assert _mae(frames[n], rendered) < 6  # only x264's loss at crf 23
    assert _mae(frames[0], frames[30]) > 2 * _mae(frames[0], vs.render_frame(script, 0))


def test_encode_rgb_frames() -> None:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (18, 32, 3)).repeat(10, axis=0).repeat(10, axis=1)
    frames = [np.roll(base, 4 * i, axis=1).astype(np.uint8) for i in range(15)]
    data = vs.encode(frames, size=SIZE, fps=15, crf=18)
    decoded, w, h, fps, duration = _decode(data)
    assert (w, h, fps, len(decoded)) == (320, 180, 15, 15)
    assert duration == pytest.approx(1.0, abs=1 / 15)
    assert _mae(decoded[7], frames[7]) < 8
    with pytest.raises(ValueError, match="shape"):
        vs.encode([base[:100].astype(np.uint8)], size=SIZE, fps=15)


def test_plain_clip_is_the_reference_window() -> None:
    script = _script()
    clip = vs.make_clip(script, 3.0, 2.0, vs.TRANSFORMS["plain"])
    frames, w, h, fps, duration = _decode(clip)
    assert (w, h, fps, len(frames)) == (320, 180, 30, 60)
    assert duration == pytest.approx(2.0, abs=1 / FPS)
    assert vs.clip_frame_indices(script, 3.0, 2.0, vs.TRANSFORMS["plain"]) == list(range(90, 150))
    assert _mae(frames[10], vs.render_frame(script, 100)) < 6
    assert _mae(frames[10], vs.render_frame(script, 130)) > 8  # 1 s off shows


@pytest.mark.parametrize(("name", "keep"), [("crop_5", 0.95), ("crop_10", 0.9), ("crop_20", 0.8)])
def test_crop_cuts_each_side(name: str, keep: float) -> None:
    script = _script()
    frames, w, h, _, _ = _decode(vs.make_clip(script, 1.0, 1.0, vs.TRANSFORMS[name]))
    assert (w, h) == vs.clip_size(script, vs.TRANSFORMS[name])
    assert w == pytest.approx(320 * keep, abs=2) and h == pytest.approx(180 * keep, abs=2)
    ref = vs.render_frame(script, 45)
    x, y = (320 - w) // 2, (180 - h) // 2
    assert _mae(frames[15], ref[y : y + h, x : x + w]) < 6
    # The same region, not the whole frame squeezed to the clip's size.
    from PIL import Image

    squeezed = np.asarray(Image.fromarray(ref).resize((w, h), Image.Resampling.BILINEAR))
    assert _mae(frames[15], squeezed) > 2 * _mae(frames[15], ref[y : y + h, x : x + w])


def test_resize_and_reencode() -> None:
    script = _script()
    small, w, h, _, _ = _decode(vs.make_clip(script, 0.0, 1.0, vs.TRANSFORMS["resize_50"]))
    assert (w, h) == (160, 90)
    from PIL import Image

    halved = np.asarray(Image.fromarray(vs.render_frame(script, 5)).resize((160, 90)))
    assert _mae(small[5], halved) < 8
    plain = vs.make_clip(script, 0.0, 1.0, vs.TRANSFORMS["plain"])
    rough = vs.make_clip(script, 0.0, 1.0, vs.TRANSFORMS["reencode_crf35"])
    assert len(rough) < len(plain) / 2
    frames, w, h, _, _ = _decode(rough)
    assert (w, h) == SIZE and _mae(frames[5], vs.render_frame(script, 5)) < 10


def test_speed_resamples_time() -> None:
    script = _script()
    fast = vs.TRANSFORMS["speed_1.1"]
    indices = vs.clip_frame_indices(script, 1.0, 10.0, fast)
    assert len(indices) == 300
    assert indices[0] == 30 and indices[-1] == 30 + 328  # 10 s of clip span 11 s of reference
    assert len(set(indices)) == 300 and max(np.diff(indices)) == 2  # frames dropped
    slow = vs.clip_frame_indices(script, 1.0, 10.0, vs.TRANSFORMS["speed_0.9"])
    assert slow[-1] == 30 + 269 and len(set(slow)) < 300  # frames repeated
    frames, _, _, _, duration = _decode(vs.make_clip(script, 1.0, 10.0, fast))
    assert len(frames) == 300 and duration == pytest.approx(10.0, abs=1 / FPS)
    assert _mae(frames[-1], vs.render_frame(script, 358)) < 6
    assert _mae(frames[-1], vs.render_frame(script, 329)) > 12  # not where speed 1 would be
    with pytest.raises(ValueError, match="overruns"):
        vs.clip_frame_indices(script, 2.0, 10.0, fast)  # 11 s from 2 s > 12 s


@pytest.mark.parametrize(
    ("name", "size", "bars"),
    [("letterbox_4x3", (320, 240), "rows"), ("vertical_9x16", (180, 320), "rows")],
)
def test_black_bars(name: str, size: tuple[int, int], bars: str) -> None:
    script = _script()
    frames, w, h, _, _ = _decode(vs.make_clip(script, 0.0, 1.0, vs.TRANSFORMS[name]))
    assert (w, h) == size
    x, y, iw, ih = vs._plan(vs.TRANSFORMS[name], SIZE).content
    assert x == 0 and iw == w  # the picture spans the width; bars above and below
    assert y / h >= 0.12
    for frame in (frames[0], frames[-1]):
        top, bottom = frame[: y - 2], frame[y + ih + 2 :]
        assert top.max() <= 24 and bottom.max() <= 24
        assert frame[y + 2 : y + ih - 2].mean() > 30  # the picture itself is not black


def test_logo_throughout() -> None:
    script = _script()
    transform = vs.TRANSFORMS["logo"]
    frames, w, h, _, _ = _decode(vs.make_clip(script, 0.0, 4.0, transform))
    plan = vs._plan(transform, SIZE)
    assert plan.logo is not None
    (ly, _, _), _, (lx, ty) = plan.logo
    lh, lw = ly.shape
    assert lw / w == pytest.approx(vs.LOGO_WIDTH, abs=0.02)
    assert lx + lw > 0.9 * w and ty < 0.1 * h  # top-right corner

    def logo_share(frame: npt.NDArray[np.uint8]) -> float:
        region = frame[ty : ty + lh, lx : lx + lw].astype(np.int16)
        near = np.abs(region - np.asarray(vs.LOGO_COLOUR)).max(axis=-1) < 40
        return float(near.mean())

    for k in (0, 60, 119):
        assert logo_share(frames[k]) > 0.4
        region = frames[k][ty : ty + lh, lx : lx + lw]
        assert (region.min(axis=-1) > 200).any()  # the white text
        assert logo_share(vs.render_frame(script, k)) < 0.1


def test_combinations() -> None:
    combo = vs.TRANSFORMS["crop_10+logo+reencode_crf35"]
    assert (combo.crop, combo.logo, combo.crf, combo.speed) == (0.05, True, 35, 1.0)
    other = vs.TRANSFORMS["letterbox_4x3+logo+speed_1.1"]
    assert (other.canvas_aspect, other.logo, other.speed) == (4 / 3, True, 1.1)
    script = _script()
    frames, w, h, _, _ = _decode(vs.make_clip(script, 0.0, 1.0, combo))
    assert (w, h) == vs.clip_size(script, combo) == (288, 164)  # cuts rounded to even
    assert len(frames) == 30


def test_box_overlap() -> None:
    a = ("moon", (0.0, 0.0, 0.5, 0.5))
    assert vs.box_overlap(a, a) == pytest.approx(1.0)
    assert vs.box_overlap(a, ("moon", (0.25, 0.0, 0.75, 0.5))) == pytest.approx(1 / 3)
    assert vs.box_overlap(a, ("coins", a[1])) == 0.0
