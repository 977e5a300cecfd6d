"""Video time alignment on hit sets simulated from a known ground truth.

Both videos are sampled at 1 fps with a random phase; a query frame inside a copied clip
hits the reference frame nearest to where it came from (and the next one too when it fell
near the middle, a little further away), as a PDQ radius search over 1 fps samples does.
"""

from __future__ import annotations

import dataclasses
import itertools
import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moderation.video_align import (
    AlignParams,
    FrameHit,
    Segment,
    align,
    align_arrays,
    extend_edges,
    segment_to_dict,
)

REF_LEN = 300.0


@dataclass(frozen=True)
class Clip:
    """Query [query_at, query_at + length) plays reference from ref_at at ``speed``."""

    query_at: float
    ref_at: float
    length: float
    speed: float = 1.0
    distances: tuple[int, int] = (0, 9)  # hit distances drawn from [lo, hi)
    drop: float = 0.0  # share of inner frames without a hit (logo, overlays)

    @property
    def ref_end(self) -> float:
        return self.ref_at + self.speed * self.length


@dataclass
class Sim:
    hits: list[FrameHit]
    query_times: list[float]


def simulate(
    seed: int,
    clips: Sequence[Clip],
    *,
    query_len: float = 60.0,
    ref_len: float = REF_LEN,
    noise: int = 0,
    static: Sequence[tuple[float, float]] = (),
    scene_cuts: int = 0,
) -> Sim:
    """Hits of a query made of ``clips`` against a reference, plus ``noise`` random hits.

    ``static`` lists reference intervals that are one held shot: a query frame landing in
    one hits every reference frame of it. ``scene_cuts`` adds off-grid query samples.
    """
    rng = np.random.default_rng(seed)
    qt = np.arange(rng.uniform(0, 1), query_len, 1.0)
    if scene_cuts:
        qt = np.unique(np.concatenate([qt, rng.uniform(0, query_len, scene_cuts)]))
    rt = np.arange(rng.uniform(0, 1), ref_len, 1.0)
    hits: list[FrameHit] = []
    for clip in clips:
        lo, hi = clip.distances
        inside = qt[(qt >= clip.query_at) & (qt < clip.query_at + clip.length)]
        for i, t in enumerate(inside):
            # The clip's first and last frames keep their hits so that its true
            # boundaries are observable at all.
            if 0 < i < inside.size - 1 and rng.random() < clip.drop:
                continue
            x = clip.ref_at + clip.speed * (t - clip.query_at)
            j = int(np.argmin(np.abs(rt - x)))
            shot = next(((a, b) for a, b in static if a <= rt[j] < b), None)
            if shot is not None:
                for r in rt[(rt >= shot[0]) & (rt < shot[1])]:
                    hits.append(FrameHit(float(t), float(r), int(rng.integers(lo, hi))))
                continue
            d = int(rng.integers(lo, hi))
            hits.append(FrameHit(float(t), float(rt[j]), d))
            if abs(x - rt[j]) > 0.3:
                k = j + (1 if x > rt[j] else -1)
                if 0 <= k < rt.size:
                    hits.append(FrameHit(float(t), float(rt[k]), min(31, d + 4)))
    for _ in range(noise):
        hits.append(
            FrameHit(float(rng.choice(qt)), float(rng.choice(rt)), int(rng.integers(0, 32)))
        )
    hits.sort(key=lambda h: h.query_t)
    return Sim(hits, qt.tolist())


def run(sim: Sim, params: AlignParams = AlignParams()) -> list[Segment]:
    return align(sim.hits, sim.query_times, params, ref_duration=REF_LEN)


def assert_matches(seg: Segment, clip: Clip, *, tol_s: float = 1.0, speed_tol: float) -> None:
    assert abs(seg.query_start - clip.query_at) <= tol_s, (seg, clip)
    assert abs(seg.query_end - (clip.query_at + clip.length)) <= tol_s, (seg, clip)
    assert abs(seg.ref_start - clip.ref_at) <= tol_s, (seg, clip)
    assert abs(seg.ref_end - clip.ref_end) <= tol_s, (seg, clip)
    assert abs(seg.speed - clip.speed) <= speed_tol, (seg, clip)


def speed_tol(length: float) -> float:
    # At 1 fps a 10 s clip pins its slope only to about one sample over ten seconds.
    return 0.02 if length >= 20 else 0.05


