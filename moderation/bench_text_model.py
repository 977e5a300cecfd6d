"""Text model benchmark: the policy's text models alone, and the text path of ``moderate``.

``moderation bench text`` measures, on one thread as a worker runs them: one text at a time
and batches of 32 through every enabled text model (the built-in one by default), then the
part of :func:`moderation.pipeline.analyse` that handles an item's text (normalisation,
keyword lists, the text models, the SimHash and its bank lookup) on the latency budget's
item text (``samples.BENCH_TEXT``, English and Chinese), against a scratch SQLite runtime.
Each repetition appends a counter, so no per-text cache answers for the work.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from moderation.bench import percentiles

T = TypeVar("T")


def _timed(fn: Callable[[T], object], inputs: Sequence[T]) -> list[float]:
    """Milliseconds of ``fn(x)`` for each input, in order."""
    out = []
    for x in inputs:
        started = time.perf_counter()
        fn(x)
        out.append((time.perf_counter() - started) * 1e3)
    return out


def bench_texts() -> list[str]:
    """Everyday English and Chinese posts, some abusive (two English to one Chinese)."""
    from models.text_builtin import BENCH_EN, BENCH_ZH

    zh = iter(BENCH_ZH * 2)
    out: list[str] = []
    for i, t in enumerate(BENCH_EN):
        out.append(t)
        if i % 2 == 1:
            out.append(next(zh))
    return out


def run(*, reps: int = 300, batches: int = 30, path_reps: int = 300) -> dict[str, Any]:
    """Latency of each enabled text model and of the text path in ``moderate``."""
    from models.text_normalize import normalize
    from moderation.pipeline import text_signals
    from moderation.runtime import build_runtime
    from moderation.samples import BENCH_TEXT
    from moderation.settings import get_settings
    from moderation.text_matching import text_bank_hits

    texts = [normalize(t) for t in bench_texts()]
    batch_of_32 = [(texts * 3)[i : i + 32] for i in range(0, len(texts), 8)]
    with tempfile.TemporaryDirectory(prefix="bench-text-") as tmp:
        base = get_settings()
        settings = base.model_copy(update={"database_url": f"sqlite:///{Path(tmp) / 'bench.db'}"})
        rt = build_runtime(settings)
        models: dict[str, Any] = {}
        for loaded in rt.text_models():
            clf = loaded.classifier
            clf.warm_up()
            clf.classify_batch(texts)
            single = _timed(clf.classify, [texts[i % len(texts)] for i in range(reps)])
            batch = _timed(
                clf.classify_batch, [batch_of_32[i % len(batch_of_32)] for i in range(batches)]
            )
            models[loaded.name] = {
                "single": percentiles(single),
                "batch_of_32": percentiles(batch),
                "threads": getattr(clf, "threads", None),
                "quantization": getattr(clf, "quantization", None),
            }

        def text_path(text: str) -> None:
            text_signals(rt, text)
            text_bank_hits(rt, text)

        # A counter appended: never the same text twice.
        items = [f"{BENCH_TEXT} #{i:05d}" for i in range(20 + path_reps)]
        _timed(text_path, items[:20])
        path = _timed(text_path, items[20:])
    return {
        "texts": len(texts),
        "models": models,
        "text_path": {"chars": len(BENCH_TEXT) + 7, "reps": path_reps, **percentiles(path)},
        "unit": "ms",
    }


def format_table(report: dict[str, Any]) -> str:
    lines = [f"{'milliseconds':<44} {'p50':>8} {'p95':>8} {'p99':>8}"]
    for name, m in report["models"].items():
        for key, label in (("single", "one text"), ("batch_of_32", "batch of 32")):
            r = m[key]
            what = f"{name} ({m['quantization']}), {label}"
            lines.append(f"{what:<44} {r['p50']:>8.2f} {r['p95']:>8.2f} {r['p99']:>8.2f}")
    r = report["text_path"]
    what = f"text path of moderate ({r['chars']} chars)"
    lines.append(f"{what:<44} {r['p50']:>8.2f} {r['p95']:>8.2f} {r['p99']:>8.2f}")
    return "\n".join(lines)
