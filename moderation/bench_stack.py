"""The processes `moderation bench load` drives: Redis, N workers and the HTTP API, started
here in a scratch directory (as `moderation bench` does) or attached to a running stack."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from moderation.errors import InvalidInput, Unavailable
from moderation.settings import get_settings


@dataclass
class Stack:
    """Where to send load, and the processes whose memory is watched (name -> pid)."""

    redis_url: str
    api_url: str | None = None
    api_key: str | None = None
    watched: dict[str, int] = field(default_factory=dict)
    workers: int = 0


def wait_for_workers(count: int, timeout: float = 120.0) -> int:
    """Block until ``count`` workers answer a ping on the configured broker."""
    from moderation.queue import client

    deadline = time.monotonic() + timeout
    seen = 0
    while time.monotonic() < deadline:
        seen = len(client().control.ping(timeout=0.5) or [])
        if seen >= count:
            return seen
    raise Unavailable(f"{seen} of {count} workers answered within {timeout:g} s")


def wait_http(url: str, timeout: float = 60.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=0.5).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise Unavailable(f"{url} did not answer within {timeout:g} s")


def start_api(directory: Path, port: int) -> subprocess.Popen[bytes]:
    """`moderation serve --no-worker` on loopback (settings from this process's env)."""
    from moderation.embedded import _die_with_parent

    log = (directory / "api.log").open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "moderation", "serve", "--no-worker", "--port", str(port)],
        env=dict(os.environ, MODERATION_LOG_LEVEL="WARNING"),
        cwd=directory,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=_die_with_parent,
    )


def start_worker(directory: Path, redis_url: str, n: int) -> subprocess.Popen[bytes]:
    """One solo `moderation worker` (as `moderation.embedded.start_worker` starts it), its
    output to a log file so that the report alone goes to stdout."""
    from moderation.embedded import _die_with_parent

    log = (directory / f"worker-{n}.log").open("ab")
    return subprocess.Popen(
        [
            sys.executable, "-m", "moderation", "worker", "--concurrency", "1",
            "--pool", "solo", "--loglevel", "WARNING", "--hostname", f"load{n}-{os.getpid()}@%h",
        ],
        env=dict(os.environ, MODERATION_REDIS_URL=redis_url),
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=_die_with_parent,
    )  # fmt: skip


def _service_key(name: str) -> str:
    from moderation.keys import create_key
    from moderation.storage import db

    with db.session_scope(get_settings().resolved_database_url) as s:
        # Unlimited: the benchmark measures the service, not the per-key rate limiter.
        secret, _ = create_key(s, "service", name, rate_limit="none")
    return secret


@contextmanager
def own_stack(*, workers: int, with_api: bool, bank_size: int) -> Iterator[Stack]:
    """A scratch stack: embedded Redis unless MODERATION_REDIS_URL is set, a temporary SQLite
    database unless MODERATION_DATABASE_URL is set, ``workers`` solo worker processes (one
    per core is the production shape), and the API when ``with_api``."""
    from moderation.bench import _seed_bank
    from moderation.embedded import EmbeddedRedis, free_port, stop_process
    from moderation.queue import reset_client
    from moderation.storage import db

    if workers < 1:
        raise InvalidInput("--workers must be >= 1", field="workers")
    saved = dict(os.environ)
    tmp = tempfile.TemporaryDirectory(prefix="moderation-load-")
    redis: EmbeddedRedis | None = None
    procs: list[subprocess.Popen[bytes]] = []
    try:
        os.environ["MODERATION_VAR_DIR"] = tmp.name
        if not os.environ.get("MODERATION_DATABASE_URL"):
            os.environ["MODERATION_DATABASE_URL"] = f"sqlite:///{Path(tmp.name) / 'load.db'}"
        get_settings.cache_clear()
        if not get_settings().redis_url:
            redis = EmbeddedRedis(Path(tmp.name))
            os.environ["MODERATION_REDIS_URL"] = redis.start()
            get_settings.cache_clear()
        settings = get_settings()
        redis_url = settings.redis_url or ""
        reset_client()
        db.migrate(settings.resolved_database_url)
        _seed_bank(bank_size)
        stack = Stack(redis_url=redis_url, workers=workers)
        for n in range(workers):
            proc = start_worker(Path(tmp.name), redis_url, n + 1)
            procs.append(proc)
            stack.watched[f"worker-{n + 1}"] = proc.pid
        wait_for_workers(workers)
        if with_api:
            port = free_port()
            stack.api_key = _service_key("bench-load")
            api = start_api(Path(tmp.name), port)
            procs.append(api)
            stack.api_url = f"http://127.0.0.1:{port}"
            wait_http(stack.api_url + "/healthz")
            stack.watched["api"] = api.pid
        yield stack
    finally:
        for proc in reversed(procs):
            stop_process(proc)
        if redis is not None:
            redis.stop()
        os.environ.clear()
        os.environ.update(saved)
        get_settings.cache_clear()
        reset_client()
        tmp.cleanup()


def attached_stack(
    *, api_url: str | None, api_key: str | None, watch_pids: tuple[int, ...]
) -> Stack:
    """A running deployment: Redis (and the database) from the settings, the API if given."""
    settings = get_settings()
    if not settings.redis_url:
        raise InvalidInput("--attach needs MODERATION_REDIS_URL", field="attach")
    if api_url and not api_key:
        api_key = os.environ.get("MODERATION_BENCH_API_KEY")
    return Stack(
        redis_url=settings.redis_url,
        api_url=api_url.rstrip("/") if api_url else None,
        api_key=api_key,
        watched={f"pid-{pid}": pid for pid in watch_pids},
    )