@pytest.mark.parametrize("length", [10.0, 20.0, 30.0])
@pytest.mark.parametrize("speed", [0.9, 1.0, 1.1])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_clip_cut_from_anywhere_in_the_reference(length: float, speed: float, seed: int) -> None:
    ref_at = [3.2, 141.7, REF_LEN - 1.0 - speed * length][seed]
    clip = Clip(query_at=12.6 + 5 * seed, ref_at=ref_at, length=length, speed=speed)
    segs = run(simulate(seed, [clip]))
    assert len(segs) == 1
    assert_matches(segs[0], clip, speed_tol=speed_tol(length))
    assert segs[0].score > 0.8
    assert segs[0].frames >= length - 1


@pytest.mark.parametrize("length", [10.0, 20.0, 30.0])
@pytest.mark.parametrize("speed", [0.9, 1.0, 1.1])
@pytest.mark.parametrize("seed", [3, 4])
def test_degraded_clip_with_missing_hits_and_noise(length: float, speed: float, seed: int) -> None:
    clip = Clip(17.3, 77.7 + 20 * seed, length, speed, distances=(4, 22), drop=0.2)
    segs = run(simulate(seed, [clip], noise=30, scene_cuts=6))
    assert len(segs) == 1
    assert_matches(segs[0], clip, speed_tol=speed_tol(length) + 0.01)


def test_boundaries_hold_under_heavier_noise_in_most_trials() -> None:
    """Two noise hits per query frame: a stray one on the line by a clip's end is rare."""
    within = found = 0
    for seed in range(40):
        clip = Clip(17.3 + seed % 5, 50.0 + 4 * seed, 20.0, (0.9, 1.0, 1.1)[seed % 3], drop=0.2)
        segs = run(simulate(100 + seed, [clip], noise=120))
        found += len(segs) == 1
        if len(segs) == 1:
            try:
                assert_matches(segs[0], clip, speed_tol=0.03)
                within += 1
            except AssertionError:
                # Never by more than a gap a run may bridge.
                assert_matches(segs[0], clip, tol_s=AlignParams().max_gap_s + 1, speed_tol=0.05)
    assert found == 40
    assert within >= 36


def test_long_sped_up_clip_is_one_segment() -> None:
    clip = Clip(40.3, 20.0, 250.0, 1.08, drop=0.2)
    segs = run(simulate(5, [clip], query_len=300.0, noise=150))
    assert len(segs) == 1
    assert_matches(segs[0], clip, speed_tol=0.005)


def test_static_shot_hits_many_reference_frames() -> None:
    # The reference holds one shot from 100 s to 112 s; the query's frames in it hit all
    # twelve of its frames, i.e. twelve different offsets each.
    clip = Clip(10.4, 90.0, 30.0)
    sim = simulate(6, [clip], static=[(100.0, 112.0)], noise=20)
    assert sum(1 for h in sim.hits if 100 <= h.ref_t < 112) > 100
    segs = run(sim)
    assert len(segs) == 1
    assert_matches(segs[0], clip, speed_tol=0.02)


def test_clip_that_is_one_static_shot_is_reported_consistently() -> None:
    clip = Clip(10.4, 100.0, 12.0)
    sim = simulate(7, [clip], static=[(100.0, 112.0)])
    first = run(sim)
    assert len(first) == 1
    seg = first[0]
    # Any alignment inside the held shot is as good as any other; the query side is exact
    # and the reference side stays within the shot.
    assert abs(seg.query_start - clip.query_at) <= 1 and abs(seg.query_end - 22.4) <= 1
    assert seg.ref_start >= 99 and seg.ref_end <= 113
    shuffled = list(sim.hits)
    random.Random(0).shuffle(shuffled)
    assert align(shuffled, sim.query_times, ref_duration=REF_LEN) == first


def test_repeated_content_reports_the_closer_occurrence() -> None:
    # The same 20 s appear at 40 s and at 200 s of the reference; the copy is of the second.
    near = Clip(20.0, 200.0, 20.0, distances=(0, 6))
    far = dataclasses.replace(near, ref_at=40.0, distances=(12, 20))
    segs = run(simulate(8, [far, near]))
    assert len(segs) == 1
    assert_matches(segs[0], near, speed_tol=0.02)


def test_repeated_content_tie_goes_to_the_earlier_occurrence_whatever_the_order() -> None:
    late = Clip(20.0, 200.0, 20.0, distances=(3, 4))
    early = dataclasses.replace(late, ref_at=40.0)
    sim = simulate(9, [late, early])
    expected = run(sim)
    assert len(expected) == 1
    assert_matches(expected[0], early, speed_tol=0.02)
    for seed in range(3):
        shuffled = list(sim.hits)
        random.Random(seed).shuffle(shuffled)
        assert align(shuffled, sim.query_times, ref_duration=REF_LEN) == expected


