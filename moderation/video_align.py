"""Time alignment of frame-level PDQ hits between a query video and one reference video.

Both videos are sampled at about 1 fps (plus scene-change frames) and every sampled frame
carries a PDQ hash; a Hamming-radius search elsewhere returns the hits, points
(query_t, ref_t). A copied clip is a run of hits along a line ``ref_t = a*query_t + b``
with ``a`` within ``max_speed_dev`` of 1; everything else is scatter. :func:`align` finds
those runs and reports them as segments, best score first, disjoint in query time.

Method. Every hit votes into one coarse grid of (10 s query window, 1 s offset
``ref_t - query_t``) cells, weighted by how much its query frame can prove (below); the
strongest cells seed lines. A seed gets a small local Hough transform over a handful of
slopes, then grows along the query in doubling steps: a weighted least-squares line, slope
clamped to the allowed speeds, is refitted as it goes, each query frame contributes only its
hit closest to the line and within ``jitter_s`` of it, and growth stops at a gap longer than
``max_gap_s``. We chose this over a global slope x offset Hough transform or a longest
monotone chain by dynamic programming because the cost follows the hits near real matches:
the global pass is one ``bincount``, band queries are binary searches on a sorted
(frame, ref_t) key, and a sped-up clip, which smears across offset bins in any fixed-slope
histogram, is followed by the refitted line instead of chased hit by hit (DP is quadratic in
the hits, and a held shot alone makes hundreds of them per frame). Frames inside a held shot
fit any line through it, so they all but drop out of the fit and their hits share one vote.

No chance matches. Single frames of unrelated videos collide; a time-coherent run must not
arise by chance. Every run is judged *a contrario* (Desolneux, Moisan & Morel). The hits of
query frame ``i``, widened by the band (``jitter_s`` plus half a sample each side), cover
some stretch of the reference; were they scattered at random, a given line would meet them
with probability ``p_i`` = that stretch / the reference's duration: near 0 for a frame with
one or two hits, near 1 for black frames, title cards or held shots that hit everything
(frames above 1/2 are ignored outright, neither supporting nor breaking a run). A run with
``k`` supported frames among the ``n`` it spans has chance probability at most
``C(n, k) * prod(p_i)``; times ``N``, the runs one could have tried (every start and end
frame pair, every offset and slope the band tells apart), it is the expected number of
chance runs as good (NFA), which must stay below ``max_false_alarms`` (1e-3 per query x
reference pair); ``significance`` is ``-log10 NFA``. ``N`` deliberately over-counts: with
no length minimum, the best chance run in 30 trials of uniform random hits had NFA >= 400
(10,000 hits over 600 s x 300 s) and >= 10 (600 hits over 60 s x 300 s), 4 to 5.6 decades
short of the threshold. ``min_frames`` and ``min_duration_s`` come on top. Distances do
not enter the test, so a copy whose hits all sit near the threshold is still found; they
only decide, at a run's ends, whether a stray hit after a gap belongs (against the run's
own distances), and they set the score: the mean of ``1 - d / (threshold + 1)`` over the
query frames spanned, 0 for frames without a hit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, overload

import numpy as np
import numpy.typing as npt

__all__ = [
    "AlignParams",
    "FrameHit",
    "Segment",
    "align",
    "align_arrays",
    "extend_edges",
    "segment_to_dict",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]
BoolArray = npt.NDArray[np.bool_]

_WINDOW_S = 10.0  # query seconds per voting window; a seed spans two
_BIN_S = 1.0  # offset bin of the voting grid, about the sampling jitter
_MAX_CELLS = 1 << 21  # of the vote grid (16 MB of float64)
_PAD_BINS = 2  # empty bins closing each window's row of the grid (the widest box is +-2)
_MAX_TRIED = 48  # seeds examined per call (covered cells are skipped for free)
_MAX_FRUITLESS = 6  # consecutive seeds finding nothing new that end the search
_RIVAL_VOTES = 0.5  # a seed inside a found match is skipped below this share of its votes
_MAX_SLOPE_STEPS = 12  # per side in a seed's local Hough transform
_MAX_ABS_T = 1e7  # seconds (~115 days): anything beyond is not a video timestamp
_MAX_FOOTPRINT_CELLS = 1 << 23  # query frames x reference samples, bools
_MAX_FRAME_CHANCE = 0.5  # frames more likely than this to hit any given line are ignored
_TRIM_FRAMES = 8  # supported frames a run's ends may lose to trimming
_MAX_CHUNK_S = 160.0  # longest growth step; longer extrapolations are not trusted
_HELD_WEIGHT = 1e-3  # fit weight of a frame inside a held shot, relative to a plain one
_SMOOTH = np.array([1.0, 2.0, 3.0, 2.0, 1.0]) / 9.0  # kernel over a run's hit distances
_EMPTY = np.empty(0, dtype=np.intp)
_LN10 = math.log(10.0)


@dataclass(frozen=True)
class FrameHit:
    """One query frame found within the search radius of one reference frame."""

    query_t: float  # seconds in the query
    ref_t: float  # seconds in the reference
    distance: int  # PDQ Hamming distance 0..256


@dataclass(frozen=True)
class Segment:
    """Query ``[query_start, query_end]`` plays reference ``[ref_start, ref_end]``."""

    query_start: float
    query_end: float
    ref_start: float
    ref_end: float
    score: float  # 0..1: mean match quality over the query frames spanned
    frames: int  # query frames with a supporting hit
    speed: float  # reference seconds per query second
    significance: float = 0.0  # -log10 of the expected number of chance runs this good


@dataclass(frozen=True)
class AlignParams:
    """Tuning of :func:`align`; the defaults fit ~1 fps sampling on both sides."""

    min_duration_s: float = 5.0  # shorter matched runs are not reported
    min_frames: int = 4
    max_speed_dev: float = 0.12  # |speed - 1| allowed; 10 % speed changes must be found
    max_gap_s: float = 4.0  # a run may go this long without hits (logo overlay, cuts)
    threshold: int = 31  # radius the hits were searched with; scores distances against it
    jitter_s: float = 1.0  # max |ref_t - line| for a supporting hit (nearest-frame rounding)
    sample_interval_s: float = 1.0  # nominal sampling interval of both videos
    max_false_alarms: float = 1e-3  # expected chance segments per query x reference pair

    def __post_init__(self) -> None:
        if not self.min_duration_s >= 0:
            raise ValueError("min_duration_s must be >= 0")
        if self.min_frames < 2:
            raise ValueError("min_frames must be >= 2 (a line needs two points)")
        if not 0 <= self.max_speed_dev < 1:
            raise ValueError("max_speed_dev must be in [0, 1)")
        if not self.max_gap_s > 0:
            raise ValueError("max_gap_s must be > 0")
        if not 0 <= self.threshold <= 256:
            raise ValueError("threshold must be in 0..256")
        if not self.jitter_s > 0:
            raise ValueError("jitter_s must be > 0")
        if not self.sample_interval_s > 0:
            raise ValueError("sample_interval_s must be > 0")
        if not 0 < self.max_false_alarms < 1:
            raise ValueError("max_false_alarms must be in (0, 1)")


@dataclass(frozen=True)
class _Line:
    """``ref_t = rc + a * (query_t - qc)``: anchored at the data so slope and offset decouple."""

    qc: float
    rc: float
    a: float

    def at(self, t: float) -> float:
        return self.rc + self.a * (t - self.qc)


@dataclass(frozen=True)
class _Hits:
    """Hits sorted by query frame, with what every stage needs precomputed."""

    q: FloatArray
    r: FloatArray
    d: FloatArray
    frame: IntArray  # query frame of each hit
    key: FloatArray  # frame * key_scale + ref_t - key_zero: sorted, frames never interleave
    key_scale: float
    key_zero: float
    vote: FloatArray  # the hit's share of its query frame's evidence (-log10 p)
    timeline: FloatArray  # every query frame time, sorted and distinct
    clock: FloatArray  # per frame: query time not spent in vague frames (gaps are measured on it)
    informative: IntArray  # per frame: non-vague frames up to and including it
    log_p: FloatArray  # per frame: log10 chance that some hit lands near a given line
    log_fact: FloatArray  # log10(n!) for n up to the number of query frames
    ref_span: float
    radius: float  # threshold + 1: a hit's quality is 1 - d / radius, in (0, 1]
    sampling_var: float  # of a hit's ref_t about the true time: rounding to a sample
    interval: float  # nominal sampling interval
    edge_lo: float  # ref_t within a sample of the reference's start or end
    edge_hi: float
    r_min: float  # bounds of the hits' ref_t
    r_max: float
    ref_lo: float  # bounds for reported reference times
    ref_hi: float


@dataclass(frozen=True)
class _Run:
    """Supported query frames in time order: frame index, best hit, ref time to fit."""

    frames: IntArray
    hits: IntArray
    ref: FloatArray  # quality-weighted mean ref_t of the frame's hits in the band
    weight: FloatArray  # in the line fit: hit quality over the variance of its position

    def __len__(self) -> int:
        return int(self.frames.size)

    def __getitem__(self, key: slice | IntArray) -> _Run:
        return _Run(self.frames[key], self.hits[key], self.ref[key], self.weight[key])

    def then(self, other: _Run) -> _Run:
        return _Run(
            np.concatenate((self.frames, other.frames)),
            np.concatenate((self.hits, other.hits)),
            np.concatenate((self.ref, other.ref)),
            np.concatenate((self.weight, other.weight)),
        )


_NO_RUN = _Run(_EMPTY, _EMPTY, np.empty(0), np.empty(0))


@dataclass(frozen=True)
class _Candidate:
    run: _Run
    segment: Segment


def align(
    hits: Sequence[FrameHit],
    query_times: Sequence[float],
    params: AlignParams = AlignParams(),
    *,
    ref_duration: float | None = None,
) -> list[Segment]:
    """Matched segments of the query against one reference, best score first.

    Pass ``ref_duration`` (seconds): without it the span of the hits stands in for the
    reference's length, a lower bound that makes a short clip of a long reference, hit
    nowhere else, too likely by chance to report (a 10 s clip needs the real duration).
    """
    n = len(hits)
    q = np.fromiter((h.query_t for h in hits), dtype=np.float64, count=n)
    r = np.fromiter((h.ref_t for h in hits), dtype=np.float64, count=n)
    d = np.fromiter((h.distance for h in hits), dtype=np.float64, count=n)
    return align_arrays(q, r, d, query_times, params, ref_duration=ref_duration)


def align_arrays(
    query_t: npt.ArrayLike,
    ref_t: npt.ArrayLike,
    distance: npt.ArrayLike,
    query_times: npt.ArrayLike,
    params: AlignParams = AlignParams(),
    *,
    ref_duration: float | None = None,
) -> list[Segment]:
    """:func:`align` on parallel arrays, as a vectorised search produces them (no objects)."""
    q = np.asarray(query_t, dtype=np.float64).ravel()
    r = np.asarray(ref_t, dtype=np.float64).ravel()
    d = np.asarray(distance, dtype=np.float64).ravel()
    if not q.size == r.size == d.size:
        raise ValueError("query_t, ref_t and distance must have the same length")
    h = _prepare(q, r, d, np.asarray(query_times, dtype=np.float64).ravel(), params, ref_duration)
    if h is None:
        return []
    return _select(h, params, _candidates(h, params))


def segment_to_dict(seg: Segment) -> dict[str, float]:
    """The public JSON form (verdicts, ``moderation match``): seconds in the upload and in
    the reference, rounded to milliseconds, and the score to 3 places."""
    return {
        "query_start": round(seg.query_start, 3),
        "query_end": round(seg.query_end, 3),
        "reference_start": round(seg.ref_start, 3),
        "reference_end": round(seg.ref_end, 3),
        "score": round(seg.score, 3),
    }


def _prepare(
    q: FloatArray,
    r: FloatArray,
    d: FloatArray,
    query_times: FloatArray,
    p: AlignParams,
    ref_duration: float | None,
) -> _Hits | None:
    # Every pass over the hits counts at 10^5 of them, hence the fast paths.
    if q.size and not (_plausible(q) and _plausible(r) and 0 <= d.min() <= d.max() <= p.threshold):
        keep = np.isfinite(q) & np.isfinite(r) & (np.abs(q) <= _MAX_ABS_T)
        keep &= (np.abs(r) <= _MAX_ABS_T) & (d >= 0) & (d <= p.threshold)
        q, r, d = q[keep], r[keep], d[keep]
    if q.size < 2:
        return None
    # Searches emit hits frame by frame, so this sort is normally skipped.
    if (q[1:] < q[:-1]).any():
        order = np.argsort(q, kind="stable")
        q, r, d = q[order], r[order], d[order]
    new = np.empty(q.size, dtype=np.bool_)
    new[0] = True
    np.not_equal(q[1:], q[:-1], out=new[1:])
    heads = np.flatnonzero(new)  # first hit of each distinct query time
    sizes = np.diff(heads, append=q.size)
    qt = query_times[np.isfinite(query_times) & (np.abs(query_times) <= _MAX_ABS_T)]
    # Hits may name frames missing from query_times; they are frames all the same.
    timeline = np.union1d(qt, q[heads])
    where = np.searchsorted(timeline, q[heads])
    frame = np.repeat(where, sizes)
    counts = np.zeros(timeline.size, dtype=np.intp)
    counts[where] = sizes

    r_min, r_max = float(r.min()), float(r.max())
    ref_lo, ref_hi = r_min, r_max + p.sample_interval_s
    span = ref_hi - ref_lo
    ref_end = math.inf
    if ref_duration is not None and math.isfinite(ref_duration) and ref_duration > 0:
        span = max(span, float(ref_duration))
        ref_hi = ref_end = max(r_max, float(ref_duration))
    width = 2.0 * p.jitter_s + p.sample_interval_s
    span = max(span, width)
    # One sorted key over (frame, ref_t) turns every band query into binary searches; a
    # search that lists each frame's hits in reference order (most do) needs no sort. Rows
    # of whole samples, with room for the band at both ends, double as the footprint grid.
    g = p.sample_interval_s
    reach = math.ceil(p.jitter_s / g)
    key_scale = g * (math.floor((r_max - r_min) / g) + 2 * reach + 2)
    key: FloatArray = np.multiply(frame, key_scale, dtype=np.float64)
    key += r
    key -= r_min - reach * g
    footprint = _footprint(key, counts, key_scale, reach, p)
    chance = np.minimum(footprint / span, 1.0)
    # A frame whose hits reach most of the reference (black frames, a title card, a shot
    # held all video long) fits any line: it is no evidence, only work, so drop its hits.
    # It neither supports a run nor breaks it: gaps and frame counts skip it.
    vague = chance > _MAX_FRAME_CHANCE
    step = np.diff(timeline, prepend=timeline[0])
    clock = timeline - np.cumsum(np.where(vague, step, 0.0))
    informative = np.cumsum(~vague).astype(np.intp)
    if vague.any():
        keep = ~vague[frame]
        q, r, d, frame, key = q[keep], r[keep], d[keep], frame[keep], key[keep]
        counts[vague] = 0
        if q.size < 2:
            return None
    if (key[1:] < key[:-1]).any():
        order = np.argsort(key, kind="stable")
        q, r, d, frame, key = q[order], r[order], d[order], frame[order], key[order]
    log_p = np.zeros(timeline.size)
    np.log10(chance, out=log_p, where=counts > 0)
    # Votes: a frame's evidence shared among its hits as far as they overlap, so a static
    # shot's hundred hits add up to one frame's worth in any cell instead of a hundred.
    share = np.divide(footprint, counts * width, out=np.zeros(timeline.size), where=counts > 0)
    log_fact = np.zeros(timeline.size + 2)
    np.cumsum(np.log10(np.arange(1, timeline.size + 2)), out=log_fact[1:])
    return _Hits(
        q=q,
        r=r,
        d=d,
        frame=frame,
        key=key,
        key_scale=key_scale,
        key_zero=r_min - reach * g,
        vote=np.repeat(-log_p * share, counts),
        timeline=timeline,
        clock=clock,
        informative=informative,
        log_p=log_p,
        log_fact=log_fact,
        ref_span=span,
        radius=p.threshold + 1.0,
        sampling_var=p.sample_interval_s**2 / 12.0,
        interval=p.sample_interval_s,
        edge_lo=p.sample_interval_s,
        edge_hi=ref_end - p.sample_interval_s,
        r_min=r_min,
        r_max=r_max,
        ref_lo=min(0.0, ref_lo),
        ref_hi=ref_hi,
    )


def _plausible(t: FloatArray) -> bool:
    """All finite and within ``_MAX_ABS_T``, in two reductions (NaN fails both)."""
    return bool(t.min() >= -_MAX_ABS_T and t.max() <= _MAX_ABS_T)


def _footprint(
    key: FloatArray, counts: IntArray, key_scale: float, reach: int, p: AlignParams
) -> FloatArray:
    """Per query frame, the reference time within reach of a line's band around its hits.

    A line passing anywhere in it collects a hit, so footprint / duration is the chance.
    Hits on neighbouring reference frames (a static shot) share most of theirs; on a grid of
    sampled frames the band reaches ``jitter_s`` plus half a sample each side of a hit.
    """
    g = p.sample_interval_s
    width = round(key_scale / g)
    if counts.size * width > _MAX_FOOTPRINT_CELLS:
        return (counts * (2.0 * p.jitter_s + g)).astype(np.float64)  # no sharing assumed
    flat = np.zeros(counts.size * width, dtype=np.bool_)
    flat[(key * (1.0 / g)).astype(np.intp)] = True
    occupied = flat.reshape(counts.size, width)
    within = occupied.copy()
    for shift in range(1, reach + 1):
        within[:, shift:] |= occupied[:, :-shift]
        within[:, :-shift] |= occupied[:, shift:]
    return np.asarray(within.sum(axis=1) * g, dtype=np.float64)


def _candidates(h: _Hits, p: AlignParams) -> list[_Candidate]:
    """Grow lines from the strongest cells of the (window, offset) vote grid."""
    tl = h.timeline
    t0 = float(tl[0])
    # Offsets lie within these bounds; no pass over the hits needed to find them.
    o0, o1 = h.r_min - float(tl[-1]), h.r_max - t0
    # Hours-long inputs get coarser cells rather than a grid of hundreds of megabytes.
    coarse = math.sqrt((float(tl[-1]) - t0 + _WINDOW_S) * (o1 - o0 + _BIN_S) / _BIN_S)
    coarse = max(1.0, coarse / math.sqrt(_WINDOW_S * _MAX_CELLS))
    win, binw = _WINDOW_S * coarse, _BIN_S * coarse
    nw = int((float(tl[-1]) - t0) / win) + 1
    nb = int((o1 - o0) / binw) + 1
    # Rows are padded with empty bins so that sums across bins run on the flat array
    # (contiguous, several times faster than 2-D slices) without mixing windows.
    stride = nb + _PAD_BINS
    row = np.minimum(((tl - t0) / win).astype(np.intp), nw - 1) * stride
    cell_of = row[h.frame] + np.minimum(((h.r - h.q - o0) / binw).astype(np.intp), nb - 1)
    grid = np.bincount(cell_of, weights=h.vote, minlength=nw * stride)
    # A seed sees two windows and three bins: clips straddle windows, speed drifts offsets.
    # Its support can come from five bins (drift plus jitter); those sums bound what a seed
    # can hold, so seeds that cannot pass _promising are never looked at.
    votes = _box(grid, stride, 1)
    ok = _box(np.bincount(cell_of, minlength=nw * stride), stride, 2) >= _min_seed_frames(p)
    ok &= _box(grid, stride, 2) >= math.log10(tl.size)
    ok.reshape(nw, stride)[:, nb:] = False  # the padding
    cells = np.flatnonzero(ok)
    # Local maxima of the votes among the eight neighbours.
    padded = np.concatenate((np.full(stride + 1, -1.0), votes, np.full(stride + 1, -1.0)))
    mine = votes[cells]
    peak = np.ones(cells.size, dtype=np.bool_)
    for step in (1, stride - 1, stride, stride + 1):
        peak &= mine >= padded[cells + stride + 1 + step]
        peak &= mine >= padded[cells + stride + 1 - step]
    cells = cells[peak]
    cells = cells[np.argsort(-mine[peak], kind="stable")]

    # Slopes a seed tries: one step drifts a jitter over the seed's 20 s; ties go to speed 1.
    steps = min(_MAX_SLOPE_STEPS, math.ceil(p.max_speed_dev * 2 * win / p.jitter_s))
    dev = np.linspace(-p.max_speed_dev, p.max_speed_dev, 2 * steps + 1)
    slopes = 1.0 + dev[np.argsort(np.abs(dev), kind="stable")]
    reach = 1.5 * binw + p.max_speed_dev * win
    covered = np.zeros((nw, nb), dtype=np.bool_)
    claimed = np.zeros(h.q.size, dtype=np.bool_)
    found: list[tuple[float, float, float]] = []  # query span and seed votes of candidates
    out: list[_Candidate] = []
    tried = fruitless = 0
    for cell in cells.tolist():
        w, b = divmod(cell, stride)
        if covered[w, b]:
            continue
        # Seeds come strongest first: a run of them finding nothing new means the rest
        # is scatter (or look-alikes inside what was found).
        if tried == _MAX_TRIED or fruitless == _MAX_FRUITLESS:
            break
        tried += 1
        fruitless += 1
        covered[w, max(0, b - 2) : b + 3] = True  # its line search reaches these too
        lo_t = t0 + w * win
        i0 = int(np.searchsorted(tl, lo_t, "left"))
        i1 = int(np.searchsorted(tl, lo_t + 2 * win, "left"))
        vote = float(votes[cell])
        # Inside a match already found, only a rival about as strong can change the answer
        # (repeated content); static or look-alike shots there only cost time.
        if i1 <= i0 or any(
            qs <= tl[i0] and tl[i1 - 1] <= qe and vote < _RIVAL_VOTES * v for qs, qe, v in found
        ):
            continue
        grown = _grow_seed(h, p, i0, i1, o0 + (b + 0.5) * binw, slopes, reach, claimed)
        if grown is None:
            continue
        line, run = grown
        claimed[run.hits] = True
        _cover(
            covered, line, float(tl[run.frames[0]]), float(tl[run.frames[-1]]), t0, win, o0, binw
        )
        breaks = np.flatnonzero(np.diff(h.clock[run.frames]) > _max_step(p)) + 1
        for piece in np.split(np.arange(len(run)), breaks):
            cand = _evaluate(h, p, run[piece])
            if cand is None:
                continue
            seg = cand.segment
            if not any(qs <= seg.query_start and seg.query_end <= qe for qs, qe, _ in found):
                fruitless = 0
            out.append(cand)
            found.append((seg.query_start, seg.query_end, vote))
    return out


def _grow_seed(
    h: _Hits,
    p: AlignParams,
    i0: int,
    i1: int,
    offset: float,
    slopes: FloatArray,
    reach: float,
    claimed: BoolArray,
) -> tuple[_Line, _Run] | None:
    """The run a seed grows into, or None if the seed is scatter or an existing run's."""
    line = _seed_line(h, p, i0, i1, offset, slopes, reach)
    if line is None:
        return None
    run = _support(h, i0, i1, line, p.jitter_s)
    if len(run) >= 2:
        line = _fit(h, run, p)
        run = _support(h, i0, i1, line, p.jitter_s)
    if not _promising(h, p, run) or claimed[run.hits].mean() > 0.5:
        return None
    line, run = _grow(h, p, _fit(h, run, p), run)
    line = _fit(h, run, p)
    run = _support(h, int(run.frames[0]), int(run.frames[-1]) + 1, line, p.jitter_s)
    if len(run) < 2:
        return None
    return _fit(h, run, p), run


