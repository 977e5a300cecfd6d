"""Video probing and sampling: the grid, cuts, rotation, containers, limits and refusals."""

from __future__ import annotations

import io
import itertools
import math
import random
import struct
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from fractions import Fraction
from functools import cache
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

pytest.importorskip("av")
pytest.importorskip("skimage")

from models.errors import CorruptMedia, MediaTooLarge, SignalError, UnsupportedFormat
from models.video_decode import (
    _SKIP,
    MATROSKA,
    MP4,
    SampledFrame,
    VideoInfo,
    VideoLimits,
    _Budget,
    _plan,
    _read_index,
    _Source,
    probe_video,
    sample_frames,
)
from tests.images import jpeg, photo, png

W, H = 320, 180
FPS = 25
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
# x264 presets: ultrafast has no B-frames and no scene-cut keyframes; veryfast has both.
FAST = {"preset": "ultrafast"}
BFRAMES = {"preset": "veryfast"}

Array = npt.NDArray[np.uint8]


@cache
def _photo(name: str) -> Array:
    return np.asarray(photo(name, (480, 360)))


def shot_frame(name: str, t: float, size: tuple[int, int] = (W, H)) -> Array:
    """A slow pan (20 px/s) across one photo."""
    w, h = size
    x, y = int(20 * t), int(8 * t)
    return np.ascontiguousarray(_photo(name)[y : y + h, x : x + w])


def clip(
    seconds: float, *, fps: float = FPS, cuts: Iterable[float] = (), size: tuple[int, int] = (W, H)
) -> Iterator[Array]:
    """Frames of hard-cut shots, one photo each, cutting at ``cuts`` (seconds)."""
    cuts = tuple(cuts)
    for i in range(round(seconds * fps)):
        t = i / fps
        shot = sum(t >= c for c in cuts)
        yield shot_frame(PHOTOS[shot % len(PHOTOS)], t, size)


def encode(
    frames: Iterable[Array],
    *,
    fps: float | Fraction = FPS,
    fmt: str = "mp4",
    codec: str = "libx264",
    options: dict[str, str] | None = None,
    pix_fmt: str = "yuv420p",
    rotation: float | None = None,
    audio_streams: int = 0,
    container_options: dict[str, str] | None = None,
    path: Path | None = None,
) -> bytes:
    """Encode RGB frames with PyAV (to ``path`` when the muxer must seek back, e.g. faststart)."""
    import av

    target: Path | io.BytesIO = path if path is not None else io.BytesIO()
    out = av.open(target, "w", format=fmt, options=container_options or {})
    rate = Fraction(fps).limit_denominator(1001)
    video = out.add_stream(codec, rate=rate)
    frames = list(frames)
    video.height, video.width = frames[0].shape[:2]
    video.pix_fmt = pix_fmt
    video.options = dict(FAST if options is None and codec == "libx264" else options or {})
    if rotation is not None:
        video.set_display_rotation(rotation)
    audios = [out.add_stream("aac", rate=44100) for _ in range(audio_streams)]
    for arr in frames:
        for packet in video.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
            out.mux(packet)
    for packet in video.encode():
        out.mux(packet)
    for stream in audios:
        _write_silence(stream, out, seconds=len(frames) / float(fps))
    out.close()
    if isinstance(target, io.BytesIO):
        return target.getvalue()
    return target.read_bytes()


def _write_silence(stream, out, seconds: float) -> None:  # type: ignore[no-untyped-def]
    import av

    for i in range(int(seconds * 44100 / 1024) + 1):
        frame = av.AudioFrame.from_ndarray(
            np.zeros((1, 1024), np.float32), format="fltp", layout="mono"
        )
        frame.sample_rate, frame.pts = 44100, i * 1024
        for packet in stream.encode(frame):
            out.mux(packet)
    for packet in stream.encode():
        out.mux(packet)


