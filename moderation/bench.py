"""`moderation bench`: an open-loop load through Celery and Redis, reporting latency percentiles."""

from __future__ import annotations

import base64
import os
import platform
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from moderation.settings import get_settings


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50": 0.0, "p95": 0.0, "p99": 0.0, "max": 0.0}
    arr = np.asarray(values)
    p50, p95, p99 = np.percentile(arr, [50, 95, 99])
    return {
        "p50": round(float(p50), 2),
        "p95": round(float(p95), 2),
        "p99": round(float(p99), 2),
        "max": round(float(arr.max()), 2),
    }


def _seed_bank(n: int) -> None:
    """A block bank of random hashes, so every item pays for a real index search."""
    from moderation import banks
    from moderation.storage import db

    rng = np.random.default_rng(7)
    values = [rng.bytes(32).hex() for _ in range(n)]
    with db.session_scope(get_settings().resolved_database_url) as s:
        row = banks.create_bank(s, f"bench-{uuid.uuid4().hex[:6]}", kind="image")
        banks.add_entries(
            s, banks.get_bank_row(s, row.name), [banks.EntryInput(v, 100) for v in values]
        )


def _load(
    rate: float, duration: float, warmup: int, payload: dict[str, Any], timeout: float
) -> dict[str, Any]:
    from moderation.queue import moderate_via_queue

    latencies: list[float] = []
    worker_ms: list[float] = []
    errors: dict[str, int] = {}
    lock = threading.Lock()

    def one(scheduled: float, measure: bool) -> None:
        item = dict(payload, content_id=f"bench-{uuid.uuid4().hex}")
        try:
            result = moderate_via_queue(item, timeout=timeout)
            code = result["error"]["code"] if "error" in result else None
        except Exception as exc:  # counted, never fatal to the run
            result, code = {}, type(exc).__name__
        # Latency from the scheduled send time: open loop, no coordinated omission.
        elapsed = (time.perf_counter() - scheduled) * 1000
        if measure:
            with lock:
                if code:
                    errors[code] = errors.get(code, 0) + 1
                else:
                    latencies.append(elapsed)
                    worker_ms.append(float(result.get("latency_ms", 0.0)))

    total = int(rate * duration)
    with ThreadPoolExecutor(max_workers=64) as pool:
        for _ in range(warmup):
            pool.submit(one, time.perf_counter(), False).result()
        start = time.perf_counter()
        futures = []
        for i in range(total):
            at = start + i / rate
            delay = at - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            futures.append(pool.submit(one, at, True))
        for f in futures:
            f.result()
        wall = time.perf_counter() - start
    return {
        "sent": total,
        "ok": len(latencies),
        "errors": errors,
        "throughput_per_s": round(len(latencies) / wall, 2),
        "latency_ms": percentiles(latencies),
        "worker_latency_ms": percentiles(worker_ms),
    }


def run_bench(
    *,
    rate: float = 20.0,
    duration: float = 30.0,
    warmup: int = 20,
    concurrency: int | None = None,
    pool: str | None = None,
    bank_size: int = 10_000,
    timeout: float = 10.0,
) -> dict[str, Any]:
    """Start what is missing (embedded Redis, a temporary SQLite database, workers), then load."""
    from moderation.embedded import EmbeddedRedis, start_worker, stop_process, wait_for_worker
    from moderation.queue import reset_client
    from moderation.samples import BENCH_TEXT, bench_jpeg
    from moderation.storage import db

    saved = dict(os.environ)
    tmp = tempfile.TemporaryDirectory(prefix="moderation-bench-")
    redis = worker = None
    try:
        os.environ["MODERATION_VAR_DIR"] = tmp.name
        if not os.environ.get("MODERATION_DATABASE_URL"):
            os.environ["MODERATION_DATABASE_URL"] = f"sqlite:///{Path(tmp.name) / 'bench.db'}"
        get_settings.cache_clear()
        settings = get_settings()
        if not settings.redis_url:
            redis = EmbeddedRedis(Path(tmp.name))
            os.environ["MODERATION_REDIS_URL"] = redis.start()
            get_settings.cache_clear()
            settings = get_settings()
        reset_client()
        db.migrate(settings.resolved_database_url)
        _seed_bank(bank_size)
        concurrency = concurrency or settings.worker_concurrency
        pool = pool or settings.worker_pool
        worker = start_worker(settings.redis_url or "", concurrency=concurrency, pool=pool)
        wait_for_worker(60)
        payload = {
            "uploader_id": "bench",
            "text": BENCH_TEXT,
            "context": {},
            "media": [{"kind": "image", "data_b64": base64.b64encode(bench_jpeg()).decode()}],
        }
        result = _load(rate, duration, warmup, payload, timeout)
    finally:
        if worker is not None:
            stop_process(worker)
        if redis is not None:
            redis.stop()
        os.environ.clear()
        os.environ.update(saved)
        get_settings.cache_clear()
        reset_client()
        tmp.cleanup()
    lat = result["latency_ms"]
    result.update(
        {
            "rate_per_s": rate,
            "duration_s": duration,
            "workers": concurrency,
            "pool": pool,
            "bank_entries": bank_size,
            "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "summary": (
                f"{result['ok']}/{result['sent']} ok at {rate:g}/s offered, "
                f"{result['throughput_per_s']}/s done; latency ms p50 {lat['p50']} "
                f"p95 {lat['p95']} p99 {lat['p99']} max {lat['max']}; worker-side p50 "
                f"{result['worker_latency_ms']['p50']} ms; errors {result['errors'] or 0}"
            ),
        }
    )
    return result