def test_two_clips_of_the_same_reference_are_two_segments() -> None:
    a = Clip(5.5, 200.0, 20.0, 1.0, distances=(0, 6))
    b = Clip(40.2, 30.0, 15.0, 0.95, distances=(8, 20), drop=0.2)
    segs = run(simulate(10, [a, b], noise=30))
    assert len(segs) == 2
    assert segs[0].score >= segs[1].score
    first, second = sorted(segs, key=lambda s: s.query_start)
    assert_matches(first, a, speed_tol=0.02)
    assert_matches(second, b, speed_tol=0.05)


def test_back_to_back_clips_split_at_the_cut() -> None:
    a = Clip(10.0, 150.0, 20.0)
    b = Clip(30.0, 60.0, 20.0)
    segs = sorted(run(simulate(11, [a, b])), key=lambda s: s.query_start)
    assert len(segs) == 2
    assert_matches(segs[0], a, speed_tol=0.02)
    assert_matches(segs[1], b, speed_tol=0.02)
    assert segs[0].query_end <= segs[1].query_start


def test_reversed_clip_is_not_a_match() -> None:
    clip = Clip(10.0, 100.0, 30.0)
    sim = simulate(12, [clip])
    reversed_hits = [dataclasses.replace(h, ref_t=230.0 - h.ref_t) for h in sim.hits]
    assert run(simulate(12, [clip]))  # the same hits in order do match
    assert align(reversed_hits, sim.query_times, ref_duration=REF_LEN) == []


@pytest.mark.parametrize("seed", [13, 14, 15])
def test_shuffled_frames_are_not_a_match(seed: int) -> None:
    sim = simulate(seed, [Clip(10.0, 100.0, 40.0)])
    rng = np.random.default_rng(seed)
    times = sorted({h.query_t for h in sim.hits})
    perm = dict(zip(times, rng.permutation(times).tolist(), strict=True))
    shuffled = [dataclasses.replace(h, query_t=perm[h.query_t]) for h in sim.hits]
    assert align(shuffled, sim.query_times, ref_duration=REF_LEN) == []


@pytest.mark.parametrize("seed", range(5))
def test_pure_noise_yields_nothing(seed: int) -> None:
    # 10,000 hits scattered over a 600 s query x 300 s reference, distances anywhere in
    # the radius: ~17 hits per query frame, no time-coherent run.
    rng = np.random.default_rng(seed)
    query_times = np.arange(600) + rng.uniform(0, 1)
    ref_times = np.arange(300) + rng.uniform(0, 1)
    q = np.sort(rng.choice(query_times, 10_000))
    r = rng.choice(ref_times, 10_000)
    d = rng.integers(0, 32, 10_000)
    assert align_arrays(q, r, d, query_times, ref_duration=REF_LEN) == []
    # Even with no minimum length the chance model alone rejects every run.
    loose = AlignParams(min_duration_s=0.0, min_frames=2, max_false_alarms=0.5)
    assert align_arrays(q, r, d, query_times, loose, ref_duration=REF_LEN) == []


def test_noise_does_not_hide_a_clean_clip() -> None:
    clip = Clip(200.3, 150.0, 15.0)
    sim = simulate(16, [clip], query_len=600.0, noise=3000)
    segs = run(sim)
    assert len(segs) == 1
    assert_matches(segs[0], clip, speed_tol=0.05)


def test_short_clips_are_not_reported() -> None:
    assert run(simulate(17, [Clip(10.0, 100.0, 4.0)])) == []
    six = simulate(17, [Clip(10.0, 100.0, 6.0)])
    assert len(run(six)) == 1  # found at the default 5 s minimum ...
    assert run(six, AlignParams(min_duration_s=8.0)) == []  # ... and cut by the rule alone


def test_scores_rank_clean_above_degraded() -> None:
    clean = Clip(10.0, 100.0, 20.0, distances=(0, 4))
    degraded = dataclasses.replace(clean, distances=(10, 22), drop=0.2)
    marginal = dataclasses.replace(clean, distances=(26, 32), drop=0.2)
    scores = []
    for c in (clean, degraded, marginal):
        segs = run(simulate(18, [c]))
        assert len(segs) == 1  # hits near the threshold still align
        assert_matches(segs[0], c, speed_tol=0.02)
        scores.append(segs[0].score)
    assert 1.0 >= scores[0] > 0.85
    assert scores[0] > scores[1] > scores[2] > 0.0
    assert scores[2] < 0.2


