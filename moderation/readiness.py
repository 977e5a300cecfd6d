"""Readiness: Redis answers, the database answers, and some worker has its models loaded
(workers announce that in Redis with a heartbeat that expires)."""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text

from moderation.redis_conn import redis_at
from moderation.settings import Settings

log = logging.getLogger(__name__)

# One key per worker process (value: its status, with a TTL) and a set naming them all.
HEARTBEAT_KEY = "moderation:worker-heartbeat:"
HEARTBEAT_INDEX = "moderation:worker-heartbeats"
PROBE_TIMEOUT_S = 1.0


@dataclass(frozen=True)
class Check:
    """One dependency's state; ``detail`` is safe to show to anyone (no URLs, no hosts)."""

    name: str
    ok: bool
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "detail": self.detail}


def _redis(url: str) -> Any:
    return redis_at(url, timeout=PROBE_TIMEOUT_S)


def check_redis(url: str | None) -> Check:
    if not url:
        return Check("redis", False, "not configured")
    try:
        _redis(url).ping()
    except Exception as exc:
        log.warning("readiness: redis unreachable (%s)", type(exc).__name__)
        return Check("redis", False, "unreachable")
    return Check("redis", True, "ok")


def check_database(url: str) -> Check:
    from moderation.storage import db

    try:
        with db.session_scope(url) as s:
            s.execute(text("SELECT 1"))
    except Exception as exc:
        log.warning("readiness: database unreachable (%s)", type(exc).__name__)
        return Check("database", False, "unreachable")
    return Check("database", True, "ok")


def worker_statuses(url: str) -> list[dict[str, Any]]:
    """The live heartbeats (expired ones are dropped from the index on the way)."""
    client = _redis(url)
    ids = sorted(m.decode() for m in client.smembers(HEARTBEAT_INDEX))
    values = client.mget([HEARTBEAT_KEY + i for i in ids]) if ids else []
    statuses = []
    for worker_id, raw in zip(ids, values, strict=True):
        if raw is None:
            client.srem(HEARTBEAT_INDEX, worker_id)
        else:
            statuses.append(json.loads(raw))
    return statuses


def check_models(url: str | None) -> Check:
    if not url:
        return Check("models", False, "no redis to read worker heartbeats from")
    try:
        statuses = worker_statuses(url)
    except Exception as exc:
        log.warning("readiness: worker heartbeats unreadable (%s)", type(exc).__name__)
        return Check("models", False, "worker heartbeats unreadable")
    loaded = sum(1 for s in statuses if s.get("models") == "loaded")
    detail = f"{loaded} of {len(statuses)} live worker processes have their models loaded"
    return Check("models", loaded > 0, detail)


def readiness(settings: Settings) -> tuple[bool, dict[str, Any]]:
    """Every check (all are required), and whether all passed."""
    checks = [
        check_redis(settings.redis_url),
        check_database(settings.resolved_database_url),
        check_models(settings.redis_url),
    ]
    ready = all(c.ok for c in checks)
    body = {
        "status": "ready" if ready else "not_ready",
        "checks": {c.name: c.to_dict() for c in checks},
    }
    return ready, body


class Heartbeat:
    """A worker process's announcement in Redis, refreshed by a daemon thread."""

    def __init__(self, redis_url: str, interval_s: float, models: str) -> None:
        self.redis_url = redis_url
        self.interval_s = interval_s
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}"
        self.status = {"worker": self.worker_id, "models": models}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)

    def beat(self) -> None:
        ttl = max(1, round(3 * self.interval_s))
        with _redis(self.redis_url).pipeline(transaction=False) as pipe:
            pipe.set(HEARTBEAT_KEY + self.worker_id, json.dumps(self.status), ex=ttl)
            pipe.sadd(HEARTBEAT_INDEX, self.worker_id)
            pipe.execute()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.beat()
            except Exception as exc:  # Redis down: try again next time, never kill the worker
                log.warning("heartbeat not sent (%s)", type(exc).__name__)
            self._stop.wait(self.interval_s)

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop beating and withdraw the announcement (a clean shutdown)."""
        self._stop.set()
        try:
            client = _redis(self.redis_url)
            client.delete(HEARTBEAT_KEY + self.worker_id)
            client.srem(HEARTBEAT_INDEX, self.worker_id)
        except Exception:
            pass  # it expires by itself


def wait_ready(settings: Settings, timeout: float) -> dict[str, Any]:
    """Poll until ready or the timeout; returns the last report (tests, scripts)."""
    deadline = time.monotonic() + timeout
    while True:
        ready, body = readiness(settings)
        if ready or time.monotonic() > deadline:
            return body
        time.sleep(0.2)
