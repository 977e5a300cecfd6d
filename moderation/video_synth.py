"""Synthetic test videos: scikit-image's bundled photos panned and zoomed, encoded with PyAV.

The video benchmark (``moderation bench video``) and the tests need many videos whose
content, timing and re-upload transforms are known exactly, without shipping any. A
:class:`Script` is a run of hard-cut shots, each a box moving and zooming across one photo
(6-12 % of the box per second, so frames sampled 1 s apart differ yet stay related); the
same seed always gives the same script and the same bytes.

The photos are split into two fixed folds, alternate entries of ``PHOTOS``: references are
made only from :func:`reference_photos` (astronaut, camera, chelsea, coffee, grass,
hubble_deep_field, moon, retina, text), distractors only from :func:`distractor_photos`
(brick, cell, clock, coins, gravel, immunohistochemistry, page, rocket), so a distractor
shares no source pixels with any reference and can never legitimately match one. References
do share photos among themselves (there are only nine); :meth:`Script.source` and
:func:`box_overlap` tell a benchmark when two moments show the same part of a photo.

Frames are rendered straight into BT.601 limited-range YUV 4:2:0, the encoder's input, by
nearest-neighbour sampling of a photo region pre-scaled once per shot: about 1 ms a 720p
frame, leaving nearly all the time to x264.
"""

from __future__ import annotations

import dataclasses
import io
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from moderation.bench_robustness import PHOTOS

if TYPE_CHECKING:
    import av
    from PIL import Image

__all__ = [
    "TRANSFORMS",
    "Script",
    "Shot",
    "Transform",
    "box_overlap",
    "clip_frame_indices",
    "clip_size",
    "combine",
    "distractor_photos",
    "distractor_scripts",
    "encode",
    "make_clip",
    "make_video",
    "random_script",
    "reference_photos",
    "reference_scripts",
    "render_clip",
    "render_frame",
    "render_frames",
]

Box = tuple[float, float, float, float]  # (left, top, right, bottom) as fractions of the photo
Plane = npt.NDArray[np.uint8]
Planes = tuple[Plane, Plane, Plane]  # Y (h, w), Cb and Cr (h/2, w/2)
Mask = npt.NDArray[np.bool_]
Logo = tuple[Planes, tuple[Mask, Mask], tuple[int, int]]  # planes, Y and chroma masks, x, y

DEFAULT_CRF = 23
DEFAULT_PRESET = "veryfast"
# x264's output depends on its thread count, never on scheduling: a fixed count, not
# "auto", keeps bytes identical from machine to machine.
ENCODER_THREADS = 2
# Without cpu-independent, x264's CPU-specific lookahead code (AVX-512 here) made the bytes
# of the same input differ from run to run at most sizes; with it they never did, at no
# measurable cost, and they no longer depend on the CPU either.
X264_PARAMS = "cpu-independent=1"

# Motion of a random shot. Box sizes are fractions of the largest box of the frame's
# aspect ratio that fits the photo; pan is in box widths per second, zoom in log-size per
# second. Together they move the picture 6-12 % a second: a 1 s offset shows, the photo stays.
BOX_SIZE = (0.45, 0.75)
PAN_PER_SECOND = (0.06, 0.12)
ZOOM_PER_SECOND = 0.04
# The region pre-scaled for a shot is capped (pixels); past it frames are upscaled instead.
MAX_SOURCE_PIXELS = 8_000_000

LOGO_TEXT = "@reupload"
LOGO_COLOUR = (220, 40, 90)
LOGO_WIDTH = 0.15  # of the output width
BLACK = (16, 128, 128)  # Y, Cb, Cr of black in limited range

# PIL's YCbCr is BT.601 at full range; squeezed to limited range, the range swscale (and
# so PyAV's to_ndarray) assumes when it decodes.
_LIMITED_Y = [round(16 + v * 219 / 255) for v in range(256)]
_LIMITED_C = [round(128 + (v - 128) * 224 / 255) for v in range(256)]


def reference_photos() -> tuple[str, ...]:
    """The fold references are made from: every other photo of ``PHOTOS`` from the first."""
    return PHOTOS[0::2]


def distractor_photos() -> tuple[str, ...]:
    """The other fold, for distractors: no photo in common with :func:`reference_photos`."""
    return PHOTOS[1::2]


