"""Safe, bounded probing and frame sampling of uploaded videos (PyAV, i.e. FFmpeg).

:func:`sample_frames` is the one path from video bytes to the frames that are classified
and hashed: the frames of a fixed time grid (vPDQ-style: the first frame at or after each
``k / fps`` seconds) plus the first frame after each hard cut between grid points, every
one an upright RGB image no larger than ``target_side``. References and uploads must be
sampled with the same ``fps`` and ``target_side`` for their frame hashes to be comparable.
:func:`probe_video` checks a video the same way and describes it.

What happens to each kind of input (every refusal is a :class:`~models.errors.SignalError`
whose message names the problem; nothing else escapes, and nothing is decoded unbounded):

- **Accepted containers** are sniffed from their magic bytes and opened with that one
  demuxer, so none of FFmpeg's other demuxers ever parses upload bytes: MP4/MOV, Matroska/
  WebM, AVI, MPEG-TS (and M2TS) and FLV, narrowed by ``VideoLimits.allowed_containers``.
  Images, audio files, text and unrecognised data are :class:`UnsupportedFormat` naming
  what they are ("the data is a PNG image, not a video"); so is a file whose only streams
  are audio ("the file has no video stream (audio only)") and a video codec outside
  ``allowed_codecs`` ("codec 'prores' is not allowed (allowed: av1, h264, ...)").
- **Limits before decoding:** the byte count; in MP4 the video tracks' frame counts (read
  by our own box walk, before FFmpeg builds its index of them); the stream count; the
  declared frame size (in either orientation), pixel count, average frame rate and
  duration: :class:`MediaTooLarge` naming the numbers ("video is 900.0 s long; the limit
  is 600 s"). Then every packet's timestamp is read, without decoding: the measured
  duration, frame count and frame rate are held to the same limits, which catches files
  that declare none or lie, and reading stops as soon as a limit is passed.
- **Truncated or corrupt data** is :class:`CorruptMedia` ("video data is truncated or
  corrupt: ..."): an MP4 whose index points past the end, an MP4 or AVI holding fewer
  frames than its header lists, a Matroska file shorter than its declared duration, a
  video stream with no frames, no frame that decodes, or more than
  ``_MAX_DECODE_ERRORS`` packets the decoder rejects. A stream cut short in a container
  that declares no length (MPEG-TS, FLV, live WebM) is sampled up to the cut.
- **Cost:** sampling raises :class:`MediaTooLarge` once it has spent ``decode_budget_s``
  of its own time, checked between packets (time the caller spends between batches is not
  counted), and stops after ``max_sampled_frames`` frames (scene changes are dropped
  before grid frames are). Only the packets the grid or a cut needs are decoded (see
  **Speed**).
- **Orientation:** the display matrix (phone videos' rotation) is applied, so frames come
  out upright; non-square pixels are stretched to their display aspect ratio. A mirroring
  display matrix is ignored.
- **Timestamps:** ``t`` counts seconds from the first displayed frame. AVI with B-frames
  carries no presentation timestamps: it is decoded in full and timed by frame order at
  its declared frame rate.

**Speed.** A first pass reads every packet's timestamp, size and keyframe flag (demuxing
only: about 20 ms per minute of 30 fps video) and plans which packets to decode. A grid
frame needs every reference frame back to its keyframe, so those are decoded with FFmpeg
skipping non-reference frames (``skip_frame="NONREF"``), except the grid frames
themselves. In H.264 the grid frame is the first I- or P-frame at or after the grid time
(at most a few frames late; its true time is reported) and every B-frame is skipped
(``skip_frame="BIDIR"``): x264's B-pyramid keeps some B-frames as references, for other
B-frames only, so this halves the frames decoded (1,800 to 465 for a minute of 30 fps
720p) with the same pixels in every decoded frame. ``exact_grid`` (references, decoded
once) keeps the exact grid. Cuts are found on the decoded frames, which are at most a few
frames apart, by comparing a strided sample of the luma plane, never a converted frame; only
emitted frames are converted, straight to their final size by swscale. What follows a
GOP's last needed frame is skipped when the encoder keeps a regular keyframe cadence, as
short-GOP phone and streaming encoders do, unless something there looks like a cut: a
keyframe off the cadence (an encoder's scene-cut keyframe) or a frame almost as large as
a keyframe (a cut coded without one). A cut that lands exactly on a regular keyframe
after a skipped stretch is not reported; the grid still samples the new shot within
``1 / fps`` seconds.
"""

from __future__ import annotations

import bisect
import io
import math
import statistics
import struct
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Literal

import numpy as np
import numpy.typing as npt
from PIL import Image

from models.errors import CorruptMedia, MediaTooLarge, SignalError, UnsupportedFormat
from models.image_decode import HASH_TARGET_SIDE, fit_size, sniff_format

if TYPE_CHECKING:
    from av.container import InputContainer
    from av.video.codeccontext import VideoCodecContext
    from av.video.frame import VideoFrame
    from av.video.reformatter import VideoReformatter
    from av.video.stream import VideoStream

__all__ = [
    "MATROSKA",
    "MP4",
    "SCENE_THRESHOLD",
    "SampledFrame",
    "VideoInfo",
    "VideoLimits",
    "looks_like_video",
    "probe_video",
    "sample_frames",
]

# Container names as PyAV reports them for a format it detected itself.
MP4 = "mov,mp4,m4a,3gp,3g2,mj2"
MATROSKA = "matroska,webm"

_LABELS = {
    MP4: "MP4/MOV",
    MATROSKA: "Matroska/WebM",
    "avi": "AVI",
    "mpegts": "MPEG-TS",
    "flv": "FLV",
}
# The demuxer each container is opened with: FFmpeg never probes upload bytes itself.
_DEMUXERS = {MP4: "mov", MATROSKA: "matroska", "avi": "avi", "mpegts": "mpegts", "flv": "flv"}