def _box(grid: npt.NDArray[Any], stride: int, half: int) -> FloatArray:
    """Sums over two windows (this and the next) and ``2 * half + 1`` offset bins."""
    pair = grid.astype(np.float64)
    pair[:-stride] += grid[stride:]
    out = pair.copy()
    for shift in range(1, half + 1):
        out[shift:] += pair[:-shift]
        out[:-shift] += pair[shift:]
    return out


def _max_step(p: AlignParams) -> float:
    """Longest step between supported frames: max_gap_s without hits, then the next sample."""
    return p.max_gap_s + p.sample_interval_s + 1e-6


def _min_seed_frames(p: AlignParams) -> int:
    return max(2, min(p.min_frames, 3))


def _promising(h: _Hits, p: AlignParams, run: _Run) -> bool:
    """Whether a seed's own 20 s are unlikely by chance against one test per query frame.

    Not a bound, a filter: any run we could report is far stronger than this in its best
    20 s (a 10-minute run at 1 hit in 2 frames still clears it), and scatter rarely is.
    """
    k = len(run)
    if k < _min_seed_frames(p):
        return False
    n = _spanned(h, int(run.frames[0]), int(run.frames[-1]))
    log_c = float(h.log_fact[n] - h.log_fact[k] - h.log_fact[n - k])
    return -float(h.log_p[run.frames].sum()) - log_c >= math.log10(h.timeline.size)


