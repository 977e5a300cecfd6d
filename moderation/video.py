"""Video media: sampled frames, classified, fingerprinted and matched in time.

One pass over the sampled frames (``models.video_decode``: 1 fps plus scene changes)
feeds both the per-frame PDQ fingerprint (borders stripped, vPDQ-style) and the image
classifiers, batch by batch. Frame hashes are matched against image banks one by one
(a banked still inside a video is a hit) and against video banks as a sequence, so a
reference matches only through a time-aligned run of frames (``moderation.video_align``).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import TypeVar

from PIL import Image
from sqlalchemy.orm import Session

from models.errors import SignalError
from models.image_hash import PDQ_MIN_QUALITY
from models.image_robust import HashVariant, frame_pdq
from models.video_decode import SampledFrame, VideoInfo, VideoLimits, probe_video, sample_frames
from moderation.errors import from_signal_error
from moderation.matching import FRAME_PREFIX, IMAGE_KINDS, BankMatcher, ReferenceFrames
from moderation.media import MediaPolicy
from moderation.policy import BankHit, Signal
from moderation.runtime import LoadedImageModel
from moderation.settings import Settings
from moderation.storage.tables import BankRow
from moderation.video_align import AlignParams

# Frames are hashed and classified at this size: the classifiers look at 224-256 pixels
# and PDQ at 64, so larger frames only cost decode and resize time.
FRAME_SIDE = 256
# Frames this detailed (PDQ quality) take part in time-aligned matching. Lower than the
# single-image floor (50): a run of frames that agree in time carries the evidence one
# frame cannot, and smooth shots (quality 30-50) would otherwise leave holes in both videos.
VIDEO_MIN_QUALITY = 25
# Timestamps named in a reason's detail besides the top one.
EXTRA_TIMES = 4

Progress = Callable[[float], None]


@dataclass(frozen=True)
class FrameHash:
    """One sampled frame's fingerprint: its time and border-stripped PDQ."""

    t: float
    pdq: str
    quality: int
    # "plain", or a reference's central window ("w90": the middle 90 % of each side).
    variant: str = "plain"


# References are sampled denser than uploads: PDQ moves by ~40 bits over 1/8 s of a camera
# pan, so a 1 fps upload must find a reference frame close to each of its own in time (at
# 4 fps the nearest is at most 1/8 s away). vPDQ's 1 fps frames are a subset.
REFERENCE_FPS = 4.0
# Central windows hashed per reference frame, so uploads cropped by up to 10 % (of width
# and height in all) still find a frame framed like theirs (PDQ is not crop-tolerant).
REFERENCE_WINDOWS = (0.9,)
# Alignment of 1 fps uploads against 4 fps references: a supporting hit lies within half a
# second of the line (speed changes and sampling), references are sampled every 1/4 s.
VIDEO_ALIGN = AlignParams(jitter_s=0.5, sample_interval_s=1.0 / REFERENCE_FPS)


@dataclass
class VideoAnalysis:
    """What one video contributed to an item's verdict."""

    media_index: int
    info: VideoInfo
    frames: list[FrameHash] = field(default_factory=list)
    signals: list[Signal] = field(default_factory=list)
    hits: list[BankHit] = field(default_factory=list)
    seconds: float = 0.0


def video_limits_from(settings: Settings) -> VideoLimits:
    lim = settings.limits
    return replace(
        VideoLimits(),
        max_bytes=lim.max_video_bytes,
        max_duration_s=lim.max_video_seconds,
        max_width=lim.max_video_side,
        max_height=lim.max_video_side,
        decode_budget_s=lim.video_decode_budget_s,
    )


def video_media_policy(policy: MediaPolicy, settings: Settings) -> MediaPolicy:
    """The media policy with the video byte limit in place of the image one."""
    return replace(policy, max_bytes=settings.limits.max_video_bytes)


def probe(data: bytes, limits: VideoLimits, field_name: str) -> VideoInfo:
    try:
        return probe_video(data, limits)
    except SignalError as exc:
        raise from_signal_error(exc, field_name) from exc


@dataclass(frozen=True)
class Thumbnail:
    """The frame that stands for a video in its first verdict."""

    t: float
    image: Image.Image
    pdq: str
    quality: int


# The thumbnail is the first frame PDQ finds detailed enough (fades and titles are not)
# among this many of the first sampled ones, else the most detailed of them.
THUMBNAIL_CANDIDATES = 3


