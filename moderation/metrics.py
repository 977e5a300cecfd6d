"""Prometheus metrics of the API process."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

VERDICTS = Counter("moderation_verdicts_total", "Verdicts returned by the API", ["decision"])
ERRORS = Counter("moderation_errors_total", "Items refused or failed, by error code", ["code"])
MODERATE_LATENCY = Histogram(
    "moderation_request_seconds",
    "Wall time of POST /v1/moderate, queue round trip included",
    buckets=(0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.5, 5.0),
)
HTTP_REQUESTS = Counter("moderation_http_requests_total", "HTTP requests", ["route", "status"])