def _seed_line(
    h: _Hits,
    p: AlignParams,
    i0: int,
    i1: int,
    offset: float,
    slopes: FloatArray,
    reach: float,
) -> _Line | None:
    """Best line through a seed cell by a local Hough transform over slope x intercept."""
    t = h.timeline[i0:i1]
    near = _hits_between(h, i0, i1, t + (offset - reach), t + (offset + reach))
    if near.size == 0:
        return None
    q, r, vote = h.q[near], h.r[near], h.vote[near]
    qc = 0.5 * (float(q[0]) + float(q[-1]))
    rc = r[None, :] - slopes[:, None] * (q - qc)[None, :]
    lo = float(rc.min())
    bins = ((rc - lo) / p.jitter_s).astype(np.intp)
    nb = int(bins.max()) + 2
    flat = (np.arange(slopes.size)[:, None] * nb + bins).ravel()
    hist = np.bincount(flat, weights=np.tile(vote, slopes.size), minlength=slopes.size * nb)
    hist = hist.reshape(slopes.size, nb)
    k, j = divmod(int(np.argmax(hist[:, :-1] + hist[:, 1:])), nb - 1)
    return _Line(qc, lo + (j + 1) * p.jitter_s, float(slopes[k]))


def _hits_between(h: _Hits, i0: int, i1: int, lo: FloatArray, hi: FloatArray) -> IntArray:
    """Hits of frames ``i0 + j`` with ``lo[j] <= ref_t <= hi[j]``, in key order.

    Two binary searches per frame on the (frame, ref_t) key: the cost is in the frames
    and the hits found, not in the hits a frame has (hundreds in a held shot).
    """
    base = np.arange(i0, i1) * h.key_scale - h.key_zero
    # Clamped to the hits' range, give or take half a sample for rounding (a frame's row
    # has more than that to spare at both ends), so no search strays into another frame.
    margin = 0.5 * h.interval
    a = np.searchsorted(h.key, base + np.maximum(lo, h.r_min - margin), "left")
    n = np.searchsorted(h.key, base + np.minimum(hi, h.r_max + margin), "right") - a
    np.maximum(n, 0, out=n)
    total = int(n.sum())
    if total <= 0:
        return _EMPTY
    ends = np.cumsum(n)
    return np.arange(total) + np.repeat(a - (ends - n), n)