@dataclass(frozen=True)
class Shot:
    """One continuous shot: a box moving linearly from ``start_box`` to ``end_box``."""

    photo: str
    seconds: float
    start_box: Box
    end_box: Box

    def box(self, progress: float) -> Box:
        """The box ``progress`` (0..1) of the way through the shot."""
        a, b = self.start_box, self.end_box
        return (
            a[0] + (b[0] - a[0]) * progress,
            a[1] + (b[1] - a[1]) * progress,
            a[2] + (b[2] - a[2]) * progress,
            a[3] + (b[3] - a[3]) * progress,
        )


@dataclass(frozen=True)
class Script:
    """A whole video as hard-cut shots; frame ``n`` shows time ``n / fps``."""

    shots: tuple[Shot, ...]
    size: tuple[int, int] = (1280, 720)
    fps: float = 30.0

    def __post_init__(self) -> None:
        w, h = self.size
        if not self.shots:
            raise ValueError("a script needs at least one shot")
        # 4:2:0 chroma halves both dimensions.
        if w <= 0 or h <= 0 or w % 2 or h % 2:
            raise ValueError(f"size must be positive and even, got {self.size}")

    @property
    def seconds(self) -> float:
        return sum(s.seconds for s in self.shots)

    @property
    def frames(self) -> int:
        return round(self.seconds * self.fps)

    def shot_at(self, frame: int) -> tuple[Shot, float]:
        """The shot frame ``frame`` belongs to, and how far through it (0..1)."""
        if not 0 <= frame < self.frames:
            raise IndexError(f"frame {frame} outside 0..{self.frames - 1}")
        starts = _shot_starts(self)
        i = int(np.searchsorted(starts, frame, side="right")) - 1
        length = starts[i + 1] - starts[i]
        return self.shots[i], (frame - starts[i]) / length

    def source(self, t: float) -> tuple[str, Box]:
        """The photo and box shown at time ``t`` (seconds)."""
        shot, progress = self.shot_at(min(self.frames - 1, math.floor(t * self.fps + 1e-6)))
        return shot.photo, shot.box(progress)


@lru_cache(maxsize=64)
def _shot_starts(script: Script) -> list[int]:
    """First frame of every shot, plus the frame count: shot boundaries on whole frames."""
    ends = np.cumsum([s.seconds for s in script.shots])
    return [0, *(round(float(e) * script.fps) for e in ends)]


def box_overlap(a: tuple[str, Box], b: tuple[str, Box]) -> float:
    """Intersection over union of two (photo, box) views; 0 for different photos."""
    if a[0] != b[0]:
        return 0.0
    (l1, t1, r1, b1), (l2, t2, r2, b2) = a[1], b[1]
    iw = max(0.0, min(r1, r2) - max(l1, l2))
    ih = max(0.0, min(b1, b2) - max(t1, t2))
    inter = iw * ih
    union = (r1 - l1) * (b1 - t1) + (r2 - l2) * (b2 - t2) - inter
    return inter / union if union > 0 else 0.0


# -- scripts -----------------------------------------------------------------------------


@lru_cache(maxsize=64)
def _photo(name: str) -> Image.Image:
    from moderation.samples import photo

    return photo(name)


def random_script(
    rng: np.random.Generator,
    photos: Sequence[str],
    seconds: float,
    *,
    size: tuple[int, int] = (1280, 720),
    fps: float = 30.0,
    shot_seconds: tuple[float, float] = (2.0, 6.0),
) -> Script:
    """``seconds`` of shots of random ``photos`` (never the same twice in a row), cut on frames."""
    if not photos:
        raise ValueError("no photos to script")
    total = round(seconds * fps)
    lo, hi = max(1, round(shot_seconds[0] * fps)), max(1, round(shot_seconds[1] * fps))
    shots: list[Shot] = []
    left, previous = total, None
    while left > 0:
        n = int(rng.integers(lo, hi + 1))
        if left - n < lo:  # no runt shot at the end: take the rest, or split it in two
            n = left if left <= hi else left // 2
        choices = [p for p in photos if p != previous] or list(photos)
        name = choices[int(rng.integers(len(choices)))]
        shots.append(_random_shot(rng, name, n / fps, size[0] / size[1]))
        left -= n
        previous = name
    return Script(tuple(shots), size, fps)