def audio_only(fmt: str = "mp4") -> bytes:
    import av

    buf = io.BytesIO()
    out = av.open(buf, "w", format=fmt)
    _write_silence(out.add_stream("aac", rate=44100), out, seconds=1.0)
    out.close()
    return buf.getvalue()


def sampled(data: bytes, limits: VideoLimits = VideoLimits(), **kw: object) -> list[SampledFrame]:
    return [f for batch in sample_frames(data, limits, **kw) for f in batch]  # type: ignore[arg-type]


def times(frames: list[SampledFrame], *, cuts: bool | None = None) -> list[float]:
    return [round(f.t, 3) for f in frames if cuts is None or f.scene_change == cuts]


def on_grid(ts: list[float], n: int) -> bool:
    """``n`` grid frames, the k-th at or just after k s: H.264 grid frames are I- or
    P-frames, and x264 puts at most 3 B-frames between them."""
    return len(ts) == n and all(0 <= t - k <= 4 / FPS + 1e-9 for k, t in enumerate(ts))


def mad(a: Array, b: Array) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


@cache
def five_seconds(options: tuple[tuple[str, str], ...] = tuple(FAST.items())) -> bytes:
    return encode(clip(5), options=dict(options))


@cache
def with_cut(options: tuple[tuple[str, str], ...]) -> bytes:
    """6 s, cutting from the astronaut to the coffee at 2.3 s (frame 58, t = 2.32)."""
    return encode(clip(6, cuts=[2.3]), options=dict(options))


# --- the grid -----------------------------------------------------------------------------


@pytest.mark.parametrize("options", [FAST, BFRAMES], ids=["ultrafast", "bframes"])
def test_grid_is_the_first_frame_at_or_after_each_second(options: dict[str, str]) -> None:
    frames = sampled(five_seconds(tuple(options.items())))
    if options is FAST:
        assert times(frames) == [0.0, 1.0, 2.0, 3.0, 4.0]
    else:
        assert on_grid(times(frames), 5)
    assert not any(f.scene_change for f in frames)
    for f in frames:
        assert f.image.mode == "RGB" and f.image.size == (W, H)  # never upscaled
        # Each grid frame is the source frame at its time, not a neighbour.
        assert mad(np.asarray(f.image), shot_frame("astronaut", f.t)) < 6


def test_grid_at_other_rates_and_frame_rates() -> None:
    # 25 fps has no frame at k + 0.5: the next one, 0.02 s later, is taken
    assert times(sampled(five_seconds(), fps=2.0)) == [k / 2 + 0.02 * (k % 2) for k in range(10)]
    assert times(sampled(five_seconds(), fps=0.5)) == [0.0, 2.0, 4.0]
    ntsc = Fraction(30000, 1001)
    data = encode(clip(4, fps=30000 / 1001), fps=ntsc, options=BFRAMES)
    got = times(sampled(data))
    assert len(got) == 4
    for k, t in enumerate(got):  # the first frame at or after k, so less than a frame late
        assert k <= t < k + 1001 / 30000


def test_images_are_fit_to_target_side() -> None:
    frames = sampled(five_seconds(), target_side=160)
    assert {f.image.size for f in frames} == {(160, 90)}


def test_batches_keep_order_and_size() -> None:
    data = five_seconds()
    assert [len(b) for b in sample_frames(data, batch_size=2)] == [2, 2, 1]
    assert [len(b) for b in sample_frames(data)] == [5]
    assert [len(b) for b in sample_frames(data, batch_size=1)] == [1] * 5


def test_sampling_is_deterministic() -> None:
    data = with_cut(tuple(BFRAMES.items()))
    a, b = sampled(data), sampled(data)
    assert [(f.t, f.scene_change) for f in a] == [(f.t, f.scene_change) for f in b]
    assert [f.image.tobytes() for f in a] == [f.image.tobytes() for f in b]