def _support(
    h: _Hits,
    i0: int,
    i1: int,
    line: _Line,
    tau: float,
    anchor: float = 0.0,
    slope_err: float = 0.0,
) -> _Run:
    """Frames in [i0, i1) with a hit within the band around the line, closest hit first.

    The band is ``tau`` plus ``slope_err`` per second away from ``anchor`` (extrapolation).
    """
    if i1 <= i0:
        return _NO_RUN
    t = h.timeline[i0:i1]
    centre = line.rc + line.a * (t - line.qc)
    band = tau + slope_err * np.abs(t - anchor)
    # A little beyond the band too, to tell held shots (below).
    wide = band + 2 * h.interval
    near = _hits_between(h, i0, i1, centre - wide, centre + wide)
    if near.size == 0:
        return _NO_RUN
    local = h.frame[near] - i0
    res = np.abs(h.r[near] - centre[local])
    inside = res <= band[local]
    idx = near[inside]
    if idx.size == 0:
        return _NO_RUN
    # Per frame the closest hit first, then the nearest hash.
    idx = idx[np.lexsort((h.d[idx], res[inside], h.frame[idx]))]
    fi = h.frame[idx]
    groups = _heads(fi)
    # Two neighbouring reference frames both hit: their weighted mean beats either one.
    w = 1.0 - h.d[idx] / h.radius
    r_in = h.r[idx]
    ref = np.add.reduceat(w * r_in, groups) / np.add.reduceat(w, groups)
    # The fit weighs a frame by the inverse variance of where its hits put the line: a
    # sample's rounding for one hit or two neighbours (the truth lies between them), more
    # for a wider cluster. A frame whose hits run on past both edges of the band (a held
    # shot) fits any line there and would only pull the fit towards wherever the line
    # already is, so it all but drops out.
    inner = np.maximum.reduceat(r_in, groups) - np.minimum.reduceat(r_in, groups)
    weight = w[groups] / (np.maximum(inner - h.interval, 0.0) ** 2 / 12.0 + h.sampling_var)
    heads = _heads(local)  # near hits are sorted by ref_t within a frame
    if heads.size < near.size:
        r_near = h.r[near]
        outer = r_near[np.append(heads[1:], near.size) - 1] - r_near[heads]
        which = np.searchsorted(local[heads], fi[groups] - i0)
        weight[outer[which] > 2 * band[fi[groups] - i0]] *= _HELD_WEIGHT
    # The reference's first and last samples also stand for everything before and after
    # them: query frames from beyond its ends pile up there.
    weight[(ref < h.edge_lo) | (ref > h.edge_hi)] *= _HELD_WEIGHT
    return _Run(fi[groups], idx[groups], ref, weight)


