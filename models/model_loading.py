"""Loading model files safely, shared by the image and text classifiers.

- The errors every model loader raises (:class:`ModelError` and its subclasses).
- :func:`read_verified`: read a weights file once and check its sha256 against a pin.
- :func:`load_transformers_dir`: a Hugging Face model saved with ``save_pretrained``, from a
  local directory only (``local_files_only=True``, ``HF_HUB_OFFLINE=1``), safetensors weights
  only (a pickled ``pytorch_model.bin`` can run code on load), never remote code; one
  loaded model per process per (directory, weights, classes).

torch and transformers are imported only when a model is loaded.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "ModelConfigError",
    "ModelError",
    "ModelIntegrityError",
    "ModelUnavailable",
    "TransformersDir",
    "label_probabilities",
    "load_transformers_dir",
    "normalise_sha",
    "read_verified",
    "sha256_bytes",
]

_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


class ModelError(Exception):
    """A model could not be loaded or run; the message names the model and the problem."""


class ModelConfigError(ModelError, ValueError):
    """A model directory or its config is missing, malformed or inconsistent with the model."""


class ModelUnavailable(ModelConfigError):
    """The model needs a package that is not installed (e.g. an optional extra)."""


class ModelIntegrityError(ModelError):
    """A model file's sha256 is not the pinned one: refusing to load it."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def normalise_sha(value: str, what: str) -> str:
    low = value.strip().lower()
    if not _SHA256_RE.match(low):
        raise ModelConfigError(f"{what}: sha256 must be 64 hex characters, got {value!r}")
    return low


def read_verified(path: Path, expected_sha256: str | None, *, what: str) -> tuple[bytes, str]:
    """Read a model file once and check its sha256; returns ``(bytes, sha256)``.

    The bytes that were hashed are the bytes that get loaded (no check-then-reopen race).
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ModelConfigError(f"{what}: model file {path} does not exist") from None
    except OSError as exc:
        raise ModelConfigError(f"{what}: cannot read model file {path}: {exc}") from exc
    actual = sha256_bytes(data)
    if expected_sha256 is not None:
        expected = normalise_sha(expected_sha256, what)
        if actual != expected:
            raise ModelIntegrityError(
                f"{what}: {path} has sha256 {actual}, expected {expected}; refusing to load "
                "a model whose bytes are not the pinned ones (corrupt, replaced or a "
                "different version)"
            )
    return data, actual


@dataclass(frozen=True)
class TransformersDir:
    """A loaded transformers model with its processor (image processor or tokenizer)."""

    model: Any
    processor: Any
    labels: tuple[str, ...]
    # config.problem_type == "multi_label_classification": a sigmoid per label, else softmax.
    multi_label: bool


# One loaded model per process per key; keyed by pid too, like onnxruntime sessions.
_loaded: dict[tuple[Any, ...], tuple[Any, Any]] = {}
_loaded_lock = threading.Lock()


def load_transformers_dir(
    directory: Path,
    *,
    what: str,
    model_class: str,
    processor_class: str,
    required: tuple[str, ...] = ("config.json",),
    threads: int = 1,
    expected_sha256: str | None = None,
) -> TransformersDir:
    """Load ``transformers.<model_class>`` and ``<processor_class>`` from ``directory``.

    ``expected_sha256`` pins ``model.safetensors``. ``torch.set_num_threads(threads)`` is
    process-wide. Labels come from ``config.id2label`` (``0..n-1``, distinct).
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ModelConfigError(f"{what}: {directory} is not a directory")
    for name in required:
        if not (directory / name).is_file():
            raise ModelConfigError(f"{what}: {directory} has no {name}")
    weights = directory / "model.safetensors"
    sha: str | None = None
    if expected_sha256 is not None:
        _, sha = read_verified(weights, expected_sha256, what=what)
    elif not weights.is_file() and not (directory / "model.safetensors.index.json").is_file():
        raise ModelConfigError(
            f"{what}: {directory} has no model.safetensors (only safetensors weights load)"
        )
    stat = weights.stat() if weights.is_file() else None
    key = (
        os.getpid(),
        str(directory.resolve()),
        sha,
        None if stat is None else (stat.st_size, stat.st_mtime_ns),
        model_class,
        processor_class,
    )
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(threads)
    with _loaded_lock:
        cached = _loaded.get(key)
        if cached is None:
            cached = _from_pretrained(directory, what, model_class, processor_class)
            _loaded[key] = cached
    model, processor = cached
    config = model.config
    id2label = {int(k): str(v) for k, v in config.id2label.items()}
    if sorted(id2label) != list(range(len(id2label))):
        raise ModelConfigError(f"{what}: config.id2label is not 0..n-1: {id2label}")
    labels = tuple(id2label[i] for i in range(len(id2label)))
    if len(set(labels)) != len(labels):
        raise ModelConfigError(f"{what}: duplicate labels in config.id2label: {labels}")
    multi_label = getattr(config, "problem_type", None) == "multi_label_classification"
    return TransformersDir(model, processor, labels, multi_label)


def _from_pretrained(
    directory: Path, what: str, model_class: str, processor_class: str
) -> tuple[Any, Any]:
    import transformers

    try:
        model = getattr(transformers, model_class).from_pretrained(
            directory, local_files_only=True, trust_remote_code=False, use_safetensors=True
        )
        processor = getattr(transformers, processor_class).from_pretrained(
            directory, local_files_only=True, trust_remote_code=False
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelConfigError(f"{what}: cannot load from {directory}: {exc}") from exc
    model.eval()
    return model, processor


def label_probabilities(logits: Any, multi_label: bool) -> npt.NDArray[np.float64]:
    """Probabilities from a torch logits tensor: a sigmoid per label, or a softmax."""
    import torch

    logits = logits.float()
    probs = torch.sigmoid(logits) if multi_label else torch.softmax(logits, dim=-1)
    return np.asarray(probs.cpu().numpy(), dtype=np.float64)