def _random_shot(rng: np.random.Generator, name: str, seconds: float, aspect: float) -> Shot:
    pw, ph = _photo(name).size
    # The largest box of the frame's aspect ratio inside the photo, in photo pixels.
    bw, bh = (ph * aspect, float(ph)) if pw / ph >= aspect else (float(pw), pw / aspect)
    zoom = float(rng.uniform(-ZOOM_PER_SECOND, ZOOM_PER_SECOND))
    pan = float(rng.uniform(*PAN_PER_SECOND))
    mid = min(float(rng.uniform(*BOX_SIZE)), math.exp(-abs(zoom) * seconds / 2))
    angles = rng.uniform(0, 2 * math.pi, 8)
    while True:
        s0, s1 = mid * math.exp(-zoom * seconds / 2), mid * math.exp(zoom * seconds / 2)
        w0, h0, w1, h1 = s0 * bw, s0 * bh, s1 * bw, s1 * bh
        # Room for the centre to travel while both end boxes stay inside the photo.
        room_x, room_y = pw - (w0 + w1) / 2, ph - (h0 + h1) / 2
        travel = pan * seconds * (w0 + w1) / 2
        for angle in angles:
            dx, dy = travel * math.cos(angle), travel * math.sin(angle)
            if abs(dx) <= room_x and abs(dy) <= room_y:
                break
        else:
            mid *= 0.85  # smaller boxes leave more room to pan
            continue
        cx = float(rng.uniform(max(w0 / 2, w1 / 2 - dx), min(pw - w0 / 2, pw - w1 / 2 - dx)))
        cy = float(rng.uniform(max(h0 / 2, h1 / 2 - dy), min(ph - h0 / 2, ph - h1 / 2 - dy)))
        start = (cx - w0 / 2, cy - h0 / 2, cx + w0 / 2, cy + h0 / 2)
        end = (cx + dx - w1 / 2, cy + dy - h1 / 2, cx + dx + w1 / 2, cy + dy + h1 / 2)
        return Shot(name, seconds, _fractions(start, pw, ph), _fractions(end, pw, ph))


def _fractions(box: Box, pw: int, ph: int) -> Box:
    # Clamped: float error must not push a box a hair outside the photo.
    return (
        min(1.0, max(0.0, box[0] / pw)),
        min(1.0, max(0.0, box[1] / ph)),
        min(1.0, max(0.0, box[2] / pw)),
        min(1.0, max(0.0, box[3] / ph)),
    )


def _scripts(
    photos: Sequence[str],
    fold: int,
    n: int,
    seconds: float,
    seed: int,
    size: tuple[int, int],
    fps: float,
) -> list[Script]:
    # One generator per script, so script i is the same whatever n is.
    return [
        random_script(np.random.default_rng([seed, fold, i]), photos, seconds, size=size, fps=fps)
        for i in range(n)
    ]


def reference_scripts(
    n: int,
    seconds: float,
    seed: int = 0,
    *,
    size: tuple[int, int] = (1280, 720),
    fps: float = 30.0,
) -> list[Script]:
    """``n`` reference scripts made from :func:`reference_photos` only."""
    return _scripts(reference_photos(), 0, n, seconds, seed, size, fps)


def distractor_scripts(
    n: int,
    seconds: float,
    seed: int = 0,
    *,
    size: tuple[int, int] = (1280, 720),
    fps: float = 30.0,
) -> list[Script]:
    """``n`` scripts like the references (same motion, same shot lengths) from the other fold."""
    return _scripts(distractor_photos(), 1, n, seconds, seed, size, fps)


# -- rendering ---------------------------------------------------------------------------


def _ycbcr(img: Image.Image) -> tuple[Image.Image, Image.Image, Image.Image]:
    """Full-resolution BT.601 limited-range Y, Cb, Cr of an RGB image (chroma not subsampled)."""
    y, cb, cr = img.convert("YCbCr").split()
    return y.point(_LIMITED_Y), cb.point(_LIMITED_C), cr.point(_LIMITED_C)


@dataclass(frozen=True)
class _Source:
    """A shot's photo region, scaled once so each frame is a plain resample of it."""

    planes: tuple[Image.Image, Image.Image, Image.Image]
    origin: tuple[float, float]  # the region's top-left in photo pixels
    scale: tuple[float, float]  # region pixels per photo pixel, x and y
    photo_size: tuple[int, int]

    def box(self, box: Box) -> tuple[float, float, float, float]:
        """``box`` in region pixels, clamped to the region against float error."""
        pw, ph = self.photo_size
        (ox, oy), (kx, ky) = self.origin, self.scale
        w, h = self.planes[0].size
        return (
            min(w, max(0.0, (box[0] * pw - ox) * kx)),
            min(h, max(0.0, (box[1] * ph - oy) * ky)),
            min(w, max(0.0, (box[2] * pw - ox) * kx)),
            min(h, max(0.0, (box[3] * ph - oy) * ky)),
        )