def _heads(a: IntArray) -> IntArray:
    """Where each run of equal values starts in ``a``."""
    new = np.empty(a.size, dtype=np.bool_)
    new[:1] = True
    np.not_equal(a[1:], a[:-1], out=new[1:])
    return np.flatnonzero(new)


def _fit(h: _Hits, run: _Run, p: AlignParams) -> _Line:
    """Weighted least squares (inverse variance, see _support), slope clamped to the speeds."""
    q, r, w = h.timeline[run.frames], run.ref, run.weight
    sw = float(w.sum())
    qc = float((w * q).sum()) / sw
    rc = float((w * r).sum()) / sw
    x = q - qc
    sxx = float((w * x * x).sum())
    a = float((w * x * (r - rc)).sum()) / sxx if sxx > 1e-9 else 1.0
    a = min(max(a, 1.0 - p.max_speed_dev), 1.0 + p.max_speed_dev)
    return _Line(qc, rc, a)


def _grow(h: _Hits, p: AlignParams, line: _Line, run: _Run) -> tuple[_Line, _Run]:
    """Extend a run both ways a chunk at a time until a gap longer than ``max_gap_s``."""
    tl, clock = h.timeline, h.clock
    for forward in (True, False):
        # Steps double while the run holds: ~7 slices for a 10-minute clip, not 60.
        chunk = max(p.max_gap_s, _WINDOW_S)
        while True:
            first, last = int(run.frames[0]), int(run.frames[-1])
            # A line fitted over a short span is uncertain by about one sample over it.
            slope_err = min(
                p.max_speed_dev,
                p.sample_interval_s / max(float(tl[last] - tl[first]), p.sample_interval_s),
            )
            if forward:
                edge, i0 = last, last + 1
                i1 = int(np.searchsorted(clock, clock[last] + chunk, "right"))
            else:
                edge, i1 = first, first
                i0 = int(np.searchsorted(clock, clock[first] - chunk, "left"))
            if i1 <= i0:
                break
            ext = _support(h, i0, i1, line, p.jitter_s, float(tl[edge]), slope_err)
            if not forward:
                ext = ext[::-1]
            steps = np.abs(clock[ext.frames] - np.append(clock[edge], clock[ext.frames[:-1]]))
            cut = np.flatnonzero(steps > _max_step(p))
            if cut.size:
                ext = ext[: int(cut[0])]
            if len(ext):
                run = run.then(ext) if forward else ext[::-1].then(run)
                line = _fit(h, run, p)
            if cut.size or not len(ext):
                break
            chunk = min(2 * chunk, _MAX_CHUNK_S)
    return line, run


