"""Prometheus metrics of the API and worker processes (workers serve theirs: cli/run.py)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import Counter, Histogram

VERDICTS = Counter("moderation_verdicts_total", "Verdicts returned by the API", ["decision"])
ERRORS = Counter(
    "moderation_errors_total",
    "Errors by code: API responses and task results that carry an error",
    ["code"],
)
MODERATE_LATENCY = Histogram(
    "moderation_request_seconds",
    "Wall time of POST /v1/moderate, queue round trip included",
    buckets=(0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.5, 5.0),
)
HTTP_REQUESTS = Counter("moderation_http_requests_total", "HTTP requests", ["route", "status"])
TASK_LATENCY = Histogram(
    "moderation_task_seconds",
    "Run time of a Celery task in a worker, by task name and outcome "
    "(ok, error: a result naming an error, retry, failure: raised)",
    ["task", "outcome"],
    buckets=(0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.3, 0.5, 1.0, 2.5, 5.0, 15, 60, 300),
)
MODEL_LATENCY = Histogram(
    "moderation_model_seconds",
    "One classifier call (a batch), by model name and kind (text, image, video_frame)",
    ["model", "kind"],
    buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5),
)


@contextmanager
def timed_model(model: str, kind: str) -> Iterator[None]:
    """Observe the wrapped classifier call in MODEL_LATENCY (also when it raises)."""
    started = time.perf_counter()
    try:
        yield
    finally:
        MODEL_LATENCY.labels(model=model, kind=kind).observe(time.perf_counter() - started)