# Default cut threshold on the score of a decoded frame: its mean absolute luma difference
# (0-255) from the previous decoded frame, less the previous pair's when that is smaller,
# so steady motion does not count (FFmpeg's scdet score). Measured: pans up to 200 px/s
# score under 12, hard cuts between unrelated shots 35-90. (scdet's default is 10 % of
# full scale, about 26.)
SCENE_THRESHOLD = 20.0

# A cut this close after a sampled cut, or before a grid time, is not sampled.
_MIN_CUT_GAP_S = 0.25
# Packets the decoder may reject (concealing the damage) before the video counts as corrupt.
_MAX_DECODE_ERRORS = 8
# Luma sample grid of the cut detector: about 64x36 points whatever the frame size.
_THUMB_COLS = 64
_THUMB_ROWS = 36
# A non-key packet this large relative to the median keyframe, and to its GOP's median
# packet, is probably a cut coded without a keyframe (x264 within min-keyint, or no
# scene-cut detection at all): measured 40-110 % of a keyframe, while P-frames of a fast
# pan stay under 12 %.
_SPIKE_OF_KEYFRAME = 0.3
_SPIKE_OF_MEDIAN = 4.0
# GOPs of one length it takes to trust that keyframes come on a cadence, not at cuts.
_MIN_CADENCE = 3
# Our MP4 box walk gives up (leaving the file to FFmpeg) after this many boxes per level.
_MAX_BOXES = 1000

# Per packet: not decoded; decoded if a reference frame (NONREF); decoded if not a B-frame
# (BIDIR: H.264 anchors, see _plan); decoded in full.
_SKIP, _REF, _ANCHOR, _FULL = 0, 1, 2, 3

# Decoded pixel formats whose first plane is 8-bit luma; 16-bit ones map to the right shift.
_Y8_FORMATS = frozenset(
    {
        "yuv420p",
        "yuvj420p",
        "yuv422p",
        "yuvj422p",
        "yuv444p",
        "yuvj444p",
        "yuv440p",
        "yuvj440p",
        "yuv411p",
        "yuv410p",
        "yuva420p",
        "yuva422p",
        "yuva444p",
        "nv12",
        "nv21",
        "nv16",
        "nv24",
        "gray",
    }
)
_Y16_SHIFT = {
    "yuv420p10le": 2,
    "yuv422p10le": 2,
    "yuv444p10le": 2,
    "yuv420p12le": 4,
    "yuv422p12le": 4,
    "yuv444p12le": 4,
    "gray10le": 2,
    "gray12le": 4,
    "p010le": 8,
    "p016le": 8,
}

# Clockwise display rotation -> the transpose that shows the frame upright.
_ROTATE = {
    90: Image.Transpose.ROTATE_270,
    180: Image.Transpose.ROTATE_180,
    270: Image.Transpose.ROTATE_90,
}

Thumb = npt.NDArray[np.int16]


@dataclass(frozen=True)
class VideoLimits:
    """Refusal thresholds: checked on the header before decoding, and on the timestamps."""

    max_bytes: int = 256 * 1024 * 1024
    max_duration_s: float = 600.0
    max_width: int = 4096
    max_height: int = 4096
    max_pixels: int = 4096 * 2304
    max_fps: float = 240.0
    max_streams: int = 16
    # Hard cap on frames handed on (1 fps grid plus scene changes).
    max_sampled_frames: int = 1200
    # Wall-clock seconds sampling one video may spend, not counting the caller's time.
    decode_budget_s: float = 60.0
    allowed_codecs: frozenset[str] = frozenset(
        {"h264", "hevc", "vp8", "vp9", "av1", "mpeg4", "mpeg2video", "mjpeg"}
    )
    # PyAV's container names (``MP4``, ``MATROSKA``, "avi", "mpegts", "flv"); only narrows.
    allowed_containers: frozenset[str] = frozenset(_LABELS)

    def __post_init__(self) -> None:
        for name in (
            "max_bytes",
            "max_duration_s",
            "max_width",
            "max_height",
            "max_pixels",
            "max_fps",
            "max_streams",
            "max_sampled_frames",
            "decode_budget_s",
        ):
            value = getattr(self, name)
            if not value > 0 or not math.isfinite(value):
                raise ValueError(f"VideoLimits.{name} must be a finite number > 0")
        unknown = set(self.allowed_containers) - set(_LABELS)
        if unknown:
            raise ValueError(
                f"VideoLimits.allowed_containers: unknown {sorted(unknown)} "
                f"(known: {sorted(_LABELS)})"
            )


@dataclass(frozen=True)
class VideoInfo:
    """What a probed video is. ``width``/``height`` are the displayed size (rotation and
    pixel aspect applied); ``rotation`` is clockwise degrees; ``frames`` were counted."""

    container: str
    codec: str
    width: int
    height: int
    fps: float
    duration_s: float
    has_audio: bool
    rotation: int
    frames: int = 0


@dataclass(frozen=True)
class SampledFrame:
    """One sampled frame: an upright RGB image and its presentation time in seconds."""

    t: float
    image: Image.Image
    scene_change: bool  # True when taken because of a cut, not the grid


def probe_video(data: bytes, limits: VideoLimits = VideoLimits()) -> VideoInfo:
    """Check a video against ``limits`` (header, every packet's timestamp, first frame)."""
    budget = _Budget(limits.decode_budget_s)
    with _refusals():
        src = _Source.open(data, limits)
        try:
            index = _read_index(src, limits, budget, decode_first=True)
        finally:
            src.close()
        width, height = _display_size(src.width, src.height, src.sar)
        if index.rotation in (90, 270):
            width, height = height, width
        return VideoInfo(
            container=src.container_name,
            codec=src.codec,
            width=width,
            height=height,
            fps=round(src.fps if src.fps > 0 else index.measured_fps, 3),
            duration_s=round(index.duration_s, 3),
            has_audio=src.has_audio,
            rotation=index.rotation,
            frames=len(index.ts),
        )