def _cover(
    covered: BoolArray,
    line: _Line,
    t_first: float,
    t_last: float,
    t0: float,
    win: float,
    o0: float,
    binw: float,
) -> None:
    """Mark the grid cells a grown line passes through so they seed nothing else."""
    nw, nb = covered.shape
    w_lo = max(0, int((t_first - t0) / win) - 1)
    w_hi = min(nw - 1, int((t_last - t0) / win) + 1)
    for w in range(w_lo, w_hi + 1):
        ta = t0 + w * win
        tb = ta + 2 * win
        oa, ob = line.at(ta) - ta, line.at(tb) - tb
        b_lo = max(0, int((min(oa, ob) - o0) / binw) - 1)
        b_hi = min(nb - 1, int((max(oa, ob) - o0) / binw) + 1)
        if b_lo <= b_hi:
            covered[w, b_lo : b_hi + 1] = True


def _trim(h: _Hits, p: AlignParams, run: _Run) -> _Run:
    """The sub-run, cut only at its ends, least likely by chance.

    Strips a stray hit that joined across a gap: it adds less evidence than the frames it
    drags in cost.
    """
    k = len(run)
    m = min(k, _TRIM_FRAMES)
    first = np.arange(m)[:, None]
    last = np.arange(k - 1, k - 1 - m, -1)[None, :]  # widest first, so ties keep frames
    kk = last - first + 1
    nn = _spanned(h, run.frames[first], run.frames[last])
    cum = np.concatenate(([0.0], np.cumsum(h.log_p[run.frames] - _typical(h, p, run))))
    ok = kk >= p.min_frames
    kk, nn = np.maximum(kk, 0), np.maximum(nn, 1)
    log_c = h.log_fact[nn] - h.log_fact[np.minimum(kk, nn)] - h.log_fact[np.maximum(nn - kk, 0)]
    value = np.where(ok, log_c + cum[last + 1] - cum[first], np.inf)
    i, j = divmod(int(np.argmin(value)), m)
    return run[int(first[i, 0]) : int(last[0, j]) + 1]