def test_bad_arguments_raise_value_error_at_once() -> None:
    data = five_seconds()
    for kw in ({"fps": 0}, {"fps": float("nan")}, {"target_side": 0}, {"batch_size": 0}):
        with pytest.raises(ValueError) as info:
            sample_frames(data, **kw)  # type: ignore[arg-type]
        assert not isinstance(info.value, SignalError)
    with pytest.raises(ValueError, match="max_fps"):
        VideoLimits(max_fps=0)
    with pytest.raises(ValueError, match="allowed_containers"):
        VideoLimits(allowed_containers=frozenset({"ogg"}))


# --- cuts ---------------------------------------------------------------------------------


CUT_ENCODINGS = {
    # no keyframe at the cut, one GOP: every reference frame is decoded
    "ultrafast": FAST,
    # a scene-cut keyframe and B-frames
    "bframes": BFRAMES,
    # 1 s GOPs and no keyframe at the cut: later GOP tails are skipped, the cut is a spike
    "short-gop": {"preset": "ultrafast", "g": "25"},
    # 1 s GOPs with a scene-cut keyframe breaking the cadence
    "short-gop-scenecut": {"preset": "veryfast", "g": "25"},
}


@pytest.mark.parametrize("options", CUT_ENCODINGS.values(), ids=CUT_ENCODINGS.keys())
def test_a_hard_cut_is_sampled_at_its_time(options: dict[str, str]) -> None:
    frames = sampled(with_cut(tuple(options.items())))
    assert on_grid(times(frames, cuts=False), 6)
    cuts = [f for f in frames if f.scene_change]
    assert [round(f.t, 2) for f in cuts] == [2.32]
    shown = np.asarray(cuts[0].image)
    assert (
        mad(shown, shot_frame("coffee", 2.32)) < 8 < 30 < mad(shown, shot_frame("astronaut", 2.32))
    )
    assert times(frames) == sorted(times(frames))


def test_cut_in_ten_bit_hevc_without_reference_b_frames() -> None:
    # x265's B-frames are not references: the cut is found on the first frame decoded
    # after it, at most a few frames late. The luma is read from 16-bit samples.
    options = {"preset": "ultrafast", "x265-params": "log-level=error"}
    data = encode(clip(3, cuts=[1.5]), codec="libx265", pix_fmt="yuv420p10le", options=options)
    frames = sampled(data)
    assert on_grid(times(frames, cuts=False), 3)
    (cut,) = [f for f in frames if f.scene_change]
    assert 1.52 <= cut.t <= 1.64
    assert mad(np.asarray(cut.image), shot_frame("coffee", cut.t)) < 10


def test_short_gops_skip_the_packets_no_frame_needs() -> None:
    data = with_cut((("preset", "ultrafast"), ("g", "25")))
    src = _Source.open(data, VideoLimits())
    try:
        index = _read_index(src, VideoLimits(), _Budget(60))
    finally:
        src.close()
    actions = _plan(index, (index.time_base.numerator, index.time_base.denominator)).actions
    # Each 25-frame GOP starts on a grid frame: only the keyframes, and the cut's GOP up to
    # the cut, are decoded.
    assert actions.count(_SKIP) > 100
    assert sum(a != _SKIP for a in actions) <= 6 + 9


def test_panning_without_cuts_reports_none() -> None:
    for options in (FAST, BFRAMES):
        frames = sampled(five_seconds(tuple(options.items())))
        assert not [f.t for f in frames if f.scene_change]


def fast_pan(seconds: float) -> Iterator[Array]:
    """200 px/s across a large photo: consecutive frames differ a lot, but steadily."""
    big = np.asarray(photo("astronaut", (1600, 1600)))
    for i in range(round(seconds * FPS)):
        x = int(200 * i / FPS)
        yield np.ascontiguousarray(big[100 : 100 + H, x : x + W])


@pytest.mark.parametrize("gop", ["20", "25", "250"])
def test_fast_motion_is_not_a_cut(gop: str) -> None:
    # With 0.8 s GOPs the decoded frames jump over skipped stretches (1.0 s, then 1.6 s):
    # frames on either side of a jump are never compared.
    frames = sampled(encode(fast_pan(5), options={"preset": "ultrafast", "g": gop}))
    assert times(frames) == [0.0, 1.0, 2.0, 3.0, 4.0]