def sample_frames(
    data: bytes,
    limits: VideoLimits = VideoLimits(),
    *,
    fps: float = 1.0,
    target_side: int = HASH_TARGET_SIDE,
    scene_threshold: float = SCENE_THRESHOLD,
    batch_size: int = 16,
    exact_grid: bool = False,
    threads: int = 0,
) -> Iterator[list[SampledFrame]]:
    """Batches of frames in time order: the ``fps`` grid plus cuts scoring over
    ``scene_threshold``, fit to ``target_side``; checked like :func:`probe_video` first.

    H.264 grid frames are the first I- or P-frame at or after each grid time (about half the
    decoding); ``exact_grid`` takes the first frame of any type instead. ``threads``: FFmpeg's
    decoding threads (0: its choice; 1 leaves the other cores to a consumer working alongside,
    which the skipping decode hardly loses)."""
    if not (fps > 0 and math.isfinite(fps)):
        raise ValueError("fps must be a finite number > 0")
    if target_side < 1:
        raise ValueError("target_side must be >= 1")
    if not scene_threshold >= 0:
        raise ValueError("scene_threshold must be >= 0")
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    if threads < 0:
        raise ValueError("threads must be >= 0")
    return _sample(
        data, limits, Fraction(fps), target_side, scene_threshold, batch_size, exact_grid, threads
    )


# --- opening and the header checks ----------------------------------------------------------


@dataclass
class _Source:
    """An opened container, its chosen video stream and what the header declares."""

    container: InputContainer
    stream: VideoStream
    container_name: str
    codec: str
    width: int
    height: int
    fps: float
    sar: Fraction | None
    has_audio: bool
    declared_duration_s: float | None

    @classmethod
    def open(cls, data: bytes, limits: VideoLimits) -> _Source:
        import av

        name = _precheck(data, limits)
        container = av.open(io.BytesIO(data), "r", format=_DEMUXERS[name])
        try:
            return cls._checked(container, name, data, limits)
        except BaseException:
            container.close()
            raise

    @classmethod
    def _checked(
        cls, container: InputContainer, name: str, data: bytes, limits: VideoLimits
    ) -> _Source:
        import av

        streams = container.streams
        if len(streams) > limits.max_streams:
            raise MediaTooLarge(
                f"the file has {len(streams)} streams; the limit is {limits.max_streams}"
            )
        attached = av.stream.Disposition.attached_pic
        videos = [s for s in streams.video if not s.disposition & attached]
        if not videos:
            if streams.audio:
                raise UnsupportedFormat("the file has no video stream (audio only)")
            if streams.video:
                raise UnsupportedFormat("the file has no video stream (only a still picture)")
            raise CorruptMedia("the file has no video stream (no streams found)")
        stream = videos[0]
        cc = stream.codec_context
        if cc is None:
            raise UnsupportedFormat("the video stream's codec is unknown (no decoder)")
        codec = cc.codec.canonical_name
        if codec not in limits.allowed_codecs:
            allowed = ", ".join(sorted(limits.allowed_codecs))
            raise UnsupportedFormat(f"codec '{codec}' is not allowed (allowed: {allowed})")
        width, height = cc.width, cc.height
        if width <= 0 or height <= 0:
            raise CorruptMedia(f"the video stream declares no frame size ({width}x{height})")
        _check_size(width, height, limits)
        # Only the average rate is checked: FFmpeg's guessed rate of variable-rate WebM is
        # often the timestamp resolution (1000 fps); the measured rate is checked later.
        fps = _to_float(stream.average_rate)
        if fps > limits.max_fps:
            raise MediaTooLarge(f"frame rate is {fps:.1f} fps; the limit is {limits.max_fps:g}")
        declared = _declared_duration(container, stream, name, data)
        _check_declared_duration(declared, limits)
        # The decoder refuses frames over the pixel limit before allocating them, should the
        # stream change size after the header.
        cc.options = {"max_pixels": str(limits.max_pixels)}
        sar = stream.sample_aspect_ratio
        return cls(
            container=container,
            stream=stream,
            container_name=name,
            codec=codec,
            width=width,
            height=height,
            fps=fps,
            sar=sar if sar else None,
            has_audio=bool(streams.audio),
            declared_duration_s=declared,
        )

    def close(self) -> None:
        self.container.close()


def _precheck(data: bytes, limits: VideoLimits) -> str:
    """Byte limit and container, before FFmpeg sees the bytes; returns the container name."""
    size = len(data)
    if size == 0:
        raise CorruptMedia("video data is empty (0 bytes)")
    if size > limits.max_bytes:
        raise MediaTooLarge(f"video is {size} bytes, over the limit of {limits.max_bytes}")
    name = _sniff_container(data)
    accepted = ", ".join(_LABELS[n] for n in _LABELS if n in limits.allowed_containers)
    if name is None:
        raise UnsupportedFormat(f"{_identify(data)} (accepted containers: {accepted})")
    if name not in limits.allowed_containers:
        raise UnsupportedFormat(
            f"container '{name}' ({_LABELS[name]}) is not allowed (allowed: {accepted})"
        )
    if name == MP4:
        _check_iso_header(data, limits)
    return name


