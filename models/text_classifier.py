"""The text classifier seam: every learned text model implements :class:`TextClassifier`.

Implementations (the built-in MiniLM heads, a Hugging Face sequence-classification
directory, ...) only implement :meth:`TextClassifier._predict` for one chunk of
already-normalised texts; the base class chunks, checks shapes and clips to ``[0, 1]``.
Text normalisation (models.text_normalize) is the caller's job, so keyword lists and models
see the same text.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

__all__ = ["DEFAULT_MAX_BATCH", "TextClassifier", "TextModelError"]

DEFAULT_MAX_BATCH = 32


class TextModelError(RuntimeError):
    """A text model produced output that breaks the contract (shape, NaN)."""


class TextClassifier(ABC):
    """``classify_batch`` maps each text to ``{label: probability}``.

    Every result dict has exactly the keys in :attr:`labels`, each a float in ``[0, 1]``.
    """

    name: str
    labels: tuple[str, ...]
    max_batch: int = DEFAULT_MAX_BATCH

    def classify_batch(self, texts: Sequence[str]) -> list[dict[str, float]]:
        out: list[dict[str, float]] = []
        step = max(1, self.max_batch)
        for start in range(0, len(texts), step):
            chunk = list(texts[start : start + step])
            probs = np.asarray(self._predict(chunk), dtype=np.float64)
            if probs.shape != (len(chunk), len(self.labels)):
                raise TextModelError(
                    f"{self.name}: model returned shape {probs.shape} for {len(chunk)} texts, "
                    f"expected {(len(chunk), len(self.labels))}"
                )
            if not np.isfinite(probs).all():
                raise TextModelError(f"{self.name}: model returned non-finite scores")
            probs = np.clip(probs, 0.0, 1.0)
            out.extend(
                {label: float(p) for label, p in zip(self.labels, row, strict=True)}
                for row in probs
            )
        return out

    def classify(self, text: str) -> dict[str, float]:
        return self.classify_batch([text])[0]

    def warm_up(self) -> None:
        """Run one short text so the first real request pays no lazy initialisation."""
        self.classify_batch(["hello"])

    @abstractmethod
    def _predict(self, texts: list[str]) -> npt.NDArray[np.floating]:
        """Probabilities of shape ``(len(texts), len(self.labels))``."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, labels={self.labels!r})"