def thumbnail(
    data: bytes, limits: VideoLimits, field_name: str
) -> tuple[VideoInfo, Thumbnail | None]:
    """Probe a video and pick its thumbnail (None: no frame could be decoded)."""
    info = probe(data, limits, field_name)
    best: Thumbnail | None = None
    try:
        seen = 0
        for batch in sample_frames(data, limits, target_side=FRAME_SIDE, batch_size=1):
            for f in batch:
                pdq, quality = frame_pdq(f.image)
                if best is None or quality > best.quality:
                    best = Thumbnail(round(f.t, 3), f.image, pdq, quality)
                seen += 1
            if (best is not None and best.quality >= PDQ_MIN_QUALITY) or (
                seen >= THUMBNAIL_CANDIDATES
            ):
                break
    except SignalError as exc:
        raise from_signal_error(exc, field_name) from exc
    return info, best


def hash_frames(frames: Sequence[SampledFrame], windows: Sequence[float] = ()) -> list[FrameHash]:
    """The fingerprint of sampled frames: the single place references and uploads are hashed."""
    out = []
    for f in frames:
        t = round(f.t, 3)
        pdq, quality = frame_pdq(f.image)
        out.append(FrameHash(t, pdq, quality))
        for w in windows:
            pdq, quality = frame_pdq(f.image, window=w)
            out.append(FrameHash(t, pdq, quality, f"w{round(w * 100)}"))
    return out


def fingerprint_video(
    data: bytes,
    limits: VideoLimits,
    field_name: str = "media",
    *,
    fps: float = 1.0,
    windows: Sequence[float] = (),
    exact_grid: bool = False,
) -> tuple[VideoInfo, list[FrameHash]]:
    """A video's info and frame hashes at ``fps`` plus scene changes, each frame also
    through the given central ``windows`` (no classification)."""
    info = probe(data, limits, field_name)
    hashes: list[FrameHash] = []
    # A reference at 4 fps samples 4x the frames an upload does.
    limits = replace(limits, max_sampled_frames=limits.max_sampled_frames * max(1, round(fps)))
    try:
        frames = sample_frames(data, limits, fps=fps, target_side=FRAME_SIDE, exact_grid=exact_grid)
        for batch in frames:
            hashes.extend(hash_frames(batch, windows))
    except SignalError as exc:
        raise from_signal_error(exc, field_name) from exc
    return info, hashes


def fingerprint_reference(
    data: bytes, limits: VideoLimits, field_name: str = "entry"
) -> tuple[VideoInfo, list[FrameHash]]:
    """A reference video's fingerprint: dense frames on the exact grid (a reference is
    decoded once), each also through central windows."""
    return fingerprint_video(
        data, limits, field_name, fps=REFERENCE_FPS, windows=REFERENCE_WINDOWS, exact_grid=True
    )


def load_reference(
    data_b64: str | None, uri: str | None, settings: Settings, field_name: str
) -> tuple[bytes, VideoInfo, list[FrameHash]]:
    """A reference video given inline or by URI, fetched under the video media policy, with
    its fingerprint (bank entries and rights holders' works both come in this way)."""
    from moderation.domain import MediaRef
    from moderation.media import load_media

    ref = MediaRef(kind="video", data_b64=data_b64, uri=uri)
    policy = video_media_policy(MediaPolicy.from_settings(settings), settings)
    data = load_media(ref, policy, field=field_name)
    info, frames = fingerprint_reference(data, video_limits_from(settings), field_name)
    return data, info, frames


def add_video_entry(
    session: Session, bank: BankRow, frames: Sequence[FrameHash], note: str, source: str
) -> int:
    """Store a reference video in a video bank: one entry, its matchable frames as extra
    hashes named ``at_ms:<milliseconds>`` (the entry's own hash is its most detailed frame)."""
    from moderation import banks
    from moderation.errors import InvalidInput

    usable = [f for f in frames if f.quality >= VIDEO_MIN_QUALITY]
    if not usable:
        raise InvalidInput(
            f"{source or 'the video'}: no frame is detailed enough to fingerprint "
            f"(PDQ quality >= {VIDEO_MIN_QUALITY}); blank videos cannot be matched",
            field="entry",
        )
    plain = [f for f in usable if f.variant == "plain"] or usable
    best = max(plain, key=lambda f: (f.quality, -f.t))
    [entry_id] = banks.add_entries(
        session, bank, [banks.EntryInput(best.pdq, best.quality, note, source)]
    )
    banks.add_reference_hashes(
        session,
        entry_id,
        [HashVariant(frame_reference_name(f), f.pdq, f.quality) for f in usable],
    )
    return entry_id