def test_scene_threshold_controls_cut_sampling() -> None:
    data = with_cut(tuple(BFRAMES.items()))
    assert not [f for f in sampled(data, scene_threshold=255) if f.scene_change]
    extra = times(sampled(data, scene_threshold=0), cuts=True)
    assert len(extra) > 6  # motion alone now counts
    # ... but never less than 0.25 s after another cut, nor less than 0.25 s before a grid time
    assert all(b - a >= 0.25 for a, b in itertools.pairwise(extra))
    assert all(math.ceil(t) - t >= 0.25 for t in extra)


def test_a_cut_right_after_a_grid_frame_is_sampled() -> None:
    data = encode(clip(3, cuts=[1.08]), options=BFRAMES)
    frames = sampled(data)
    assert times(frames, cuts=True) == [1.08]
    # ... and one shortly before a grid time is left to the grid frame
    frames = sampled(encode(clip(3, cuts=[1.84]), options=BFRAMES))
    assert times(frames, cuts=True) == []
    assert mad(np.asarray(frames[2].image), shot_frame("coffee", 2.0)) < 8


def test_cap_keeps_the_grid_before_cuts() -> None:
    data = with_cut(tuple(BFRAMES.items()))
    assert on_grid(times(sampled(data, VideoLimits(max_sampled_frames=6))), 6)
    assert on_grid(times(sampled(data, VideoLimits(max_sampled_frames=3))), 3)
    assert len(sampled(data, VideoLimits(max_sampled_frames=7))) == 7


# --- rotation and aspect ------------------------------------------------------------------


def _quadrant() -> Array:
    arr = np.zeros((64, 128, 3), np.uint8)
    arr[:32, :64] = 255  # top-left quarter white
    return arr


@pytest.mark.parametrize(
    ("matrix", "rotation", "white_corner"),
    [
        (None, 0, (0, 0)),
        (-90, 90, (0, -1)),  # phones' portrait tag: turn clockwise, top-left goes top-right
        (90, 270, (-1, 0)),
        (180, 180, (-1, -1)),
    ],
)
def test_rotation_metadata_is_applied(
    matrix: float | None, rotation: int, white_corner: tuple[int, int]
) -> None:
    data = encode([_quadrant()] * 10, rotation=matrix, options={"preset": "ultrafast", "qp": "5"})
    info = probe_video(data)
    assert info.rotation == rotation
    turned = rotation in (90, 270)
    assert (info.width, info.height) == ((64, 128) if turned else (128, 64))
    (frame,) = sampled(data, fps=0.1)
    arr = np.asarray(frame.image.convert("L"))
    assert arr.shape == ((128, 64) if turned else (64, 128))
    r, c = white_corner
    corners = {(0, 0): arr[5, 5], (0, -1): arr[5, -6], (-1, 0): arr[-6, 5], (-1, -1): arr[-6, -6]}
    assert corners.pop((r, c)) > 200
    assert all(v < 50 for v in corners.values())


def test_non_square_pixels_are_stretched_to_their_display_aspect() -> None:
    import av

    buf = io.BytesIO()
    out = av.open(buf, "w", format="mp4")
    video = out.add_stream("libx264", rate=FPS)
    video.width, video.height, video.pix_fmt = W, H, "yuv420p"
    video.codec_context.sample_aspect_ratio = Fraction(2, 1)
    video.options = FAST
    for arr in clip(1):
        for packet in video.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
            out.mux(packet)
    for packet in video.encode():
        out.mux(packet)
    out.close()
    info = probe_video(buf.getvalue())
    assert (info.width, info.height) == (2 * W, H)
    assert [f.image.size for f in sampled(buf.getvalue())] == [(512, 144)]


# --- containers and codecs ----------------------------------------------------------------