def test_frames_that_hit_everything_neither_support_nor_split_a_run() -> None:
    clip = Clip(10.0, 50.0, 60.0)
    sim = simulate(19, [clip], query_len=90.0)
    # Ten seconds of black in the middle of the query match every black reference frame,
    # and there are black frames all over the reference.
    hits = [h for h in sim.hits if not 35 <= h.query_t < 45]
    for t in sim.query_times:
        if 35 <= t < 45:
            hits += [FrameHit(t, float(r), 0) for r in np.arange(0.5, REF_LEN, 1.0)]
    segs = align(hits, sim.query_times, ref_duration=REF_LEN)
    assert len(segs) == 1
    assert_matches(segs[0], clip, speed_tol=0.02)
    assert segs[0].frames < 55  # the black frames are not counted as support


def test_hit_order_and_extra_query_times_do_not_matter() -> None:
    sim = simulate(20, [Clip(10.0, 100.0, 20.0, 1.05, drop=0.2)], noise=30)
    expected = run(sim)
    assert len(expected) == 1
    shuffled = list(sim.hits)
    random.Random(1).shuffle(shuffled)
    assert align(shuffled, sim.query_times, ref_duration=REF_LEN) == expected
    q = np.array([h.query_t for h in sim.hits])
    r = np.array([h.ref_t for h in sim.hits])
    d = np.array([h.distance for h in sim.hits])
    assert align_arrays(q, r, d, sim.query_times, ref_duration=REF_LEN) == expected


def test_reference_duration_is_optional_but_short_clips_need_it() -> None:
    clip = Clip(10.0, 100.0, 15.0, 0.95)
    sim = simulate(21, [clip])
    segs = align(sim.hits, sim.query_times)
    assert len(segs) == 1
    assert_matches(segs[0], clip, speed_tol=0.05)
    # Hits spanning 10 s are all that is known of the reference without its duration:
    # ten frames in line inside it are not unlikely enough by chance.
    short = simulate(21, [Clip(10.0, 100.0, 10.0)])
    assert align(short.hits, short.query_times) == []
    assert len(align(short.hits, short.query_times, ref_duration=REF_LEN)) == 1


def test_empty_and_degenerate_inputs() -> None:
    assert align([], []) == []
    assert align([FrameHit(1.0, 2.0, 0)], [1.0]) == []
    assert align([FrameHit(float("nan"), 2.0, 0), FrameHit(1.0, float("inf"), 0)], []) == []
    far = [FrameHit(float(t), float(t), 99) for t in range(30)]  # beyond the radius
    assert align(far, list(range(30))) == []


def test_segment_to_dict() -> None:
    seg = Segment(1.23456, 20.0, 100.0004, 118.9996, 0.87654, 19, 1.0499, 12.0)
    assert segment_to_dict(seg) == {
        "query_start": 1.235,
        "query_end": 20.0,
        "reference_start": 100.0,
        "reference_end": 119.0,
        "score": 0.877,
    }


def test_invalid_input_is_refused() -> None:
    with pytest.raises(ValueError, match="max_speed_dev"):
        AlignParams(max_speed_dev=1.5)
    with pytest.raises(ValueError, match="min_frames"):
        AlignParams(min_frames=1)
    with pytest.raises(ValueError, match="same length"):
        align_arrays([1.0, 2.0], [1.0], [0, 0], [1.0, 2.0])


@settings(max_examples=60, deadline=None)
@given(
    length=st.floats(10, 40),
    speed=st.floats(0.9, 1.1),
    query_at=st.floats(1, 50),
    ref_frac=st.floats(0, 1),
    seed=st.integers(0, 2**16),
)
def test_any_clean_clip_is_found(
    length: float, speed: float, query_at: float, ref_frac: float, seed: int
) -> None:
    """Anywhere in the reference, right up to its ends, at any allowed speed."""
    clip = Clip(query_at, ref_frac * (REF_LEN - 1.0 - speed * length), length, speed, (0, 22))
    segs = run(simulate(seed, [clip], query_len=query_at + length + 10))
    assert len(segs) == 1
    # Nearest-sample hits pin the slope only to about a sample over the clip's length.
    assert_matches(segs[0], clip, speed_tol=1.0 / (length - 1.0) + 0.01)