def _typical(h: _Hits, p: AlignParams, run: _Run) -> FloatArray:
    """log10 of how much likelier each frame's hit distance is for this run than for chance.

    The run's own distances, smoothed, against chance spread evenly over the radius: at an
    end, a stray hit far worse than the rest loses its claim, a typical one strengthens it.
    """
    return _own_spread(h.d[run.hits].astype(np.intp), p.threshold + 1)


def _own_spread(values: IntArray, bins: int) -> FloatArray:
    own = np.convolve(np.bincount(values, minlength=bins).astype(np.float64), _SMOOTH, "same")
    # One pseudo-value of chance keeps an unseen value merely unlikely, not impossible.
    likely = (own + 1.0 / bins) / (values.size + 1.0)
    return np.asarray(np.log10(likely[values] * bins), dtype=np.float64)


def _evaluate(
    h: _Hits,
    p: AlignParams,
    run: _Run,
    lo_limit: float = -math.inf,
    hi_limit: float = math.inf,
) -> _Candidate | None:
    """The run as a segment, or None if it is too short, too thin or explainable by chance."""
    if len(run) < p.min_frames:
        return None
    run = _trim(h, p, run)
    k = len(run)
    tl = h.timeline
    f0, f1 = int(run.frames[0]), int(run.frames[-1])
    t_first, t_last = float(tl[f0]), float(tl[f1])
    # A sample stands for the time around it: the true cut lies between the last
    # unmatched and first matched frame, so meet it halfway.
    start = t_first - (min(0.5 * (t_first - float(tl[f0 - 1])), p.sample_interval_s) if f0 else 0)
    end = t_last + (
        min(0.5 * (float(tl[f1 + 1]) - t_last), p.sample_interval_s) if f1 + 1 < tl.size else 0
    )
    start, end = max(start, lo_limit), min(end, hi_limit)
    if end - start < p.min_duration_s:
        return None
    n = _spanned(h, f0, f1)
    n_tests = (
        tl.size
        * (tl.size + 1)
        / 2
        * (h.ref_span / p.jitter_s + 1)
        * (1 + 2 * p.max_speed_dev * (end - start) / p.jitter_s)
    )
    log_c = float(h.log_fact[n] - h.log_fact[k] - h.log_fact[n - k])
    log_nfa = math.log10(n_tests) + log_c + float(h.log_p[run.frames].sum())
    if log_nfa > math.log10(p.max_false_alarms):
        return None
    line = _fit(h, run, p)
    segment = Segment(
        query_start=start,
        query_end=end,
        ref_start=min(max(line.at(start), h.ref_lo), h.ref_hi),
        ref_end=min(max(line.at(end), h.ref_lo), h.ref_hi),
        score=min(1.0, float((1.0 - h.d[run.hits] / h.radius).sum()) / n),
        frames=k,
        speed=line.a,
        significance=-log_nfa,
    )
    return _Candidate(run, segment)


