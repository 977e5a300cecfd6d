"""Any Hugging Face sequence-classification model in a local directory, as a TextClassifier.

A deployment plugs in its own model (for example a fine-tuned multilingual encoder) by
saving it with ``save_pretrained`` (safetensors weights) together with its tokenizer
(``tokenizer.json``: a fast tokenizer) and naming the directory in the policy. Loading goes
through :func:`models.model_loading.load_transformers_dir`: local files only, no remote
code, safetensors only, optional sha256 pin of ``model.safetensors``.

Long texts are never silently truncated: a text longer than the model's window is split
into overlapping windows (the fast tokenizer's overflow), each window is classified, and a
label's probability is its highest over the windows (a violation anywhere in a long text
counts). The number of windows per text is bounded (``max_windows``): past it the overlap is
dropped, and a text that still does not fit is refused with :class:`TextTooLong` rather than
scored on a part of it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from models.errors import MediaTooLarge
from models.model_loading import ModelConfigError, label_probabilities, load_transformers_dir
from models.text_classifier import DEFAULT_MAX_BATCH, TextClassifier

__all__ = [
    "DEFAULT_MAX_WINDOWS",
    "DEFAULT_WINDOW_OVERLAP",
    "TextTooLong",
    "TransformersTextDirectoryClassifier",
]

# 48 windows of a 512-token encoder cover ~21 K tokens with the default overlap: more than
# the service's default text limit (20,000 characters) yields for Chinese, about one token
# per character, and English yields far fewer tokens than characters.
DEFAULT_MAX_WINDOWS = 48
# Tokens shared by consecutive windows, so a phrase cut by one window boundary is whole in
# the next window (at most a quarter of the window).
DEFAULT_WINDOW_OVERLAP = 64
# tokenizer.model_max_length when the tokenizer config sets none (transformers' sentinel).
_NO_LIMIT = 1_000_000


class TextTooLong(MediaTooLarge):
    """A text needs more windows than the model may run on one text."""


class TransformersTextDirectoryClassifier(TextClassifier):
    """``AutoModelForSequenceClassification`` + ``AutoTokenizer`` from a directory.

    Labels come from ``config.id2label``; softmax over the logits, or a sigmoid per label when
    ``config.problem_type`` is ``multi_label_classification``. ``max_batch`` bounds the
    windows per forward pass. ``torch.set_num_threads(threads)`` is process-wide.
    """

    def __init__(
        self,
        directory: Path,
        *,
        name: str | None = None,
        threads: int = 1,
        max_batch: int = DEFAULT_MAX_BATCH,
        expected_sha256: str | None = None,
        max_windows: int = DEFAULT_MAX_WINDOWS,
        window_overlap: int = DEFAULT_WINDOW_OVERLAP,
    ) -> None:
        directory = Path(directory)
        self.name = name or directory.name
        self.max_batch = max(1, max_batch)
        what = f"model {self.name!r}"
        if max_windows < 1 or window_overlap < 0:
            raise ValueError("max_windows must be >= 1 and window_overlap >= 0")
        loaded = load_transformers_dir(
            directory,
            what=what,
            model_class="AutoModelForSequenceClassification",
            processor_class="AutoTokenizer",
            # A fast tokenizer: its overflow makes the windows (and without tokenizer.json
            # AutoTokenizer may build an empty-vocabulary one without complaint).
            required=("config.json", "tokenizer.json"),
            threads=threads,
            expected_sha256=expected_sha256,
        )
        self._model, self._tokenizer = loaded.model, loaded.processor
        self.labels = loaded.labels
        self.multi_label = loaded.multi_label
        if not getattr(self._tokenizer, "is_fast", False):
            raise ModelConfigError(f"{what}: the tokenizer in {directory} is not a fast one")
        self.window = self._window_length()
        specials = self._tokenizer.num_special_tokens_to_add(pair=False)
        body = self.window - specials
        if body < 2:
            raise ModelConfigError(f"{what}: a window of {self.window} tokens holds no text")
        self.max_windows = max_windows
        self.overlap = min(window_overlap, body // 4)
        self._input_names = set(getattr(self._tokenizer, "model_input_names", ()))

    def _window_length(self) -> int:
        """Tokens per window: the tokenizer's limit, within the model's position table."""
        positions = int(getattr(self._model.config, "max_position_embeddings", 512) or 512)
        declared = int(getattr(self._tokenizer, "model_max_length", _NO_LIMIT) or _NO_LIMIT)
        if declared < _NO_LIMIT:
            return min(declared, positions)
        # No declared limit: RoBERTa-style models offset positions by 2, so stay 2 below.
        return positions - 2

    def _encode(self, texts: list[str], overlap: int) -> Any:
        return self._tokenizer(
            texts,
            truncation=True,
            max_length=self.window,
            stride=overlap,
            return_overflowing_tokens=True,
            padding="longest",
            return_tensors="pt",
        )

    def windows(self, texts: list[str]) -> tuple[dict[str, Any], npt.NDArray[np.int64]]:
        """The model inputs of every window of ``texts``, and the text index of each window."""
        enc = self._encode(texts, self.overlap)
        owner = enc["overflow_to_sample_mapping"].numpy().astype(np.int64)
        counts = np.bincount(owner, minlength=len(texts))
        if counts.max(initial=0) > self.max_windows:
            # Too long for the overlap: cover it without overlap, or refuse it.
            tight = self._encode(texts, 0)
            owner = tight["overflow_to_sample_mapping"].numpy().astype(np.int64)
            counts = np.bincount(owner, minlength=len(texts))
            worst = int(counts.argmax())
            if counts[worst] > self.max_windows:
                raise TextTooLong(
                    f"model {self.name!r}: a text needs {counts[worst]} windows of "
                    f"{self.window} tokens, more than the {self.max_windows} this model runs "
                    "on one text"
                )
            enc = tight
        keep = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc]
        if self._input_names:
            keep = [k for k in keep if k in self._input_names]
        return {k: enc[k] for k in keep}, owner

    def _predict(self, texts: list[str]) -> npt.NDArray[np.floating]:
        import torch

        inputs, owner = self.windows(texts)
        # Right-padded windows: a chunk can drop the padding columns none of its rows needs.
        trim = "attention_mask" in inputs and self._tokenizer.padding_side == "right"
        lengths = inputs["attention_mask"].sum(dim=1) if trim else None
        parts: list[npt.NDArray[np.float64]] = []
        with torch.inference_mode():
            for start in range(0, len(owner), self.max_batch):
                rows = slice(start, start + self.max_batch)
                width = None if lengths is None else int(lengths[rows].max())
                chunk = {k: v[rows, :width] for k, v in inputs.items()}
                parts.append(label_probabilities(self._model(**chunk).logits, self.multi_label))
        per_window = np.concatenate(parts) if parts else np.zeros((0, len(self.labels)))
        out = np.zeros((len(texts), len(self.labels)), dtype=np.float64)
        np.maximum.at(out, owner, per_window)
        return out