times = st.floats(-50, 700, allow_nan=False)
odd_times = times | st.sampled_from([float("nan"), float("inf"), -float("inf"), 1e300])
hit_lists = st.lists(st.builds(FrameHit, odd_times, odd_times, st.integers(-3, 300)), max_size=300)
structured = st.lists(  # runs of hits along random lines, so segments do come out
    st.tuples(
        times,
        st.floats(-50, 350),
        st.floats(0.8, 1.2),
        st.integers(0, 40),
        st.floats(0.0, 1.5),
    ),
    max_size=4,
)


@settings(max_examples=150, deadline=None)
@given(hits=hit_lists, lines=structured, query_times=st.lists(odd_times, max_size=80))
def test_align_never_raises_and_returns_sane_segments(
    hits: list[FrameHit],
    lines: list[tuple[float, float, float, int, float]],
    query_times: list[float],
) -> None:
    for q0, r0, speed, n, jitter in lines:
        hits += [
            FrameHit(q0 + i, r0 + speed * i + jitter * ((i * 7) % 3 - 1), i % 20) for i in range(n)
        ]
    params = AlignParams()
    segs = align(hits, query_times, params)
    finite = [t for t in query_times if np.isfinite(t) and abs(t) <= 1e7]
    finite += [
        h.query_t
        for h in hits
        if np.isfinite(h.query_t) and np.isfinite(h.ref_t) and abs(h.query_t) <= 1e7
    ]
    for seg in segs:
        assert min(finite) <= seg.query_start < seg.query_end <= max(finite)
        assert seg.query_end - seg.query_start >= params.min_duration_s
        assert 0.0 <= seg.score <= 1.0
        assert seg.frames >= params.min_frames
        assert abs(seg.speed - 1.0) <= params.max_speed_dev + 1e-9
        assert np.isfinite([seg.ref_start, seg.ref_end, seg.significance]).all()
    assert [s.score for s in segs] == sorted((s.score for s in segs), reverse=True)
    spans = sorted((s.query_start, s.query_end) for s in segs)
    assert all(a[1] <= b[0] + 1e-9 for a, b in itertools.pairwise(spans))


# --- extending a found segment's ends ---------------------------------------------------


def edge_case() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Query 0..19 s at 1 fps, reference 0..59.75 s at 4 fps; the query plays the
    reference from 20 s. Copied frames 5..14 are close (d 40); 2..4 and 15..16 drifted to
    d 105 (low-detail shot edges); 0, 1 and 17..19 are unrelated (d 128)."""
    qt = np.arange(20, dtype=np.float64)
    rt = np.arange(240, dtype=np.float64) / 4
    dist = np.full((qt.size, rt.size), 128, dtype=np.int32)
    for i, d in [
        *((i, 40) for i in range(5, 15)),
        (2, 105),
        (3, 105),
        (4, 105),
        (15, 105),
        (16, 105),
    ]:
        dist[i, np.abs(rt - (20 + i)) <= 0.25] = d
    return qt, rt, dist


FOUND = Segment(5.0, 14.0, 25.0, 34.0, score=0.6, frames=10, speed=1.0, significance=5.0)


def test_ends_extend_over_neighbours_within_the_looser_radius() -> None:
    qt, rt, dist = edge_case()
    (seg,) = extend_edges([FOUND], qt, rt, dist, radius=110, jitter_s=0.5, ref_duration=60.0)
    assert (seg.query_start, seg.query_end) == (2.0, 16.0)
    assert (seg.ref_start, seg.ref_end) == (22.0, 36.0)
    assert (seg.score, seg.frames, seg.significance) == (0.6, 10, 5.0)


def test_ends_stay_when_neighbours_are_beyond_the_radius() -> None:
    qt, rt, dist = edge_case()
    (seg,) = extend_edges([FOUND], qt, rt, dist, radius=100, jitter_s=0.5, ref_duration=60.0)
    assert seg == FOUND


def test_an_end_stops_at_another_segment_and_at_the_reference_end() -> None:
    qt, rt, dist = edge_case()
    other = Segment(15.5, 19.0, 0.0, 3.5, score=0.5, frames=4, speed=1.0)
    out = extend_edges([FOUND, other], qt, rt, dist, radius=110, jitter_s=0.5, ref_duration=60.0)
    assert (out[0].query_start, out[0].query_end) == (2.0, 15.0)
    (seg,) = extend_edges([FOUND], qt, rt, dist, radius=110, jitter_s=0.5, ref_duration=35.5)
    assert seg.query_end == 15.0 and seg.ref_end == 35.0