def frame_reference_name(f: FrameHash) -> str:
    """``at_ms:<ms>`` for a plain frame, ``at_ms:<ms>:<variant>`` for a window."""
    name = f"{FRAME_PREFIX}{round(f.t * 1000)}"
    return name if f.variant == "plain" else f"{name}:{f.variant}"


def analyse_video(
    data: bytes,
    media_index: int,
    *,
    limits: VideoLimits,
    models: list[LoadedImageModel],
    matcher: BankMatcher,
    reference_frames: ReferenceFrames,
    review_band: int = 0,
    progress: Progress | None = None,
) -> VideoAnalysis:
    """Sample, classify, fingerprint and match one video (the ``video`` queue's work)."""
    from moderation.pipeline import indexed_image_model_signals

    started = time.perf_counter()
    name = f"media[{media_index}]"
    info = probe(data, limits, name)
    out = VideoAnalysis(media_index=media_index, info=info)
    per_frame: list[tuple[float, Signal]] = []
    try:
        frames = sample_frames(
            data, limits, target_side=FRAME_SIDE, batch_size=ANALYSE_BATCH, threads=1
        )
        for batch in prefetched(frames):
            out.frames.extend(hash_frames(batch))
            if models:
                images: list[tuple[int, Image.Image]] = [(media_index, f.image) for f in batch]
                for j, s in indexed_image_model_signals(models, images, "video_frame"):
                    per_frame.append((batch[j].t, s))
            if progress is not None and info.duration_s > 0:
                progress(min(1.0, batch[-1].t / info.duration_s))
    except SignalError as exc:
        raise from_signal_error(exc, name) from exc
    out.signals = frame_signals(per_frame, media_index)
    out.hits = match_frames(
        matcher, out.frames, reference_frames, media_index=media_index, review_band=review_band
    )
    out.seconds = time.perf_counter() - started
    return out


_DONE = object()
# Frames per batch handed from decoding to classification: small, so both start early.
ANALYSE_BATCH = 8
T = TypeVar("T")


def prefetched(batches: Iterator[T], depth: int = 2) -> Iterator[T]:
    """``batches``, produced on a thread of their own: FFmpeg decodes the next frames while
    this thread hashes and classifies the last ones (both release the GIL; hashing on the
    decoding thread instead measured slower)."""
    box: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for batch in batches:
                while not stop.is_set():
                    try:
                        box.put(batch, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            box.put(_DONE)
        except BaseException as exc:  # handed to the consumer, raised there
            box.put(exc)

    worker = threading.Thread(target=produce, name="video-decode", daemon=True)
    worker.start()
    try:
        while True:
            item = box.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        worker.join(timeout=5.0)
        close = getattr(batches, "close", None)
        if close is not None and not worker.is_alive():
            close()


def frame_signals(per_frame: Sequence[tuple[float, Signal]], media_index: int) -> list[Signal]:
    """One signal per (source, category): the highest frame score, naming the timestamps
    that drove it (the top one, then the next highest frames)."""
    grouped: dict[tuple[str, str], list[tuple[float, Signal]]] = {}
    for t, s in per_frame:
        grouped.setdefault((s.source, s.category), []).append((t, s))
    out = []
    for (source, category), scored in grouped.items():
        scored.sort(key=lambda ts: (-ts[1].score, ts[0]))
        t, top = scored[0]
        label = top.detail.split(": ", 1)[-1]
        others = ", ".join(f"{u:.1f}s ({x.score:.2f})" for u, x in scored[1 : 1 + EXTRA_TIMES])
        detail = f"media[{media_index}] at {t:.1f}s: {label}" + (
            f"; next: {others}" if others else ""
        )
        out.append(Signal(source=source, category=category, score=top.score, detail=detail))
    return out


def match_frames(
    matcher: BankMatcher,
    frames: Sequence[FrameHash],
    reference_frames: ReferenceFrames,
    *,
    media_index: int,
    review_band: int = 0,
) -> list[BankHit]:
    """Image bank hits of single frames, and time-aligned video bank hits of the sequence."""
    if not frames:
        return []
    stills = [f for f in frames if f.quality >= PDQ_MIN_QUALITY]
    hits = matcher.match_pdq_many(
        [(f.pdq, 0, f"t={f.t:.1f}s") for f in stills],
        review_band=review_band,
        media_index=media_index,
        kinds=IMAGE_KINDS,
    )
    hits += matcher.match_video(
        [(f.t, f.pdq) for f in frames if f.quality >= VIDEO_MIN_QUALITY],
        reference_frames,
        review_band=review_band,
        media_index=media_index,
        params=VIDEO_ALIGN,
    )
    return hits