# Box types that can start an ISO media (MP4/MOV) file.
_ISO_FIRST = frozenset({b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot"})


def looks_like_video(data: bytes) -> bool:
    """True if the bytes start like a container this module opens (images are not)."""
    return _sniff_container(data) is not None


def _sniff_container(data: bytes) -> str | None:
    if sniff_format(data) is not None:
        return None  # AVIF and HEIC are ISO media too, but images
    head = bytes(data[:400])
    if head[4:8] in _ISO_FIRST:
        return MP4
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return MATROSKA
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "avi"
    if head[:4] == b"FLV\x01":
        return "flv"
    # 188-byte packets (192 in M2TS) each starting with the 0x47 sync byte.
    for first, step in ((0, 188), (4, 192)):
        syncs = head[first::step]
        if len(syncs) >= 2 and set(syncs) == {0x47}:
            return "mpegts"
    return None


_IMAGE_LABELS = {
    "JPEG": "a JPEG",
    "PNG": "a PNG",
    "GIF": "a GIF",
    "WEBP": "a WebP",
    "BMP": "a BMP",
    "AVIF": "an AVIF",
    "HEIF": "a HEIC/HEIF",
}
_OTHER_MAGIC: tuple[tuple[bytes, int, str], ...] = (
    (b"ID3", 0, "the data is MP3 audio, not a video"),
    (b"fLaC", 0, "the data is FLAC audio, not a video"),
    (b"WAVE", 8, "the data is WAV audio, not a video"),
    (b"#!AMR", 0, "the data is AMR audio, not a video"),
    (b"OggS", 0, "Ogg files are not supported"),
    (b"%PDF-", 0, "the data is a PDF document, not a video"),
    (b"PK\x03\x04", 0, "the data is a ZIP archive, not a video"),
    (b"\x00\x00\x01\xba", 0, "MPEG program streams (VOB/MPG) are not supported"),
    (b"0&\xb2u\x8ef\xcf\x11", 0, "Windows Media (ASF/WMV) files are not supported"),
    (b".RMF", 0, "RealMedia files are not supported"),
)


def _identify(data: bytes) -> str:
    """A phrase naming what non-video data is, for the refusal message."""
    image = sniff_format(data)
    if image is not None:
        return f"the data is {_IMAGE_LABELS.get(image, 'an')} image, not a video"
    head = bytes(data[:1024])
    for magic, offset, what in _OTHER_MAGIC:
        if head[offset : offset + len(magic)] == magic:
            return what
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xF6 == 0xF0:
        return "the data is AAC (ADTS) audio, not a video"
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:
        return "the data is MPEG audio (MP3), not a video"
    text = ""
    for cut in range(4):  # a multi-byte character may straddle the end of the window
        with suppress(UnicodeDecodeError):
            text = head[: len(head) - cut].decode("utf-8")
            break
    if text and all(c.isprintable() or c in "\t\r\n\f" for c in text):
        return "the data is text, not a video"
    return "unrecognised video format"


def _check_size(width: int, height: int, limits: VideoLimits) -> None:
    mw, mh = limits.max_width, limits.max_height
    if not ((width <= mw and height <= mh) or (width <= mh and height <= mw)):
        raise MediaTooLarge(f"frame size {width}x{height} is over the limit of {mw}x{mh}")
    if width * height > limits.max_pixels:
        raise MediaTooLarge(
            f"frame size {width}x{height} is {width * height} pixels, "
            f"over the limit of {limits.max_pixels}"
        )


def _frame_cap(limits: VideoLimits) -> int:
    return math.ceil(limits.max_duration_s * limits.max_fps)


def _to_float(value: Fraction | int | None) -> float:
    """Seconds or rates from FFmpeg's rationals; absurd ones become inf, not an error."""
    if not value:
        return 0.0
    try:
        return float(value)
    except OverflowError:
        return math.inf


def _declared_duration(
    container: InputContainer, stream: VideoStream, name: str, data: bytes
) -> float | None:
    """The longest duration the headers state, or None. FFmpeg's guesses from the bit rate
    are not used: Matroska's Duration element is read instead, FLV's is not trusted."""
    found = []
    if stream.duration and stream.duration > 0 and stream.time_base:
        found.append(_to_float(stream.duration * stream.time_base))
    if name == MATROSKA:
        declared = _mkv_duration(data)
        if declared is not None:
            found.append(declared)
    elif name in (MP4, "avi", "mpegts") and container.duration and container.duration > 0:
        found.append(container.duration / 1_000_000)
    return max(found, default=None)


def _iso_boxes(data: bytes, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """(type, payload start, end) of the boxes in ``data[start:end]``, at most _MAX_BOXES."""
    pos = start
    for _ in range(_MAX_BOXES):
        if pos + 8 > end:
            return
        size = int.from_bytes(data[pos : pos + 4], "big")
        kind = bytes(data[pos + 4 : pos + 8])
        header = 8
        if size == 1:
            if pos + 16 > end:
                return
            size, header = int.from_bytes(data[pos + 8 : pos + 16], "big"), 16
        elif size == 0:
            size = end - pos
        if size < header:
            return
        yield kind, pos + header, min(pos + size, end)
        pos += size


def _iso_child(data: bytes, start: int, end: int, kind: bytes) -> tuple[int, int] | None:
    for k, s, e in _iso_boxes(data, start, end):
        if k == kind:
            return s, e
    return None


def _check_iso_header(data: bytes, limits: VideoLimits) -> None:
    """Refuse an MP4 whose header declares more frames or seconds than the limits allow."""
    # FFmpeg allocates an index entry per listed sample while opening the file (a
    # constant-size sample table lists any number in 20 bytes), and it does not report
    # the movie header's duration when the tracks say otherwise.
    moov = _iso_child(data, 0, len(data), b"moov")
    if moov is None:
        return  # FFmpeg will say what is wrong
    mvhd = _iso_child(data, *moov, b"mvhd")
    _check_declared_duration(None if mvhd is None else _iso_duration(data, *mvhd), limits)
    cap = _frame_cap(limits)
    traks = 0
    for kind, start, end in _iso_boxes(data, *moov):
        if kind != b"trak":
            continue
        traks += 1
        if traks > limits.max_streams:
            raise MediaTooLarge(f"the file has over {limits.max_streams} tracks; refused unread")
        mdia = _iso_child(data, start, end, b"mdia")
        hdlr = None if mdia is None else _iso_child(data, *mdia, b"hdlr")
        if mdia is None or hdlr is None or data[hdlr[0] + 8 : hdlr[0] + 12] != b"vide":
            continue
        mdhd = _iso_child(data, *mdia, b"mdhd")
        _check_declared_duration(None if mdhd is None else _iso_duration(data, *mdhd), limits)
        count = _iso_video_frames(data, *mdia)
        if count is not None and count > cap:
            raise MediaTooLarge(
                f"the video track lists {count} frames; the limits allow {cap} "
                f"({limits.max_duration_s:g} s at {limits.max_fps:g} fps)"
            )


def _iso_duration(data: bytes, start: int, end: int) -> float | None:
    """Seconds in an ``mvhd`` or ``mdhd`` payload; None when unknown (all ones) or unreadable."""
    if start >= end:
        return None
    wide = data[start] == 1  # version 1: 64-bit times
    at = start + (20 if wide else 12)
    width = 8 if wide else 4
    if at + 4 + width > end:
        return None
    scale = int.from_bytes(data[at : at + 4], "big")
    duration = int.from_bytes(data[at + 4 : at + 4 + width], "big")
    if scale == 0 or duration == (1 << (8 * width)) - 1:
        return None
    return duration / scale


def _check_declared_duration(seconds: float | None, limits: VideoLimits) -> None:
    if seconds is not None and seconds > limits.max_duration_s:
        raise MediaTooLarge(
            f"video is {seconds:.1f} s long; the limit is {limits.max_duration_s:g} s"
        )


def _iso_video_frames(data: bytes, start: int, end: int) -> int | None:
    """The sample count in an ``mdia`` box's sample table, if it has one."""
    minf = _iso_child(data, start, end, b"minf")
    stbl = None if minf is None else _iso_child(data, *minf, b"stbl")
    if stbl is None:
        return None
    table = _iso_child(data, *stbl, b"stsz") or _iso_child(data, *stbl, b"stz2")
    if table is None or table[0] + 12 > table[1]:
        return None
    return int.from_bytes(data[table[0] + 8 : table[0] + 12], "big")


def _ebml_vint(data: bytes, pos: int, *, keep_marker: bool) -> tuple[int | None, int]:
    """An EBML variable-length integer at ``pos`` and the position after it. IDs keep their
    length marker; sizes drop it, and a size of all ones (unknown) is None."""
    first = data[pos]
    length = 9 - first.bit_length() if first else 9
    if length > 8 or pos + length > len(data):
        raise IndexError("bad EBML number")
    value = int.from_bytes(data[pos : pos + length], "big")
    if keep_marker:
        return value, pos + length
    value &= (1 << (7 * length)) - 1
    return (None if value == (1 << (7 * length)) - 1 else value), pos + length


def _mkv_duration(data: bytes) -> float | None:
    """Segment Info's Duration in seconds, or None when the file declares none."""
    try:
        pos = 0
        ebml, pos = _ebml_vint(data, pos, keep_marker=True)
        size, pos = _ebml_vint(data, pos, keep_marker=False)
        if ebml != 0x1A45DFA3 or size is None:
            return None
        segment, pos = _ebml_vint(data, pos + size, keep_marker=True)
        seg_size, pos = _ebml_vint(data, pos, keep_marker=False)
        if segment != 0x18538067:
            return None
        end = len(data) if seg_size is None else min(len(data), pos + seg_size)
        for _ in range(_MAX_BOXES):
            if pos >= end:
                return None
            element, pos = _ebml_vint(data, pos, keep_marker=True)
            size, pos = _ebml_vint(data, pos, keep_marker=False)
            if element == 0x1F43B675 or size is None:  # a Cluster: Info comes before them
                return None
            if element == 0x1549A966:
                return _mkv_info_duration(data, pos, min(end, pos + size))
            pos += size
    except (IndexError, struct.error):
        pass
    return None


def _mkv_info_duration(data: bytes, pos: int, end: int) -> float | None:
    scale, duration = 1_000_000, None
    while pos < end:
        element, pos = _ebml_vint(data, pos, keep_marker=True)
        size, pos = _ebml_vint(data, pos, keep_marker=False)
        if size is None:
            return None
        body = data[pos : pos + size]
        if element == 0x2AD7B1 and 1 <= size <= 8:  # TimestampScale, ns per tick
            scale = int.from_bytes(body, "big")
        elif element == 0x4489 and size in (4, 8):  # Duration, in ticks
            duration = struct.unpack(">f" if size == 4 else ">d", body)[0]
        pos += size
    if duration is None or not math.isfinite(duration) or duration <= 0:
        return None
    return float(duration * scale / 1e9)


# --- the timestamp pass ---------------------------------------------------------------------


@dataclass
class _Index:
    """The video packets in decode order, read without decoding."""

    ts: list[int]  # presentation timestamps (decode timestamps when ``timed`` is False)
    key: list[bool]
    size: list[int]
    shown: list[bool]  # False for packets an edit list hides
    origin: int  # timestamp of the first displayed frame
    time_base: Fraction
    timed: bool  # every packet has a usable presentation timestamp
    duration_s: float
    measured_fps: float
    rotation: int = 0  # clockwise, from the first decoded frame (probe only)


def _read_index(
    src: _Source, limits: VideoLimits, budget: _Budget, *, decode_first: bool = False
) -> _Index:
    """Every video packet's timestamp, size and key flag, holding them to the limits; with
    ``decode_first`` also the first frame (its rotation, and proof that the stream decodes)."""
    import av

    stream, container = src.stream, src.container
    tb = stream.time_base or Fraction(1, 90_000)
    limit_ticks = math.floor(Fraction(limits.max_duration_s) / tb)
    cap = _frame_cap(limits)
    ts: list[int] = []
    key: list[bool] = []
    size: list[int] = []
    shown: list[bool] = []
    timed = True
    lo = hi = end = None
    listed = 0  # packets including empty ones, against the header's frame count
    other_end = 0.0
    first: VideoFrame | None = None
    cc = stream.codec_context
    for packet in container.demux():
        budget.check()
        if packet.stream_index != stream.index:
            if packet.pts is not None and packet.time_base:
                dur = packet.duration or 0
                other_end = max(other_end, _to_float((packet.pts + dur) * packet.time_base))
            continue
        if packet.size == 0 and packet.dts is None:
            continue  # PyAV's end-of-stream marker
        listed += 1
        if packet.size == 0:
            continue  # a dropped frame (AVI)
        stamp = packet.pts
        if stamp is None:
            timed = False
            stamp = packet.dts if packet.dts is not None else (ts[-1] if ts else 0)
        if len(ts) >= cap:
            raise MediaTooLarge(
                f"video has over {cap} frames; the limits allow {cap} "
                f"({limits.max_duration_s:g} s at {limits.max_fps:g} fps)"
            )
        visible = not packet.is_discard
        ts.append(stamp)
        key.append(packet.is_keyframe)
        size.append(packet.size)
        shown.append(visible)
        if visible:
            lo = stamp if lo is None else min(lo, stamp)
            hi = stamp if hi is None else max(hi, stamp)
            stop = stamp + max(0, packet.duration or 0)
            end = stop if end is None else max(end, stop)
            if hi - lo > limit_ticks:
                raise MediaTooLarge(
                    f"video is over {limits.max_duration_s:g} s long (its timestamps pass "
                    f"{_to_float((hi - lo) * tb):.1f} s); the limit is "
                    f"{limits.max_duration_s:g} s"
                )
        if decode_first and first is None:
            try:
                frames = cc.decode(packet)
            except (av.error.InvalidDataError, av.error.EOFError):
                frames = []  # a damaged first packet; the next ones may decode
            first = frames[0] if frames else None
    if decode_first and first is None and ts:
        frames = cc.decode(None)
        first = frames[0] if frames else None
    if lo is None or hi is None or end is None:
        raise CorruptMedia("the video stream has no frames (zero-length)")
    declared = stream.frames
    if src.container_name in (MP4, "avi") and declared > 0 and listed < declared:
        raise CorruptMedia(
            f"video data is truncated: the header lists {declared} frames, the file holds {listed}"
        )
    span = _to_float((hi - lo) * tb)
    n = sum(shown)
    last = _to_float((end - lo) * tb)
    duration = last if last > span or n < 2 else span * n / (n - 1)
    if duration == 0 and src.fps > 0:
        duration = 1 / src.fps
    declared_s = src.declared_duration_s
    if src.container_name == MATROSKA and declared_s is not None:
        found = max(duration + _to_float(lo * tb), other_end)
        if found < declared_s - max(1.0, 0.05 * declared_s):
            raise CorruptMedia(
                f"video data is truncated: {declared_s:.1f} s declared, {found:.1f} s present"
            )
    measured_fps = (n - 1) / span if n >= 2 and span > 0 else src.fps
    if n >= 2 and span == 0:
        raise CorruptMedia(f"video data is corrupt: all {n} frames have the same timestamp")
    if measured_fps > limits.max_fps * 1.05:
        raise MediaTooLarge(
            f"frame rate is {measured_fps:.1f} fps (measured); the limit is {limits.max_fps:g}"
        )
    index = _Index(
        ts=ts,
        key=key,
        size=size,
        shown=shown,
        origin=lo,
        time_base=tb,
        timed=timed and not (src.container_name == "avi" and bool(cc.has_b_frames)),
        duration_s=duration,
        measured_fps=measured_fps,
    )
    if decode_first:
        if first is None:
            raise CorruptMedia(
                "video data is truncated or corrupt: no frame of the video stream decodes"
            )
        _check_size(first.width, first.height, limits)
        index.rotation = _rotation_cw(first)
    return index


# --- planning which packets to decode -------------------------------------------------------


@dataclass
class _Plan:
    actions: list[int]  # per packet: _SKIP, _REF, _ANCHOR or _FULL
    grid_slots: list[int]  # sorted grid slot of every grid frame, to reserve them room


def _slot(ticks: int, scale: tuple[int, int]) -> int:
    """Index k of the last grid time k / fps at or before ``ticks``."""
    return (ticks * scale[0]) // scale[1]


def _reordered(index: _Index) -> list[bool]:
    """Per packet: shown before a packet decoded earlier, i.e. a B-frame."""
    out: list[bool] = []
    latest: int | None = None
    for stamp in index.ts:
        out.append(latest is not None and stamp < latest)
        latest = stamp if latest is None else max(latest, stamp)
    return out


def _first_per_slot(index: _Index, scale: tuple[int, int], candidates: list[int]) -> dict[int, int]:
    """Grid slot -> the earliest shown candidate packet in it."""
    first: dict[int, int] = {}
    for i in sorted(candidates, key=lambda i: (index.ts[i], i)):
        first.setdefault(_slot(index.ts[i] - index.origin, scale), i)
    return first


def _plan(index: _Index, scale: tuple[int, int], *, anchors_only: bool = False) -> _Plan:
    n = len(index.ts)
    slots: list[int] = []
    if not index.timed:  # everything is decoded; frames are timed by their order
        for ordinal in range(sum(index.shown)):
            k = _slot(ordinal, scale)
            if not slots or k > slots[-1]:
                slots.append(k)
        return _Plan([_FULL] * n, slots)
    shown = [i for i in range(n) if index.shown[i]]
    by_slot = _first_per_slot(index, scale, shown)
    # H.264 anchors (I and P frames) are decodable with every B-frame skipped (BIDIR: half
    # the work of NONREF where x264's B-pyramid keeps B-frames as references). A grid frame
    # is then the first anchor in its slot, a few frames after the grid time, as long as
    # every slot has one.
    skippable, is_b = _REF, [False] * n
    if anchors_only:
        reordered = _reordered(index)
        anchors = _first_per_slot(index, scale, [i for i in shown if not reordered[i]])
        if anchors.keys() == by_slot.keys():
            skippable, is_b, by_slot = _ANCHOR, reordered, anchors
    slots = sorted(by_slot)
    targets = set(by_slot.values())
    starts = [i for i in range(n) if index.key[i]]
    if not starts or starts[0] != 0:
        starts.insert(0, 0)
    gops = list(zip(starts, [*starts[1:], n], strict=True))
    # Open GOPs: frames shown before their keyframe lean on the previous GOP, so no GOP
    # may be cut short.
    if any(index.ts[j] < index.ts[s] for s, e in gops[1:] for j in range(s + 1, e)):
        return _Plan([_FULL if i in targets else skippable for i in range(n)], slots)
    # A regular cadence: most complete GOPs (and at least _MIN_CADENCE) have one length.
    lengths = Counter(e - s for s, e in gops[:-1])
    cadence = None
    if lengths:
        length, count = lengths.most_common(1)[0]
        if count >= _MIN_CADENCE and 2 * count > len(gops) - 1:
            cadence = length
    keys = [index.size[s] for s, _ in gops if index.key[s]]
    key_median = statistics.median(keys) if keys else 0
    # A keyframe off the cadence may be an encoder's scene-cut keyframe: the GOP before it
    # is decoded to its end, so the keyframe is compared with the frame it follows.
    to_end = [g + 1 < len(gops) and e - s != cadence for g, (s, e) in enumerate(gops)]
    actions = [_SKIP] * n
    for g, (s, e) in enumerate(gops):
        inner = index.size[s + 1 : e]
        spike = (
            max(_SPIKE_OF_KEYFRAME * key_median, _SPIKE_OF_MEDIAN * statistics.median(inner))
            if inner
            else math.inf
        )
        full = [
            j in targets or (j > s and index.size[j] >= spike and not is_b[j]) for j in range(s, e)
        ]
        last = s if g > 0 and to_end[g - 1] else -1  # a keyframe that may be a cut
        for j in range(s, e):
            if full[j - s]:
                last = j
        if to_end[g]:
            last = e - 1
        for j in range(s, last + 1):
            actions[j] = _FULL if full[j - s] else skippable
    return _Plan(actions, slots)


# --- decoding and sampling ------------------------------------------------------------------


class _Budget:
    """Wall-clock time spent by one call, excluding the time its generator is suspended."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.spent = 0.0
        self.since = time.perf_counter()

    def check(self) -> None:
        if self.spent + time.perf_counter() - self.since > self.seconds:
            raise MediaTooLarge(
                f"decoding took longer than {self.seconds:g} s (the budget for one video)"
            )

    def pause(self) -> None:
        self.spent += time.perf_counter() - self.since

    def resume(self) -> None:
        self.since = time.perf_counter()


def _sample(
    data: bytes,
    limits: VideoLimits,
    fps: Fraction,
    target_side: int,
    threshold: float,
    batch_size: int,
    exact_grid: bool,
    threads: int,
) -> Iterator[list[SampledFrame]]:
    budget = _Budget(limits.decode_budget_s)
    with _refusals():
        src = _Source.open(data, limits)
        try:
            index = _read_index(src, limits, budget)
        finally:
            src.close()
        if index.timed:
            tb = index.time_base
        else:  # frames are timed by their order
            rate = Fraction(src.fps if src.fps > 0 else index.measured_fps or 25)
            tb = 1 / rate.limit_denominator(1_000_000)
        scale = (tb.numerator * fps.numerator, tb.denominator * fps.denominator)
        plan = _plan(index, scale, anchors_only=src.codec == "h264" and not exact_grid)
        src = _Source.open(data, limits)
        if threads:
            src.stream.codec_context.thread_count = threads
        try:
            batch: list[SampledFrame] = []
            frames = _sampled(
                src, index, plan, scale, tb, float(fps), target_side, threshold, limits, budget
            )
            for item in frames:
                batch.append(item)
                if len(batch) == batch_size:
                    budget.pause()
                    yield batch
                    budget.resume()
                    batch = []
            if batch:
                yield batch
        finally:
            src.close()


def _sampled(
    src: _Source,
    index: _Index,
    plan: _Plan,
    scale: tuple[int, int],
    tb: Fraction,
    fps: float,
    target_side: int,
    threshold: float,
    limits: VideoLimits,
    budget: _Budget,
) -> Iterator[SampledFrame]:
    """The grid frames and cut frames, in time order, up to ``max_sampled_frames``."""
    from av.video.reformatter import VideoReformatter

    scaler = VideoReformatter()  # keeps its swscale context while the size stays the same
    cap = limits.max_sampled_frames
    emitted = 0
    decoded = 0
    last_ticks: int | None = None
    last_slot = -1
    last_cut: float | None = None
    prev: Thumb | None = None
    prev_mafd: float | None = None
    for frame in _decoded(src, index, plan, budget):
        if frame is None:  # packets were skipped: the next frame has no neighbour
            prev = prev_mafd = None
            continue
        if index.timed:
            if frame.pts is None or (last_ticks is not None and frame.pts <= last_ticks):
                continue
            last_ticks = frame.pts
            ticks = frame.pts - index.origin
            if ticks < 0:
                continue
        else:
            ticks = decoded
        decoded += 1
        _check_size(frame.width, frame.height, limits)
        t = float(ticks * tb)
        slot = _slot(ticks, scale)
        thumb = _luma_thumb(frame)
        score = 0.0
        if prev is not None:
            if prev.shape != thumb.shape:
                score, mafd = math.inf, None  # the frame size changed: a new shot
            else:
                mafd = float(np.abs(thumb - prev).mean())
                score = mafd if prev_mafd is None else min(mafd, abs(mafd - prev_mafd))
            prev_mafd = mafd
        prev = thumb
        grid = slot > last_slot
        if grid:
            last_slot = slot
        # A cut is not taken less than _MIN_CUT_GAP_S after another (flashes, strobes) or
        # before a grid time (that grid frame shows the new shot), and only while room
        # remains for every grid frame still to come.
        later = len(plan.grid_slots) - bisect.bisect_right(plan.grid_slots, slot)
        cut = (
            not grid
            and score > threshold
            and (last_cut is None or t - last_cut >= _MIN_CUT_GAP_S)
            and not (later and (slot + 1) / fps - t < _MIN_CUT_GAP_S)
            and emitted + 1 + later <= cap
        )
        if grid or cut:
            image = _render(frame, src, target_side, scaler)
            yield SampledFrame(t=t, image=image, scene_change=cut)
            emitted += 1
            if cut:
                last_cut = t
            if emitted >= cap:
                return
    if decoded == 0:
        raise CorruptMedia(
            "video data is truncated or corrupt: no frame of the video stream decodes"
        )


def _decoded(
    src: _Source, index: _Index, plan: _Plan, budget: _Budget
) -> Iterator[VideoFrame | None]:
    """Decode the planned packets; None marks a gap where packets were skipped."""
    import av

    stream, container = src.stream, src.container
    cc: VideoCodecContext = stream.codec_context
    stream.thread_type = "AUTO"
    # libdav1d reads skip_frame once, when opened: it must stay at the default.
    skipping = src.codec != "av1"
    current: Literal["DEFAULT", "NONREF", "BIDIR"] = "DEFAULT"
    cc.skip_frame = current
    live = False
    errors = 0
    pos = 0
    n = len(plan.actions)
    for packet in container.demux(stream):
        if packet.size == 0:
            continue
        if pos >= n:
            break
        budget.check()
        action = plan.actions[pos]
        if index.timed and packet.pts != index.ts[pos]:
            raise CorruptMedia("video data is corrupt: the packets differ between two reads")
        pos += 1
        if action == _SKIP:
            if live:
                with suppress(av.error.InvalidDataError, av.error.EOFError):
                    yield from cc.decode(None)
                cc.flush_buffers()
                live = False
                yield None
            continue
        wanted: Literal["DEFAULT", "NONREF", "BIDIR"] = "DEFAULT"
        if skipping and action == _REF:
            wanted = "NONREF"
        elif skipping and action == _ANCHOR:
            wanted = "BIDIR"
        if wanted != current:
            cc.skip_frame = current = wanted
        live = True
        try:
            frames = cc.decode(packet)
        except (av.error.InvalidDataError, av.error.EOFError) as exc:
            errors += 1
            if errors > _MAX_DECODE_ERRORS:
                raise CorruptMedia(
                    f"video data is truncated or corrupt: the decoder rejected {errors} "
                    f"packets ({_describe(exc)})"
                ) from exc
            continue
        yield from frames
    if live:
        # A damaged last packet: the frames before it stand.
        with suppress(av.error.InvalidDataError, av.error.EOFError):
            yield from cc.decode(None)


def _luma_thumb(frame: VideoFrame) -> Thumb:
    """About _THUMB_COLS x _THUMB_ROWS luma samples, read in place from the Y plane."""
    width, height = frame.width, frame.height
    sx, sy = max(1, width // _THUMB_COLS), max(1, height // _THUMB_ROWS)
    name = frame.format.name
    shift = _Y16_SHIFT.get(name)
    if name in _Y8_FORMATS:
        plane = frame.planes[0]
        rows = np.frombuffer(memoryview(plane), np.uint8, count=plane.line_size * height)
        points = rows.reshape(height, plane.line_size)[sy // 2 :: sy, sx // 2 : width : sx]
        return points.astype(np.int16)
    if shift is not None:
        plane = frame.planes[0]
        stride = plane.line_size // 2
        wide = np.frombuffer(memoryview(plane), np.dtype("<u2"), count=stride * height)
        samples = wide.reshape(height, stride)[sy // 2 :: sy, sx // 2 : width : sx]
        return (samples >> shift).astype(np.int16)
    grey = frame.reformat(width=_THUMB_COLS, height=_THUMB_ROWS, format="gray")
    return grey.to_ndarray().astype(np.int16)


def _rotation_cw(frame: VideoFrame) -> int:
    """Clockwise degrees (0, 90, 180, 270) that show the frame upright."""
    return (-round(frame.rotation / 90) * 90) % 360


def _display_size(width: int, height: int, sar: Fraction | None) -> tuple[int, int]:
    """Size with non-square pixels stretched; absurd aspect ratios are ignored."""
    if sar is None or sar == 1 or not Fraction(1, 4) <= sar <= 4:
        return width, height
    return max(1, round(width * sar)), height


def _render(
    frame: VideoFrame, src: _Source, target_side: int, scaler: VideoReformatter
) -> Image.Image:
    """The frame upright in RGB, longest side fit to ``target_side`` by swscale."""
    rotation = _rotation_cw(frame)
    width, height = _display_size(frame.width, frame.height, src.sar)
    turned = rotation in (90, 270)
    if turned:
        width, height = height, width
    out_w, out_h = fit_size(width, height, target_side)
    if turned:
        out_w, out_h = out_h, out_w
    # AREA averages the source pixels like the image path's BOX filter.
    image = scaler.reformat(frame, out_w, out_h, "rgb24", interpolation="AREA")
    img: Image.Image = image.to_image()
    transpose = _ROTATE.get(rotation)
    return img.transpose(transpose) if transpose is not None else img


def _describe(exc: BaseException) -> str:
    import av

    if isinstance(exc, av.error.FFmpegError):
        return str(exc.strerror or type(exc).__name__)
    return f"{type(exc).__name__}: {exc}"


@contextmanager
def _refusals() -> Iterator[None]:
    """Turn whatever PyAV, FFmpeg or numpy raises into the SignalError that names it."""
    import av

    try:
        yield
    except SignalError:
        raise
    except (av.error.DecoderNotFoundError, av.error.PatchWelcomeError) as exc:
        raise UnsupportedFormat(f"the video uses a feature FFmpeg cannot decode: {exc}") from exc
    except MemoryError as exc:
        raise MediaTooLarge(f"decoding the video ran out of memory ({_describe(exc)})") from exc
    except (
        av.error.FFmpegError,
        ValueError,
        ArithmeticError,
        OSError,
        EOFError,
        RuntimeError,
        IndexError,
        KeyError,
        TypeError,
        struct.error,
    ) as exc:
        raise CorruptMedia(f"video data is truncated or corrupt: {_describe(exc)}") from exc
