"""`moderation bench load`: an open-loop load at a fixed offered rate against the
`moderation.moderate` task or `POST /v1/moderate`, reporting latency percentiles per time
interval, throughput, errors by code and the memory of the watched processes over time.

Open loop: item i is due at ``i / rate`` seconds whatever came back before, and its latency
runs from that scheduled time, so a slow server cannot slow the sender down and hide its
queueing delay (no coordinated omission).
"""

from __future__ import annotations

import base64
import json
import os
import platform
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from moderation.bench import percentiles
from moderation.errors import InvalidInput

if TYPE_CHECKING:
    from moderation.bench_stack import Stack

MIXES = ("text", "design")
RESULT_PREFIX = "celery-task-meta-"  # Celery's Redis backend: key and channel of a result


# --- the schedule and what is measured ------------------------------------------------------


def parse_duration(text: str) -> float:
    """Seconds from ``90``, ``90s``, ``10m`` or ``1.5h``."""
    units = {"s": 1.0, "m": 60.0, "h": 3600.0}
    value = text.strip().lower()
    scale = units.get(value[-1:])
    try:
        seconds = float(value[:-1] if scale else value) * (scale or 1.0)
    except ValueError:
        raise InvalidInput(f"not a duration: {text!r} (e.g. 90, 90s, 10m, 1h)") from None
    if not 0 < seconds < float("inf"):
        raise InvalidInput("a duration must be > 0 and finite")
    return seconds


def schedule(rate: float, count: int) -> list[float]:
    """Send offsets in seconds from the start: item i at i / rate (open loop)."""
    if rate <= 0 or count < 0:
        raise InvalidInput("rate must be > 0 and count >= 0", field="rate")
    return [i / rate for i in range(count)]


@dataclass
class Sample:
    """One item: when it was due, when its answer came (seconds from the start), its error."""

    scheduled: float
    sent: float | None = None
    done: float | None = None
    error: str | None = None

    @property
    def latency_ms(self) -> float | None:
        if self.done is None or self.error is not None:
            return None
        return (self.done - self.scheduled) * 1000


def summarize(samples: Sequence[Sample]) -> dict[str, Any]:
    """Totals of a run: sent, ok, errors by code, throughput, latency percentiles."""
    ok = [s.latency_ms for s in samples if s.latency_ms is not None]
    errors: dict[str, int] = {}
    for s in samples:
        if s.error is not None:
            errors[s.error] = errors.get(s.error, 0) + 1
    finished = [s.done for s in samples if s.done is not None]
    # From the first due send to the last answer: an answer counts wherever it lands.
    span = max(finished) if finished else 0.0
    lags = [(s.sent - s.scheduled) * 1000 for s in samples if s.sent is not None]
    return {
        "sent": len(samples),
        "ok": len(ok),
        "errors": errors,
        "throughput_per_s": round(len(ok) / span, 2) if span > 0 else 0.0,
        "latency_ms": percentiles(ok),
        "max_send_lag_ms": round(max(lags), 2) if lags else 0.0,
    }