CONTAINERS = {
    "mp4": ("mp4", "libx264", BFRAMES, MP4),
    "mov-mjpeg": ("mov", "mjpeg", {}, MP4),
    "mkv": ("matroska", "libx264", BFRAMES, MATROSKA),
    "webm-vp9": ("webm", "libvpx-vp9", {"deadline": "realtime", "cpu-used": "8"}, MATROSKA),
    "webm-vp8": ("webm", "libvpx", {"deadline": "realtime", "cpu-used": "8"}, MATROSKA),
    "mp4-av1": ("mp4", "libsvtav1", {"preset": "12"}, MP4),  # libdav1d never skips frames
    "mp4-hevc": ("mp4", "libx265", {"preset": "ultrafast", "x265-params": "log-level=error"}, MP4),
    "avi-mpeg4": ("avi", "mpeg4", {}, "avi"),
    "avi-bframes": ("avi", "libx264", BFRAMES, "avi"),  # no presentation timestamps
    "mpegts": ("mpegts", "libx264", BFRAMES, "mpegts"),
    "flv": ("flv", "libx264", BFRAMES, "flv"),
}


@pytest.mark.parametrize("spec", CONTAINERS.values(), ids=CONTAINERS.keys())
def test_containers_and_codecs(spec: tuple[str, str, dict[str, str], str]) -> None:
    fmt, codec, options, name = spec
    pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
    data = encode(clip(3), fmt=fmt, codec=codec, options=options, pix_fmt=pix_fmt)
    info = probe_video(data)
    assert (info.container, info.width, info.height, info.fps) == (name, W, H, 25.0)
    assert abs(info.duration_s - 3.0) < 0.05 and info.frames == 75
    frames = sampled(data)
    assert on_grid(times(frames), 3)
    for f in frames:
        assert mad(np.asarray(f.image), shot_frame("astronaut", f.t)) < 10


def test_probe_describes_the_video() -> None:
    data = encode(clip(2), audio_streams=1)
    assert probe_video(data) == VideoInfo(
        container=MP4,
        codec="h264",
        width=W,
        height=H,
        fps=25.0,
        duration_s=2.0,
        has_audio=True,
        rotation=0,
        frames=50,
    )
    assert probe_video(five_seconds()).has_audio is False


def test_module_import_does_not_load_pyav() -> None:
    code = "import sys, models.video_decode; sys.exit('av' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


# --- refusals -----------------------------------------------------------------------------


def refusal(data: bytes, limits: VideoLimits = VideoLimits()) -> SignalError:
    """The error both entry points raise, checked to be the same."""
    with pytest.raises(SignalError) as probed:
        probe_video(data, limits)
    with pytest.raises(SignalError) as sampling:
        sampled(data, limits)
    assert type(probed.value) is type(sampling.value)
    assert str(probed.value) == str(sampling.value)
    return probed.value


def test_empty_and_random_bytes() -> None:
    err = refusal(b"")
    assert isinstance(err, CorruptMedia) and "empty" in str(err)
    noise = random.Random(7).randbytes(100_000)
    err = refusal(noise)
    assert isinstance(err, UnsupportedFormat) and "unrecognised video format" in str(err)
    assert "MP4/MOV, Matroska/WebM, AVI, MPEG-TS, FLV" in str(err)


@pytest.mark.parametrize(
    ("data", "what"),
    [
        (png(photo("astronaut", (64, 64))), "PNG image, not a video"),
        (jpeg(photo("astronaut", (64, 64))), "JPEG image, not a video"),
        (b"GIF89a" + bytes(100), "GIF image, not a video"),
        (b"Hello, this is not a video at all.\n" * 20, "text, not a video"),
        (b"ID3\x04\x00" + bytes(500), "MP3 audio"),
        (b"RIFF\x00\x01\x00\x00WAVEfmt " + bytes(100), "WAV audio"),
        (b"OggS" + bytes(100), "Ogg files are not supported"),
    ],
    ids=["png", "jpeg", "gif", "text", "mp3", "wav", "ogg"],
)
def test_non_video_data_is_named(data: bytes, what: str) -> None:
    err = refusal(data)
    assert isinstance(err, UnsupportedFormat) and what in str(err)