@overload
def _spanned(h: _Hits, first: int, last: int) -> int: ...
@overload
def _spanned(h: _Hits, first: IntArray, last: IntArray) -> IntArray: ...
def _spanned(h: _Hits, first: int | IntArray, last: int | IntArray) -> int | IntArray:
    """Informative query frames from frame ``first`` to ``last``, both included."""
    if isinstance(first, int) and isinstance(last, int):
        return int(h.informative[last] - h.informative[first]) + 1
    return h.informative[last] - h.informative[first] + 1


def _overlaps(a: Segment, b: Segment) -> bool:
    return a.query_start < b.query_end - 1e-9 and b.query_start < a.query_end - 1e-9


def _select(h: _Hits, p: AlignParams, cands: list[_Candidate]) -> list[Segment]:
    """Keep the strongest runs, trimming later ones to the query time still free."""
    # Repeated content ties on evidence; the earlier reference occurrence wins, always.
    cands.sort(
        key=lambda c: (
            -c.segment.significance,
            -c.segment.score,
            c.segment.ref_start,
            c.segment.query_start,
        )
    )
    chosen: list[Segment] = []
    for cand in cands:
        if not any(_overlaps(cand.segment, s) for s in chosen):
            chosen.append(cand.segment)
            continue
        t = h.timeline[cand.run.frames]
        inside = np.zeros(t.size, dtype=np.bool_)
        for s in chosen:
            inside |= (t >= s.query_start) & (t <= s.query_end)
        free = np.flatnonzero(~inside)
        if free.size < p.min_frames:
            continue
        clock = h.clock[cand.run.frames[free]]
        breaks = np.flatnonzero((np.diff(free) > 1) | (np.diff(clock) > _max_step(p))) + 1
        for piece in np.split(free, breaks):
            t_first, t_last = float(t[piece[0]]), float(t[piece[-1]])
            lo = max((s.query_end for s in chosen if s.query_end <= t_first), default=-math.inf)
            hi = min((s.query_start for s in chosen if s.query_start >= t_last), default=math.inf)
            part = _evaluate(h, p, cand.run[piece], lo, hi)
            if part is not None and not any(_overlaps(part.segment, s) for s in chosen):
                chosen.append(part.segment)
    chosen.sort(key=lambda s: (-s.score, -s.significance, s.query_start))
    return chosen


def extend_edges(
    segments: Sequence[Segment],
    query_times: npt.ArrayLike,
    ref_times: npt.ArrayLike,
    distances: npt.ArrayLike,
    *,
    radius: int,
    jitter_s: float,
    ref_duration: float,
) -> list[Segment]:
    """``segments`` with each end moved out frame by frame while the frame there is within
    ``radius`` of a reference frame near where the segment's line puts it.

    Found segments stop short where a shot's edge frames lack detail (their hashes drift past
    the search radius); once a run is proven, a looser radius is evidence enough for its
    neighbours. An end stops at the first frame that fails, at another segment, and at the
    ends of either video.
    """
    qt = np.asarray(query_times, dtype=np.float64).ravel()
    rt = np.asarray(ref_times, dtype=np.float64).ravel()
    dist = np.asarray(distances)
    order = np.argsort(qt, kind="stable")
    out: list[Segment] = []
    for seg in segments:
        others = [s for s in segments if s is not seg]
        lo = max((s.query_end for s in others if s.query_end <= seg.query_start), default=-1.0)
        hi = min((s.query_start for s in others if s.query_start >= seg.query_end), default=1e18)

        def fits(i: int, t_ref: float) -> bool:
            near = np.abs(rt - t_ref) <= jitter_s
            return (
                0.0 <= t_ref <= ref_duration
                and bool(near.any())
                and (int(dist[i, near].min()) <= radius)
            )

        q_end, r_end = seg.query_end, seg.ref_end
        for i in order[np.searchsorted(qt[order], seg.query_end, side="right") :]:
            t = float(qt[i])
            t_ref = seg.ref_end + (t - seg.query_end) * seg.speed
            if t >= hi or not fits(int(i), t_ref):
                break
            q_end, r_end = t, t_ref
        q_start, r_start = seg.query_start, seg.ref_start
        for i in order[: np.searchsorted(qt[order], seg.query_start, side="left")][::-1]:
            t = float(qt[i])
            t_ref = seg.ref_start - (seg.query_start - t) * seg.speed
            if t <= lo or not fits(int(i), t_ref):
                break
            q_start, r_start = t, t_ref
        out.append(
            Segment(
                q_start,
                q_end,
                r_start,
                r_end,
                seg.score,
                seg.frames,
                seg.speed,
                seg.significance,
            )
        )
    return out