@lru_cache(maxsize=8)
def _source(shot: Shot, size: tuple[int, int]) -> _Source:
    from PIL import Image

    img = _photo(shot.photo)
    pw, ph = img.size
    a, b = shot.start_box, shot.end_box
    # Boxes move linearly, so every frame's box lies in the hull of the two ends.
    left = max(0, math.floor(min(a[0], b[0]) * pw) - 1)
    top = max(0, math.floor(min(a[1], b[1]) * ph) - 1)
    right = min(pw, math.ceil(max(a[2], b[2]) * pw) + 1)
    bottom = min(ph, math.ceil(max(a[3], b[3]) * ph) + 1)
    # Scaled so that even the smallest box has at least the frame's pixels: every frame is
    # then a decimation (never a blocky enlargement) of a smoothly resampled region.
    smallest_w = min(a[2] - a[0], b[2] - b[0]) * pw
    smallest_h = min(a[3] - a[1], b[3] - b[1]) * ph
    k = max(size[0] / max(smallest_w, 1e-6), size[1] / max(smallest_h, 1e-6))
    k = min(k, math.sqrt(MAX_SOURCE_PIXELS / ((right - left) * (bottom - top))))
    scaled = (max(1, round((right - left) * k)), max(1, round((bottom - top) * k)))
    region = img.resize(scaled, Image.Resampling.LANCZOS, box=(left, top, right, bottom))
    planes = _ycbcr(region)
    scale = (scaled[0] / (right - left), scaled[1] / (bottom - top))
    return _Source(planes, (float(left), float(top)), scale, (pw, ph))