@pytest.mark.parametrize("fmt", ["mp4", "matroska"])
def test_audio_only_files(fmt: str) -> None:
    err = refusal(audio_only(fmt))
    assert isinstance(err, UnsupportedFormat)
    assert str(err) == "the file has no video stream (audio only)"


def test_audio_with_cover_art_is_audio_only() -> None:
    import av

    buf = io.BytesIO()
    out = av.open(buf, "w", format="mp4")
    audio = out.add_stream("aac", rate=44100)
    cover = out.add_stream("mjpeg", rate=1)
    cover.width, cover.height, cover.pix_fmt = 64, 64, "yuvj420p"
    cover.disposition = av.stream.Disposition.attached_pic
    picture = av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), np.uint8), format="rgb24")
    for packet in [*cover.encode(picture), *cover.encode()]:
        out.mux(packet)
    _write_silence(audio, out, seconds=1.0)
    out.close()
    err = refusal(buf.getvalue())
    assert isinstance(err, UnsupportedFormat) and "(audio only)" in str(err)


def test_zero_length_video_stream() -> None:
    import av

    buf = io.BytesIO()
    out = av.open(buf, "w", format="matroska")
    video = out.add_stream("libx264", rate=FPS)
    video.width, video.height, video.pix_fmt = 64, 64, "yuv420p"
    _write_silence(out.add_stream("aac", rate=44100), out, seconds=1.0)
    out.close()
    err = refusal(buf.getvalue())
    assert isinstance(err, CorruptMedia) and "no frames (zero-length)" in str(err)