def per_interval(samples: Sequence[Sample], interval_s: float) -> list[dict[str, Any]]:
    """Latency percentiles of the items due in each interval, and answers per second that
    landed in it: a rising p99 or a falling done rate shows when the run degrades."""
    if interval_s <= 0:
        raise InvalidInput("interval must be > 0", field="interval")
    if not samples:
        return []
    last = max(max(s.scheduled for s in samples), max((s.done or 0.0) for s in samples))
    buckets = int(last // interval_s) + 1
    due: list[list[Sample]] = [[] for _ in range(buckets)]
    done = [0] * buckets
    for s in samples:
        due[int(s.scheduled // interval_s)].append(s)
        if s.done is not None and s.error is None:
            done[int(s.done // interval_s)] += 1
    rows = []
    for i in range(buckets):
        items = due[i]
        if not items and not done[i]:
            continue
        lat = [s.latency_ms for s in items if s.latency_ms is not None]
        rows.append(
            {
                "t_s": round(i * interval_s, 3),
                "due": len(items),
                "ok": len(lat),
                "errors": sum(1 for s in items if s.error is not None),
                "done_per_s": round(done[i] / interval_s, 2),
                "latency_ms": percentiles(lat),
            }
        )
    return rows


def saturation_search(
    run_step: Callable[[float], dict[str, Any]],
    *,
    start_rate: float,
    factor: float,
    max_rate: float,
    follow: float = 0.95,
) -> dict[str, Any]:
    """Raise the offered rate by ``factor`` until the achieved throughput falls below
    ``follow`` x offered (or errors appear); the capacity is the highest throughput seen."""
    if start_rate <= 0 or factor <= 1 or max_rate < start_rate or not 0 < follow <= 1:
        raise InvalidInput("need 0 < start rate <= max rate, factor > 1, 0 < follow <= 1")
    steps: list[dict[str, Any]] = []
    rate = start_rate
    saturated = False
    while rate <= max_rate * (1 + 1e-9):
        step = run_step(rate)
        step["offered_per_s"] = round(rate, 3)
        step["follows"] = not step["errors"] and step["throughput_per_s"] >= follow * rate
        steps.append(step)
        if not step["follows"]:
            saturated = True
            break
        rate *= factor
    return {
        "steps": steps,
        "saturated": saturated,
        "capacity_per_s": max(s["throughput_per_s"] for s in steps),
        "last_followed_per_s": max(
            (s["offered_per_s"] for s in steps if s["follows"]), default=0.0
        ),
    }


# --- memory ----------------------------------------------------------------------------------


class MemoryWatch:
    """Samples the RSS of each watched process (with its children) every ``period_s``,
    with the number of answered items at that moment, so growth per item can be fitted."""

    def __init__(self, pids: dict[str, int], period_s: float, items_done: Callable[[], int]):
        self.pids = pids
        self.period_s = period_s
        self.items_done = items_done
        self.samples: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memory-watch", daemon=True)
        self._t0 = time.perf_counter()

    def start(self) -> None:
        if self.pids:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        if self.pids:
            self._sample()

    def _run(self) -> None:
        while True:
            self._sample()
            if self._stop.wait(self.period_s):
                return

    def _sample(self) -> None:
        self.samples.append(
            {
                "t_s": round(time.perf_counter() - self._t0, 1),
                "items": self.items_done(),
                "rss_mb": {name: rss_mb(pid) for name, pid in self.pids.items()},
            }
        )

    def report(self) -> dict[str, Any]:
        return memory_report(self.samples)


def rss_mb(pid: int) -> float | None:
    """Resident memory of a process and its children in MB (None once it is gone)."""
    import psutil

    try:
        proc = psutil.Process(pid)
        total = proc.memory_info().rss
        for child in proc.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.Error:
                continue
    except psutil.Error:
        return None
    return round(total / 2**20, 1)


def memory_report(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per process: RSS at start, end and max, and its slope in MB per 10,000 items over the
    last 90 % of the items (the first 10 % are warm-up: caches, allocator arenas)."""
    import numpy as np

    out: dict[str, Any] = {}
    names = {name for s in samples for name in s["rss_mb"]}
    for name in sorted(names):
        points = [(s["items"], s["rss_mb"][name]) for s in samples if s["rss_mb"].get(name)]
        if not points:
            continue
        total = points[-1][0]
        late = [(n, mb) for n, mb in points if n >= 0.1 * total]
        slope = None
        if len(late) >= 3 and late[-1][0] > late[0][0]:
            x = np.asarray([n for n, _ in late], dtype=float)
            y = np.asarray([mb for _, mb in late], dtype=float)
            slope = round(float(np.polyfit(x, y, 1)[0]) * 10_000, 2)
        out[name] = {
            "start_mb": points[0][1],
            "after_warmup_mb": late[0][1] if late else None,
            "end_mb": points[-1][1],
            "max_mb": max(mb for _, mb in points),
            "mb_per_10k_items": slope,
        }
    return out


# --- items -----------------------------------------------------------------------------------


def item_template(mix: str) -> dict[str, Any]:
    """``text``: the 280 characters of the DESIGN budget item alone; ``design``: those plus
    one 1280x720 JPEG (169 KB, inline), the item of the latency budget."""
    from moderation.samples import BENCH_TEXT, bench_jpeg

    if mix not in MIXES:
        raise InvalidInput(f"mix must be one of {', '.join(MIXES)}", field="mix")
    media = []
    if mix == "design":
        media = [{"kind": "image", "data_b64": base64.b64encode(bench_jpeg()).decode()}]
    return {"uploader_id": "bench-load", "text": BENCH_TEXT, "context": {}, "media": media}


# --- drivers ---------------------------------------------------------------------------------


class TaskDriver:
    """Sends `moderation.moderate` by name and hears every answer on one Redis pub/sub
    subscription to Celery's result channels, so one thread keeps up with any rate."""

    def __init__(self, redis_url: str, timeout_s: float) -> None:
        import redis
        from celery import Celery

        from moderation.queue import celery_config
        from moderation.settings import get_settings

        self.timeout_s = timeout_s
        self.redis = redis.Redis.from_url(redis_url)
        conf = celery_config(get_settings().model_copy(update={"redis_url": redis_url}))
        # No result backend on the sender: Celery's would subscribe to every task's channel
        # and never read them; the workers still store and publish each result.
        conf.pop("result_backend", None)
        conf.pop("result_backend_transport_options", None)
        self.app = Celery("bench-load")
        self.app.conf.update(conf)
        self.pending: dict[str, Sample] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._listener: threading.Thread | None = None
        self._t0 = time.perf_counter()  # reset by each run: answers are timed from its start
        self.answered = 0

    def __enter__(self) -> TaskDriver:
        pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        pubsub.psubscribe(RESULT_PREFIX + "*")
        self._listener = threading.Thread(
            target=self._listen, args=(pubsub,), name="results", daemon=True
        )
        self._listener.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._listener is not None:
            self._listener.join(5)

    def _listen(self, pubsub: Any) -> None:
        t_done: list[str] = []
        while not self._stop.is_set():
            message = pubsub.get_message(timeout=0.2)
            if message is None:
                self._forget(t_done)
                continue
            now = time.perf_counter()
            task_id = message["channel"].decode()[len(RESULT_PREFIX) :]
            with self._lock:
                sample = self.pending.pop(task_id, None)
            if sample is None:
                continue
            t_done.append(RESULT_PREFIX + task_id)
            if sample.error is None:  # not already given up on
                sample.done = now - self._t0
                sample.error = _task_error(message["data"])
            self.answered += 1
            if len(t_done) >= 200:
                self._forget(t_done)
        pubsub.close()

    def _forget(self, keys: list[str]) -> None:
        # Results are kept for an hour by default; a 100,000-item run would fill Redis.
        if keys:
            self.redis.delete(*keys)
            keys.clear()

    def run(
        self, offsets: Sequence[float], make_item: Callable[[int], dict[str, Any]]
    ) -> list[Sample]:
        from moderation.queue import MODERATE_TASK

        samples = [Sample(at) for at in offsets]
        self._t0 = t0 = time.perf_counter()
        for i, sample in enumerate(samples):
            delay = t0 + sample.scheduled - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            task_id = uuid.uuid4().hex
            with self._lock:
                self.pending[task_id] = sample
            sample.sent = time.perf_counter() - t0
            try:
                self.app.send_task(MODERATE_TASK, args=[make_item(i)], task_id=task_id)
            except Exception as exc:  # counted, never fatal to the run
                with self._lock:
                    self.pending.pop(task_id, None)
                sample.done, sample.error = time.perf_counter() - t0, type(exc).__name__
        deadline = time.perf_counter() + self.timeout_s
        while time.perf_counter() < deadline:
            with self._lock:
                if not self.pending:
                    break
            time.sleep(0.02)
        with self._lock:
            for sample in self.pending.values():
                sample.error = "timeout"
        return samples

    def drain(self, timeout_s: float) -> None:
        """Wait for answers to items given up on, so the next step starts on an empty queue."""
        deadline = time.perf_counter() + timeout_s
        while time.perf_counter() < deadline:
            with self._lock:
                if not self.pending:
                    return
            time.sleep(0.1)


def _task_error(data: bytes) -> str | None:
    try:
        meta = json.loads(data)
    except ValueError:
        return "unreadable_result"
    if meta.get("status") != "SUCCESS":
        return f"task_{str(meta.get('status', 'unknown')).lower()}"
    result = meta.get("result")
    if isinstance(result, dict) and "error" in result:
        return str(result["error"].get("code", "error"))
    return None


class HttpDriver:
    """POSTs each item to /v1/moderate at its time from one asyncio loop (one connection per
    item in flight, up to ``max_connections``)."""

    def __init__(self, api_url: str, api_key: str, timeout_s: float, max_connections: int = 512):
        self.api_url = api_url
        self.api_key = api_key
        self.timeout_s = timeout_s
        self.max_connections = max_connections
        self.answered = 0

    def __enter__(self) -> HttpDriver:
        return self

    def __exit__(self, *_: object) -> None:
        return None

    def drain(self, timeout_s: float) -> None:
        return None  # the stack's queue drain covers requests the API gave up on

    def run(
        self, offsets: Sequence[float], make_item: Callable[[int], dict[str, Any]]
    ) -> list[Sample]:
        import asyncio

        samples = [Sample(at) for at in offsets]
        asyncio.run(self._run(samples, make_item))
        return samples

    async def _run(self, samples: list[Sample], make_item: Callable[[int], dict[str, Any]]) -> None:
        import asyncio

        import httpx

        limits = httpx.Limits(
            max_connections=self.max_connections, max_keepalive_connections=self.max_connections
        )
        headers = {"Authorization": f"Bearer {self.api_key}", "Content-Type": "application/json"}
        async with httpx.AsyncClient(
            base_url=self.api_url, headers=headers, timeout=self.timeout_s, limits=limits
        ) as http:
            t0 = time.perf_counter()

            async def one(sample: Sample, body: bytes) -> None:
                sample.sent = time.perf_counter() - t0
                try:
                    response = await http.post("/v1/moderate", content=body)
                    sample.error = _http_error(response)
                except httpx.TimeoutException:
                    sample.error = "timeout"
                except httpx.HTTPError as exc:
                    sample.error = type(exc).__name__
                sample.done = time.perf_counter() - t0
                self.answered += 1

            tasks = set()
            for i, sample in enumerate(samples):
                body = json.dumps(make_item(i)).encode()
                delay = t0 + sample.scheduled - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                task = asyncio.create_task(one(sample, body))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            while tasks:
                await asyncio.gather(*list(tasks))


def _http_error(response: Any) -> str | None:
    if response.status_code == 200:
        return None
    try:
        code = response.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        code = "?"
    return f"http_{response.status_code}_{code}"


# --- runs ------------------------------------------------------------------------------------


@dataclass
class LoadOptions:
    target: str = "task"
    mix: str = "design"
    rate: float = 20.0
    duration_s: float = 30.0
    items: int | None = None
    warmup: int = 20
    interval_s: float = 10.0
    timeout_s: float = 30.0
    memory_period_s: float = 5.0


def _driver(stack: Stack, opts: LoadOptions) -> TaskDriver | HttpDriver:
    if opts.target == "task":
        return TaskDriver(stack.redis_url, opts.timeout_s)
    if opts.target == "http":
        if not (stack.api_url and stack.api_key):
            raise InvalidInput("--target http needs the API's URL and a service key")
        return HttpDriver(stack.api_url, stack.api_key, opts.timeout_s)
    raise InvalidInput("target must be task or http", field="target")


def _items(template: dict[str, Any]) -> Callable[[int], dict[str, Any]]:
    run = uuid.uuid4().hex[:8]
    # A fresh content id each: a repeated one returns the stored verdict without any work.
    return lambda i: dict(template, content_id=f"load-{run}-{i}")


def _queue_depth(redis_url: str) -> int:
    import redis

    depth: Any = redis.Redis.from_url(redis_url).llen("moderate")
    return int(depth)


def _wait_queue_empty(redis_url: str, timeout_s: float) -> None:
    deadline = time.perf_counter() + timeout_s
    while time.perf_counter() < deadline and _queue_depth(redis_url):
        time.sleep(0.2)


def measure(
    stack: Stack,
    driver: TaskDriver | HttpDriver,
    opts: LoadOptions,
    rate: float,
    count: int,
    template: dict[str, Any],
    *,
    watch_memory: bool,
) -> dict[str, Any]:
    """One open-loop phase at ``rate`` for ``count`` items, then drain what is left."""
    base = driver.answered  # items of this phase only, not the warm-up's
    watch = MemoryWatch(
        stack.watched if watch_memory else {},
        opts.memory_period_s,
        lambda: driver.answered - base,
    )
    watch.start()
    started = time.perf_counter()
    try:
        samples = driver.run(schedule(rate, count), _items(template))
    finally:
        watch.stop()
    wall = time.perf_counter() - started
    driver.drain(opts.timeout_s * 4)
    _wait_queue_empty(stack.redis_url, opts.timeout_s * 4)
    report = summarize(samples)
    report.update(
        {
            "offered_per_s": rate,
            "duration_s": round(count / rate, 2),
            "wall_s": round(wall, 2),
            "intervals": per_interval(samples, opts.interval_s),
        }
    )
    if watch_memory and stack.watched:
        report["memory"] = {"samples": watch.samples, "processes": watch.report()}
    return report


@contextmanager
def _session(stack: Stack, opts: LoadOptions) -> Iterator[TaskDriver | HttpDriver]:
    with _driver(stack, opts) as driver:
        if opts.warmup:
            # Warm-up at a gentle rate, not measured: first calls load caches and connections.
            driver.run(schedule(min(opts.rate, 10.0), opts.warmup), _items(item_template(opts.mix)))
            driver.drain(opts.timeout_s)
        yield driver


def run_load(stack: Stack, opts: LoadOptions) -> dict[str, Any]:
    """A fixed offered rate for a duration or an item count."""
    count = opts.items if opts.items is not None else round(opts.rate * opts.duration_s)
    if count < 1:
        raise InvalidInput("the run must send at least one item", field="items")
    template = item_template(opts.mix)
    with _session(stack, opts) as driver:
        report = measure(stack, driver, opts, opts.rate, count, template, watch_memory=True)
    report.update(_context(stack, opts))
    report["summary"] = format_run(report)
    return report


def run_saturation(
    stack: Stack,
    opts: LoadOptions,
    *,
    start_rate: float,
    factor: float,
    max_rate: float,
    step_s: float,
) -> dict[str, Any]:
    """Find the capacity, then hold 50 % and 80 % of it for ``opts.duration_s`` each."""
    template = item_template(opts.mix)
    with _session(stack, opts) as driver:

        def step(rate: float) -> dict[str, Any]:
            r = measure(
                stack, driver, opts, rate, max(1, int(rate * step_s)), template, watch_memory=False
            )
            r.pop("intervals")
            return r

        search = saturation_search(step, start_rate=start_rate, factor=factor, max_rate=max_rate)
        capacity = search["capacity_per_s"]
        at: dict[str, Any] = {}
        for share in (0.5, 0.8):
            rate = round(capacity * share, 2)
            count = max(1, int(rate * opts.duration_s))
            at[f"{int(share * 100)}pct"] = measure(
                stack, driver, opts, rate, count, template, watch_memory=True
            )
    report: dict[str, Any] = {"mode": "find-saturation", **search, "at": at}
    report.update(_context(stack, opts))
    report["summary"] = format_saturation(report)
    return report


def _context(stack: Stack, opts: LoadOptions) -> dict[str, Any]:
    return {
        "target": opts.target,
        "mix": opts.mix,
        "workers": stack.workers or None,
        "tasks_per_worker": tasks_per_worker(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
    }


def tasks_per_worker() -> dict[str, int]:
    """`moderation.moderate` tasks each worker on the broker has run since it started
    (Celery's own counters; warm-up included): how the load was shared."""
    from moderation.queue import MODERATE_TASK, client

    try:
        stats = client().control.inspect(timeout=2.0).stats() or {}
    except Exception:  # a report without it is still a report
        return {}
    return {name: int(s.get("total", {}).get(MODERATE_TASK, 0)) for name, s in stats.items()}


# --- text output -----------------------------------------------------------------------------


def _lat(lat: dict[str, float]) -> str:
    return f"p50 {lat['p50']} p95 {lat['p95']} p99 {lat['p99']} max {lat['max']} ms"


def format_run(r: dict[str, Any]) -> str:
    lines = [
        f"{r['target']} / {r['mix']}: {r['ok']}/{r['sent']} ok at {r['offered_per_s']:g}/s "
        f"offered, {r['throughput_per_s']}/s done; {_lat(r['latency_ms'])}; "
        f"errors {r['errors'] or 0}; max send lag {r['max_send_lag_ms']} ms",
        f"{'t (s)':>8} {'due':>6} {'ok':>6} {'err':>5} {'done/s':>8} "
        f"{'p50':>8} {'p95':>8} {'p99':>8} {'max':>8}",
    ]
    for row in r["intervals"]:
        lat = row["latency_ms"]
        lines.append(
            f"{row['t_s']:>8g} {row['due']:>6} {row['ok']:>6} {row['errors']:>5} "
            f"{row['done_per_s']:>8} {lat['p50']:>8} {lat['p95']:>8} {lat['p99']:>8} "
            f"{lat['max']:>8}"
        )
    for name, m in r.get("memory", {}).get("processes", {}).items():
        lines.append(
            f"memory {name}: {m['start_mb']} MB at start, {m['after_warmup_mb']} after "
            f"warm-up, {m['end_mb']} at end (max {m['max_mb']}); slope "
            + (
                "n/a (too few samples)"
                if m["mb_per_10k_items"] is None
                else f"{m['mb_per_10k_items']} MB per 10,000 items"
            )
        )
    if r.get("tasks_per_worker"):
        lines.append(f"tasks per worker (since start): {r['tasks_per_worker']}")
    return "\n".join(lines)


def format_saturation(r: dict[str, Any]) -> str:
    lines = [f"{'offered/s':>10} {'done/s':>8} {'errors':>7} {'p50':>8} {'p99':>8}  follows"]
    for s in r["steps"]:
        lines.append(
            f"{s['offered_per_s']:>10g} {s['throughput_per_s']:>8} "
            f"{sum(s['errors'].values()):>7} {s['latency_ms']['p50']:>8} "
            f"{s['latency_ms']['p99']:>8}  {'yes' if s['follows'] else 'NO'}"
        )
    state = "saturated" if r["saturated"] else "not saturated up to --max-rate"
    lines.append(f"capacity {r['capacity_per_s']}/s ({state})")
    if r.get("tasks_per_worker"):
        lines.append(f"tasks per worker (since start): {r['tasks_per_worker']}")
    for name, run in r["at"].items():
        lines.append(f"--- at {name} of capacity ---")
        lines.append(format_run(dict(run, target=r["target"], mix=r["mix"])))
    return "\n".join(lines)