def _frame_planes(script: Script, frame: int) -> Planes:
    from PIL import Image

    shot, progress = script.shot_at(frame)
    src = _source(shot, script.size)
    box = src.box(shot.box(progress))
    w, h = script.size
    nearest = Image.Resampling.NEAREST
    y, cb, cr = src.planes
    return (
        np.asarray(y.resize((w, h), nearest, box=box)),
        np.asarray(cb.resize((w // 2, h // 2), nearest, box=box)),
        np.asarray(cr.resize((w // 2, h // 2), nearest, box=box)),
    )


def _to_yuv420p(planes: Planes) -> npt.NDArray[np.uint8]:
    """The (h * 3/2, w) layout PyAV's ``from_ndarray(..., "yuv420p")`` takes."""
    y, u, v = planes
    h, w = y.shape
    return np.concatenate((y.reshape(-1), u.reshape(-1), v.reshape(-1))).reshape(h * 3 // 2, w)


def _to_rgb(planes: Planes) -> npt.NDArray[np.uint8]:
    import av

    frame = av.VideoFrame.from_ndarray(_to_yuv420p(planes), format="yuv420p")
    return np.asarray(frame.to_ndarray(format="rgb24"), dtype=np.uint8)


def render_frame(script: Script, frame: int) -> npt.NDArray[np.uint8]:
    """Frame ``frame`` as HxWx3 RGB, as a decoder shows it before any compression loss."""
    return _to_rgb(_frame_planes(script, frame))


def render_frames(script: Script) -> Iterator[tuple[float, npt.NDArray[np.uint8]]]:
    """Every frame as ``(t, HxWx3 RGB)``, lazily."""
    for n in range(script.frames):
        yield n / script.fps, render_frame(script, n)


# -- encoding ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Encoding:
    codec: str = "h264"
    crf: int = DEFAULT_CRF
    gop: int = 250
    pix_fmt: str = "yuv420p"
    container: str = "mp4"
    preset: str = DEFAULT_PRESET
    threads: int = ENCODER_THREADS


def _encode_frames(
    frames: Iterable[av.VideoFrame], size: tuple[int, int], fps: float, enc: _Encoding
) -> bytes:
    import av

    rate = Fraction(fps).limit_denominator(1001)
    buf = io.BytesIO()
    with av.open(buf, "w", format=enc.container) as out:
        stream = out.add_stream(enc.codec, rate=rate)
        if not isinstance(stream, av.VideoStream):
            raise ValueError(f"{enc.codec} is not a video codec")
        stream.width, stream.height = size
        stream.pix_fmt = enc.pix_fmt
        ctx = stream.codec_context
        ctx.gop_size = enc.gop
        ctx.thread_count = enc.threads
        ctx.thread_type = "FRAME"  # as the ffmpeg CLI: PyAV's default, SLICE, splits frames
        # Tagged as rendered, so a decoder converts back with the same matrix.
        ctx.colorspace = 6  # SMPTE 170M (BT.601)
        ctx.color_range = 1  # limited ("MPEG")
        options: dict[str, object] = {"crf": str(enc.crf)}
        if ctx.name in ("libx264", "libx265"):
            options["preset"] = enc.preset
        if ctx.name == "libx264":
            options["x264-params"] = X264_PARAMS
        stream.options = options
        for n, frame in enumerate(frames):
            frame.pts = n
            frame.time_base = 1 / rate
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return buf.getvalue()


def encode(
    frames: Iterable[npt.NDArray[np.uint8]],
    *,
    size: tuple[int, int],
    fps: float,
    codec: str = "h264",
    crf: int = DEFAULT_CRF,
    gop: int = 250,
    pix_fmt: str = "yuv420p",
    container: str = "mp4",
    preset: str = DEFAULT_PRESET,
    threads: int = ENCODER_THREADS,
) -> bytes:
    """Encode HxWx3 RGB frames of ``size`` (w, h) at ``fps`` into one file's bytes."""
    import av

    def video_frames() -> Iterator[av.VideoFrame]:
        for arr in frames:
            if arr.shape != (size[1], size[0], 3):
                raise ValueError(f"frame of shape {arr.shape} in a {size} video")
            yield av.VideoFrame.from_ndarray(np.ascontiguousarray(arr), format="rgb24")

    enc = _Encoding(codec, crf, gop, pix_fmt, container, preset, threads)
    return _encode_frames(video_frames(), size, fps, enc)


def _encode_planes(
    planes: Iterable[Planes], size: tuple[int, int], fps: float, enc: _Encoding
) -> bytes:
    import av

    frames = (av.VideoFrame.from_ndarray(_to_yuv420p(p), format="yuv420p") for p in planes)
    return _encode_frames(frames, size, fps, enc)


def make_video(
    script: Script,
    *,
    codec: str = "h264",
    crf: int = DEFAULT_CRF,
    gop: int = 250,
    pix_fmt: str = "yuv420p",
    container: str = "mp4",
    preset: str = DEFAULT_PRESET,
    threads: int = ENCODER_THREADS,
) -> bytes:
    """The script rendered and encoded: the reference video."""
    planes = (_frame_planes(script, n) for n in range(script.frames))
    enc = _Encoding(codec, crf, gop, pix_fmt, container, preset, threads)
    return _encode_planes(planes, script.size, script.fps, enc)


# -- re-upload transforms ----------------------------------------------------------------


@dataclass(frozen=True)
class Transform:
    """What a re-uploader does to a clip, applied in field order; defaults change nothing."""

    name: str
    crop: float = 0.0  # fraction of the width and of the height cut from each side
    scale: float = 1.0  # then resized by this factor
    canvas_aspect: float | None = None  # then fitted, with black bars, into this w/h
    logo: bool = False  # then an opaque logo in the top-right corner, throughout
    speed: float = 1.0  # played this much faster: a clip second spans `speed` reference s
    crf: int | None = None  # encoded at this crf (None: the reference's)


def combine(*parts: Transform) -> Transform:
    """One transform doing what each of ``parts`` does, named ``a+b+c``."""
    out = Transform("+".join(p.name for p in parts))
    for part in parts:
        changes = {
            f.name: getattr(part, f.name)
            for f in dataclasses.fields(Transform)
            if f.name != "name" and getattr(part, f.name) != f.default
        }
        out = dataclasses.replace(out, **changes)
    return out


_BASE = {
    t.name: t
    for t in (
        Transform("plain"),
        Transform("reencode_crf35", crf=35),
        Transform("resize_50", scale=0.5),
        # Crop N %: N % of the width and of the height cut away, half from each side.
        Transform("crop_5", crop=0.025),
        Transform("crop_10", crop=0.05),
        # Beyond the service's requirement (10 %): shows where central windows stop helping.
        Transform("crop_20", crop=0.10),
        # 16:9 into 4:3 at the same width: bars of 12.5 % top and bottom.
        Transform("letterbox_4x3", canvas_aspect=4 / 3),
        # A phone re-upload: 16:9 across the width of a 9:16 frame.
        Transform("vertical_9x16", canvas_aspect=9 / 16),
        Transform("logo", logo=True),
        Transform("speed_0.9", speed=0.9),
        Transform("speed_1.1", speed=1.1),
    )
}
TRANSFORMS: dict[str, Transform] = {
    **_BASE,
    **{
        t.name: t
        for t in (
            combine(_BASE["crop_10"], _BASE["logo"], _BASE["reencode_crf35"]),
            combine(_BASE["letterbox_4x3"], _BASE["logo"], _BASE["speed_1.1"]),
        )
    },
}


def _even(x: float) -> int:
    return max(2, 2 * round(x / 2))


@dataclass(frozen=True)
class _Plan:
    """A transform's geometry worked out once for one reference size."""

    crop: tuple[int, int, int, int]  # left, top, right, bottom in reference pixels (even)
    scaled: tuple[int, int]
    canvas: tuple[int, int]
    content: tuple[int, int, int, int]  # where the picture lands on the canvas (even)
    logo: Logo | None


def _plan(transform: Transform, size: tuple[int, int]) -> _Plan:
    w, h = size
    cx, cy = (_even(w * transform.crop), _even(h * transform.crop)) if transform.crop else (0, 0)
    cw, ch = w - 2 * cx, h - 2 * cy
    scaled = (cw, ch)
    if transform.scale != 1:
        scaled = (_even(cw * transform.scale), _even(ch * transform.scale))
    canvas, content = scaled, (0, 0, *scaled)
    if transform.canvas_aspect is not None:
        # The canvas keeps the picture's long side; the picture is fitted inside it.
        long = max(scaled)
        a = transform.canvas_aspect
        canvas = (long, _even(long / a)) if a >= 1 else (_even(long * a), long)
        fit = min(canvas[0] / scaled[0], canvas[1] / scaled[1])
        iw, ih = min(canvas[0], _even(scaled[0] * fit)), min(canvas[1], _even(scaled[1] * fit))
        x, y = (canvas[0] - iw) // 4 * 2, (canvas[1] - ih) // 4 * 2
        content = (x, y, iw, ih)
    logo = _logo(canvas) if transform.logo else None
    return _Plan((cx, cy, w - cx, h - cy), scaled, canvas, content, logo)


def _logo(canvas: tuple[int, int]) -> Logo:
    """A rounded badge with white text, ~15 % of the width, top-right; planes and masks."""
    from PIL import Image, ImageDraw, ImageFont

    lw = _even(canvas[0] * LOGO_WIDTH)
    lh = _even(lw * 0.4)
    badge = Image.new("RGB", (lw, lh), LOGO_COLOUR)
    mask = Image.new("L", (lw, lh), 0)
    ImageDraw.Draw(mask).rounded_rectangle((0, 0, lw - 1, lh - 1), radius=lh // 4, fill=255)
    draw = ImageDraw.Draw(badge)
    font = ImageFont.load_default(size=max(6, lh // 2))
    draw.text((lw / 2, lh / 2), LOGO_TEXT, fill=(255, 255, 255), font=font, anchor="mm")
    y, cb, cr = (np.asarray(p, dtype=np.uint8) for p in _ycbcr(badge))
    full: Mask = np.asarray(mask) >= 128
    half: Mask = full.reshape(lh // 2, 2, lw // 2, 2).mean(axis=(1, 3)) >= 0.5
    # Chroma subsampled by averaging, as an encoder's input filter would.
    planes = (y, _halve(cb), _halve(cr))
    margin = _even(canvas[0] * 0.03)
    return planes, (full, half), (canvas[0] - lw - margin, margin)


def _halve(plane: Plane) -> Plane:
    h, w = plane.shape
    return np.rint(plane.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))).astype(np.uint8)


def _resize_planes(planes: Planes, size: tuple[int, int]) -> Planes:
    from PIL import Image

    # Bilinear with its antialiasing support: what a re-uploader's scaler does.
    bilinear = Image.Resampling.BILINEAR
    half = (size[0] // 2, size[1] // 2)
    y, u, v = planes
    return (
        np.asarray(Image.fromarray(y).resize(size, bilinear)),
        np.asarray(Image.fromarray(u).resize(half, bilinear)),
        np.asarray(Image.fromarray(v).resize(half, bilinear)),
    )


def _apply(plan: _Plan, planes: Planes) -> Planes:
    left, top, right, bottom = plan.crop
    y, u, v = planes
    out: Planes = (
        y[top:bottom, left:right],
        u[top // 2 : bottom // 2, left // 2 : right // 2],
        v[top // 2 : bottom // 2, left // 2 : right // 2],
    )
    if plan.scaled != (right - left, bottom - top):
        out = _resize_planes(out, plan.scaled)
    x, yy, iw, ih = plan.content
    if plan.canvas != plan.scaled:
        if (iw, ih) != plan.scaled:
            out = _resize_planes(out, (iw, ih))
        cw, ch = plan.canvas
        canvas = (
            np.full((ch, cw), BLACK[0], np.uint8),
            np.full((ch // 2, cw // 2), BLACK[1], np.uint8),
            np.full((ch // 2, cw // 2), BLACK[2], np.uint8),
        )
        canvas[0][yy : yy + ih, x : x + iw] = out[0]
        canvas[1][yy // 2 : (yy + ih) // 2, x // 2 : (x + iw) // 2] = out[1]
        canvas[2][yy // 2 : (yy + ih) // 2, x // 2 : (x + iw) // 2] = out[2]
        out = canvas
    if plan.logo is not None:
        (ly, lu, lv), (full, half), (lx, ty) = plan.logo
        out = (np.array(out[0]), np.array(out[1]), np.array(out[2]))
        lh, lw = ly.shape
        region = out[0][ty : ty + lh, lx : lx + lw]
        region[full] = ly[full]
        for plane, logo_plane in ((out[1], lu), (out[2], lv)):
            region = plane[ty // 2 : (ty + lh) // 2, lx // 2 : (lx + lw) // 2]
            region[half] = logo_plane[half]
    return out


def clip_size(script: Script, transform: Transform) -> tuple[int, int]:
    """The (w, h) of a clip of ``script`` under ``transform``."""
    return _plan(transform, script.size).canvas


def clip_frame_indices(
    script: Script, start: float, seconds: float, transform: Transform, *, fps: float = 30.0
) -> list[int]:
    """The reference frame each clip frame shows.

    The clip lasts ``seconds`` at ``fps``; its frame ``k`` shows the reference at
    ``start + k / fps * speed``, so it spans ``[start, start + seconds * speed)`` of the
    reference, frames dropped or repeated as a frame-rate converter would.
    """
    count = round(seconds * fps)
    if start < 0 or round((start + seconds * transform.speed) * script.fps) > script.frames:
        raise ValueError(
            f"clip of {seconds * transform.speed:.2f} reference s from {start} s "
            f"overruns a {script.seconds:.2f} s script"
        )
    return [
        min(script.frames - 1, math.floor((start + k / fps * transform.speed) * script.fps + 1e-6))
        for k in range(count)
    ]


def _clip_planes(
    script: Script, start: float, seconds: float, transform: Transform, fps: float
) -> Iterator[Planes]:
    plan = _plan(transform, script.size)
    for n in clip_frame_indices(script, start, seconds, transform, fps=fps):
        yield _apply(plan, _frame_planes(script, n))


def render_clip(
    script: Script, start: float, seconds: float, transform: Transform, *, fps: float = 30.0
) -> Iterator[tuple[float, npt.NDArray[np.uint8]]]:
    """The clip's frames as ``(reference time shown, HxWx3 RGB)``, before encoding."""
    times = clip_frame_indices(script, start, seconds, transform, fps=fps)
    for n, planes in zip(times, _clip_planes(script, start, seconds, transform, fps), strict=True):
        yield n / script.fps, _to_rgb(planes)


def make_clip(
    script: Script,
    start: float,
    seconds: float,
    transform: Transform,
    *,
    fps: float = 30.0,
    preset: str = DEFAULT_PRESET,
    threads: int = ENCODER_THREADS,
    gop: int = 250,
) -> bytes:
    """The query: ``seconds`` of the reference from ``start`` (see :func:`clip_frame_indices`),
    transformed and encoded (mp4, H.264) at the transform's crf."""
    crf = DEFAULT_CRF if transform.crf is None else transform.crf
    enc = _Encoding(crf=crf, gop=gop, preset=preset, threads=threads)
    planes = _clip_planes(script, start, seconds, transform, fps)
    return _encode_planes(planes, clip_size(script, transform), fps, enc)