def test_truncated_files(tmp_path: Path) -> None:
    frames = list(clip(4))
    moov_last = encode(frames)
    err = refusal(moov_last[: len(moov_last) // 2])
    assert isinstance(err, CorruptMedia) and "truncated or corrupt" in str(err)

    fast_start = encode(
        frames, container_options={"movflags": "faststart"}, path=tmp_path / "f.mp4"
    )
    assert fast_start[:64].find(b"moov") > 0 or fast_start.find(b"moov") < len(fast_start) // 2
    err = refusal(fast_start[: len(fast_start) // 2])
    assert isinstance(err, CorruptMedia)
    assert "truncated: the header lists 100 frames, the file holds" in str(err)

    mkv = encode(frames, fmt="matroska", path=tmp_path / "f.mkv")
    err = refusal(mkv[: len(mkv) // 2])
    assert isinstance(err, CorruptMedia) and "truncated: 4.0 s declared" in str(err)


def test_streams_without_a_declared_length_are_sampled_up_to_the_cut() -> None:
    ts = encode(clip(4), fmt="mpegts")
    got = times(sampled(ts[: len(ts) // 2]))
    assert got and got == [float(k) for k in range(len(got))] and len(got) < 4


@pytest.mark.parametrize(
    "magic",
    [
        b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2",
        b"\x1a\x45\xdf\xa3",
        b"RIFF\x00\x10\x00\x00AVI LIST",
        b"FLV\x01\x05\x00\x00\x00\x09",
        b"\x47\x40\x00\x10" + bytes(184) + b"\x47",
    ],
    ids=["mp4", "mkv", "avi", "flv", "mpegts"],
)
def test_container_magic_followed_by_garbage(magic: bytes) -> None:
    data = magic + random.Random(len(magic)).randbytes(20_000)
    if magic.startswith(b"\x47"):  # keep the sync bytes, or it is not MPEG-TS at all
        data = bytearray(data)
        data[::188] = b"\x47" * len(data[::188])
        data = bytes(data)
    err = refusal(data)
    assert isinstance(err, CorruptMedia | UnsupportedFormat)
    assert isinstance(err, CorruptMedia) or "no video stream" in str(err)


def test_damaged_bytes_never_escape_as_other_errors() -> None:
    good = five_seconds()
    rng = random.Random(11)
    outcomes = set()
    for _ in range(24):
        bad = bytearray(good)
        for _ in range(rng.choice([1, 10, 200])):
            bad[rng.randrange(len(bad))] = rng.randrange(256)
        try:
            frames = sampled(bytes(bad))
            assert frames and times(frames) == sorted(times(frames))
            outcomes.add("sampled")
        except SignalError as exc:
            outcomes.add(type(exc).__name__)
    assert "sampled" in outcomes  # most single-byte damage is concealed


# --- limits -------------------------------------------------------------------------------


def test_byte_limit() -> None:
    err = refusal(five_seconds(), VideoLimits(max_bytes=1000))
    assert isinstance(err, MediaTooLarge) and "over the limit of 1000" in str(err)


def test_declared_duration_limit() -> None:
    err = refusal(five_seconds(), VideoLimits(max_duration_s=2))
    assert isinstance(err, MediaTooLarge)
    assert str(err) == "video is 5.0 s long; the limit is 2 s"


def test_measured_duration_limit_when_none_is_declared() -> None:
    flv = encode(clip(5), fmt="flv")  # FLV's duration is not trusted: it is measured
    err = refusal(flv, VideoLimits(max_duration_s=2))
    assert isinstance(err, MediaTooLarge)
    assert "video is over 2 s long (its timestamps pass 2.0" in str(err)


def test_frame_size_limits() -> None:
    err = refusal(five_seconds(), VideoLimits(max_width=200, max_height=200))
    assert isinstance(err, MediaTooLarge)
    assert str(err) == "frame size 320x180 is over the limit of 200x200"
    # Either orientation may fit: a portrait limit accepts a landscape video.
    assert probe_video(five_seconds(), VideoLimits(max_width=180, max_height=320)).width == W
    err = refusal(five_seconds(), VideoLimits(max_pixels=10_000))
    assert isinstance(err, MediaTooLarge) and "57600 pixels, over the limit of 10000" in str(err)


def test_frame_rate_limit() -> None:
    err = refusal(five_seconds(), VideoLimits(max_fps=10))
    assert isinstance(err, MediaTooLarge)
    assert str(err) == "frame rate is 25.0 fps; the limit is 10"


def test_frame_count_limit() -> None:
    # The MP4 sample table is read before FFmpeg indexes it.
    err = refusal(five_seconds(), VideoLimits(max_duration_s=10, max_fps=10))
    assert isinstance(err, MediaTooLarge)
    assert str(err) == "the video track lists 125 frames; the limits allow 100 (10 s at 10 fps)"


def test_codec_and_container_allow_lists() -> None:
    mpeg4 = encode(clip(1), codec="mpeg4")
    assert probe_video(mpeg4).codec == "mpeg4"
    err = refusal(mpeg4, VideoLimits(allowed_codecs=frozenset({"h264", "vp9"})))
    assert isinstance(err, UnsupportedFormat)
    assert str(err) == "codec 'mpeg4' is not allowed (allowed: h264, vp9)"
    ffv1 = encode(clip(1), fmt="matroska", codec="ffv1")
    err = refusal(ffv1)
    assert isinstance(err, UnsupportedFormat) and "codec 'ffv1' is not allowed" in str(err)
    mkv = encode(clip(1), fmt="matroska")
    err = refusal(mkv, VideoLimits(allowed_containers=frozenset({MP4})))
    assert isinstance(err, UnsupportedFormat)
    assert str(err) == "container 'matroska,webm' (Matroska/WebM) is not allowed (allowed: MP4/MOV)"


def test_stream_count_limit() -> None:
    data = encode(clip(1), fmt="matroska", audio_streams=3)
    assert probe_video(data).has_audio
    err = refusal(data, VideoLimits(max_streams=3))
    assert isinstance(err, MediaTooLarge) and str(err) == "the file has 4 streams; the limit is 3"


def _patched(
    data: bytes, box: bytes, offset: int, fmt: str, *values: int, after: bytes = b""
) -> bytes:
    """``values`` packed at ``offset`` from the first ``box`` type after ``after``."""
    at = data.find(box, data.find(after) if after else 0)
    assert at > 0
    out = bytearray(data)
    struct.pack_into(fmt, out, at + offset, *values)
    return bytes(out)


def test_absurd_headers() -> None:
    mp4 = five_seconds()
    # mvhd (version 0): timescale 1, duration 2^31 - 1 seconds (all ones means unknown)
    err = refusal(_patched(mp4, b"mvhd", 16, ">II", 1, 0x7FFFFFFF))
    assert isinstance(err, MediaTooLarge) and "2147483647.0 s long" in str(err)
    err = refusal(_patched(mp4, b"mdhd", 16, ">II", 1, 0x7FFFFFFF))
    assert isinstance(err, MediaTooLarge) and "2147483647.0 s long" in str(err)
    # mdhd timescale 1e9: frames nanoseconds apart
    err = refusal(_patched(mp4, b"mdhd", 16, ">I", 1_000_000_000))
    assert isinstance(err, MediaTooLarge) and "fps; the limit is 240" in str(err)
    # Matroska Duration (8-byte float, in 1 ms ticks): 1e12 seconds
    mkv = bytearray(encode(clip(1), fmt="matroska"))
    at = mkv.find(b"\x44\x89\x88")
    struct.pack_into(">d", mkv, at + 3, 1e15)
    err = refusal(bytes(mkv))
    assert isinstance(err, MediaTooLarge)
    assert str(err) == "video is 1000000000000.0 s long; the limit is 600 s"
    # A container that lies about the frame size is overruled by the bitstream's own
    # (same aspect ratio as the track header, which would otherwise set the pixel aspect)
    lying = _patched(mp4, b"avc1", 28, ">HH", 60000, 33750, after=b"stsd")
    assert lying.count(struct.pack(">HH", 60000, 33750)) == 1
    info = probe_video(lying)
    assert (info.width, info.height) == (W, H)
    assert times(sampled(lying)) == [0, 1, 2, 3, 4]
    avi = encode(clip(2), fmt="avi", codec="mpeg4")
    # strh rate 1e9 frames per second
    err = refusal(_patched(avi, b"strh", 28, "<II", 1, 1_000_000_000))
    assert isinstance(err, MediaTooLarge) and "frame rate is 1000000000.0 fps" in str(err)
    # strh length: two billion frames
    err = refusal(_patched(avi, b"strh", 40, "<I", 2_000_000_000))
    assert isinstance(err, MediaTooLarge) and "80000000.0 s long" in str(err)
    # JPEG frames declaring 60000x60000 in an AVI whose header says 320x180: the decoder
    # refuses them before allocating
    mjpeg = bytearray(encode(clip(1), fmt="avi", codec="mjpeg", pix_fmt="yuvj420p"))
    for at in [i for i in range(len(mjpeg) - 1) if mjpeg[i : i + 2] == b"\xff\xc0"]:
        struct.pack_into(">HH", mjpeg, at + 5, 60000, 60000)
    err = refusal(bytes(mjpeg))
    assert isinstance(err, CorruptMedia) and "no frame of the video stream decodes" in str(err)


def test_decode_budget() -> None:
    err = refusal(five_seconds(), VideoLimits(decode_budget_s=1e-9))
    assert isinstance(err, MediaTooLarge)
    assert str(err) == "decoding took longer than 1e-09 s (the budget for one video)"


def test_budget_does_not_count_the_callers_time() -> None:
    limits = VideoLimits(decode_budget_s=1.0)
    got = []
    for batch in sample_frames(five_seconds(), limits, batch_size=1):
        time.sleep(0.3)  # the caller classifying: 1.5 s in all
        got.extend(batch)
    assert len(got) == 5
