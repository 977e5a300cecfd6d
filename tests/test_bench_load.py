"""`moderation bench load`: the open-loop schedule and the report's arithmetic without servers,
then short real runs through a real worker and through the HTTP API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from moderation.bench_load import (
    LoadOptions,
    Sample,
    _task_error,
    memory_report,
    parse_duration,
    per_interval,
    run_load,
    saturation_search,
    schedule,
    summarize,
)
from moderation.bench_stack import Stack
from moderation.errors import InvalidInput

# --- pure parts ------------------------------------------------------------------------------


def test_schedule_is_fixed_by_the_rate_alone() -> None:
    offsets = schedule(4.0, 9)
    assert offsets == [i * 0.25 for i in range(9)]
    assert schedule(1000.0, 0) == []
    with pytest.raises(InvalidInput):
        schedule(0.0, 3)


def test_durations_take_units() -> None:
    assert [parse_duration(t) for t in ("90", "90s", "10m", "1.5h")] == [90, 90, 600, 5400]
    for bad in ("", "m", "ten minutes", "0", "-5s", "infm", "nan"):
        with pytest.raises(InvalidInput):
            parse_duration(bad)


def test_latency_runs_from_the_scheduled_time_not_the_send() -> None:
    # Sent 0.5 s late (the sender stalled), answered 0.1 s after sending: 600 ms, not 100.
    s = Sample(scheduled=1.0, sent=1.5, done=1.6)
    assert s.latency_ms == pytest.approx(600.0)
    assert Sample(scheduled=1.0, done=1.2, error="timeout").latency_ms is None
    report = summarize([s])
    assert report["max_send_lag_ms"] == pytest.approx(500.0)


def test_summary_counts_errors_by_code_and_throughput_over_the_span() -> None:
    samples = [Sample(i * 0.1, i * 0.1, i * 0.1 + 0.05) for i in range(10)]
    samples[3].error = "timeout"
    samples[7].error = "http_429_rate_limited"
    report = summarize(samples)
    assert report["sent"] == 10 and report["ok"] == 8
    assert report["errors"] == {"timeout": 1, "http_429_rate_limited": 1}
    # 8 answers between t=0 and the last answer at 0.95 s.
    assert report["throughput_per_s"] == pytest.approx(8 / 0.95, abs=0.01)
    assert report["latency_ms"]["p50"] == pytest.approx(50.0)


def test_intervals_group_by_due_time_and_show_a_growing_backlog() -> None:
    # 10 items per second for 3 s; the server answers 5 per second, so latency grows.
    samples = [Sample(i / 10, i / 10) for i in range(30)]
    for n, s in enumerate(samples):
        s.done = (n + 1) / 5
    rows = per_interval(samples, 1.0)
    assert [r["due"] for r in rows[:3]] == [10, 10, 10]
    p99 = [r["latency_ms"]["p99"] for r in rows[:3]]
    assert p99[0] < p99[1] < p99[2]
    assert all(r["done_per_s"] <= 5 for r in rows)
    assert sum(r["ok"] for r in rows) == 30
    for r in rows[:3]:
        lat = r["latency_ms"]
        assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"]


def test_saturation_search_stops_where_throughput_stops_following() -> None:
    capacity = 47.0

    def step(rate: float) -> dict[str, Any]:
        return {"errors": {}, "throughput_per_s": min(rate, capacity) * 0.99}

    result = saturation_search(step, start_rate=10, factor=1.5, max_rate=1000)
    offered = [s["offered_per_s"] for s in result["steps"]]
    assert offered == [10, 15, 22.5, 33.75, 50.625]
    assert [s["follows"] for s in result["steps"]] == [True, True, True, True, False]
    assert result["saturated"] and result["last_followed_per_s"] == 33.75
    assert result["capacity_per_s"] == pytest.approx(capacity * 0.99)
    # Errors count as not following, whatever the throughput.
    erring = saturation_search(
        lambda r: {"errors": {"timeout": 1}, "throughput_per_s": r},
        start_rate=5,
        factor=2,
        max_rate=100,
    )
    assert len(erring["steps"]) == 1 and erring["saturated"]


def test_memory_slope_per_10k_items_ignores_the_warm_up() -> None:
    # +50 MB during the first 10 % (warm-up), then 0.2 MB per 1,000 items: a leak.
    samples = []
    for n in range(0, 100_001, 5_000):
        mb = 500 + min(n, 10_000) * 0.005 + max(0, n - 10_000) * 0.0002
        samples.append({"t_s": n / 100, "items": n, "rss_mb": {"worker-1": mb, "gone": None}})
    report = memory_report(samples)
    assert set(report) == {"worker-1"}
    w = report["worker-1"]
    assert w["mb_per_10k_items"] == pytest.approx(2.0, abs=0.01)
    assert w["start_mb"] == 500 and w["after_warmup_mb"] == pytest.approx(550)
    assert w["max_mb"] == w["end_mb"] == pytest.approx(568)


def test_task_results_are_read_as_verdicts_or_error_codes() -> None:
    ok = json.dumps({"status": "SUCCESS", "result": {"decision": "allow"}}).encode()
    bad = json.dumps({"status": "SUCCESS", "result": {"error": {"code": "invalid_input"}}})
    assert _task_error(ok) is None
    assert _task_error(bad.encode()) == "invalid_input"
    assert _task_error(json.dumps({"status": "FAILURE"}).encode()) == "task_failure"
    assert _task_error(b"not json") == "unreadable_result"


# --- real runs -------------------------------------------------------------------------------


def _check_run(report: dict[str, Any], sent: int) -> None:
    assert report["sent"] == sent
    assert report["errors"] == {}, report["errors"]
    assert report["ok"] == sent  # every item sent came back, none lost or doubled
    lat = report["latency_ms"]
    assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"] < 30_000
    assert sum(row["due"] for row in report["intervals"]) == sent
    assert sum(row["ok"] for row in report["intervals"]) == sent
    assert report["throughput_per_s"] > 0


@pytest.mark.integration
def test_task_load_through_a_real_worker(worker: Any, queue_env: str) -> None:
    """Against the session's worker (attached): 30 text items at 15/s."""
    stack = Stack(redis_url=queue_env, watched={"worker": worker.pid})
    opts = LoadOptions(
        target="task",
        mix="text",
        rate=15.0,
        items=30,
        warmup=3,
        interval_s=0.5,
        memory_period_s=0.25,
    )
    report = run_load(stack, opts)
    _check_run(report, 30)
    # Offered 15/s for 2 s: what came back follows the rate (2 cores are shared, so loosely).
    assert 3 < report["throughput_per_s"] <= 16
    memory = report["memory"]
    assert len(memory["samples"]) >= 3
    assert memory["samples"][-1]["items"] == 30
    assert 50 < memory["processes"]["worker"]["end_mb"] < 8000
    assert "p99" in report["summary"]


@pytest.mark.integration
def test_cli_http_load_starts_its_own_stack(tmp_path: Any) -> None:
    """`bench load --target http`: its own Redis, SQLite, two workers and the API."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("MODERATION_REDIS_URL", "MODERATION_DATABASE_URL", "MODERATION_VAR_DIR")
    }
    done = subprocess.run(
        [
            sys.executable, "-m", "moderation", "bench", "load", "--target", "http",
            "--mix", "text", "--rate", "10", "--items", "20", "--workers", "2",
            "--warmup", "4", "--interval", "1", "--bank-size", "100", "--json",
        ],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)  # the report alone on stdout
    _check_run(report, 20)
    assert report["target"] == "http" and report["workers"] == 2
    assert set(report["memory"]["processes"]) == {"worker-1", "worker-2", "api"}
    # Both workers it started answered Celery's stats: 20 items + 4 warm-up between them.
    assert len(report["tasks_per_worker"]) == 2
    assert sum(report["tasks_per_worker"].values()) == 24
