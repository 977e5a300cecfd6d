"""/healthz and /readyz: open probes that reveal nothing; /readyz names the dependency that
fails (Redis, the database, workers with their models loaded) with a 503."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from moderation.api.app import create_app
from moderation.readiness import HEARTBEAT_INDEX, HEARTBEAT_KEY, Heartbeat
from moderation.settings import Settings, get_settings
from tests.conftest import free_port


def _other_db(url: str) -> str:
    """Db N+1 of the test Redis: the session's worker announces itself on db N."""
    base, _, db = url.rpartition("/")
    if not db.isdigit():
        pytest.skip(f"cannot pick a separate database on {url}")
    return f"{base}/{(int(db) + 1) % 16}"


@pytest.fixture()
def heartbeat_redis(redis_url: str) -> Iterator[str]:
    import redis

    url = _other_db(redis_url)
    client = redis.Redis.from_url(url)
    client.delete(HEARTBEAT_INDEX, *client.keys(HEARTBEAT_KEY + "*"))
    yield url
    client.delete(HEARTBEAT_INDEX, *client.keys(HEARTBEAT_KEY + "*"))


def _app(**overrides: Any) -> tuple[FastAPI, TestClient]:
    app = create_app(get_settings())
    # The probes read the app's settings per request: point them at what each test needs.
    app.state.settings = Settings(**{**get_settings().model_dump(), **overrides})
    return app, TestClient(app)


def _ready(client: TestClient) -> tuple[int, dict[str, Any]]:
    resp = client.get("/readyz")
    return resp.status_code, resp.json()


def _oks(body: dict[str, Any]) -> dict[str, bool]:
    return {name: check["ok"] for name, check in body["checks"].items()}


def test_healthz_checks_nothing_and_needs_no_key() -> None:
    # Even with Redis and the database gone, the process is alive: no restart loop.
    _, client = _app(
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
        database_url=f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/none",
    )
    resp = client.get("/healthz")
    assert resp.status_code == 200 and resp.json() == {"status": "ok"}


def test_ready_with_redis_database_and_a_worker_whose_models_loaded(
    heartbeat_redis: str,
) -> None:
    _, client = _app(redis_url=heartbeat_redis)
    status, body = _ready(client)
    assert status == 503 and _oks(body) == {"redis": True, "database": True, "models": False}
    assert body["status"] == "not_ready"

    beat = Heartbeat(heartbeat_redis, interval_s=0.5, models="loaded").start()
    try:
        time.sleep(0.2)
        status, body = _ready(client)
        assert status == 200, body
        assert body["status"] == "ready"
        assert _oks(body) == {"redis": True, "database": True, "models": True}
    finally:
        beat.stop()
    # A clean shutdown withdraws the announcement at once.
    status, body = _ready(client)
    assert status == 503 and body["checks"]["models"]["ok"] is False


def test_a_worker_whose_models_failed_does_not_make_the_service_ready(
    heartbeat_redis: str,
) -> None:
    _, client = _app(redis_url=heartbeat_redis)
    beat = Heartbeat(heartbeat_redis, interval_s=0.5, models="failed").start()
    try:
        time.sleep(0.2)
        status, body = _ready(client)
    finally:
        beat.stop()
    assert status == 503
    assert body["checks"]["models"] == {
        "ok": False,
        "detail": "0 of 1 live worker processes have their models loaded",
    }


def test_a_dead_workers_heartbeat_expires(heartbeat_redis: str) -> None:
    beat = Heartbeat(heartbeat_redis, interval_s=0.34, models="loaded")
    beat.beat()  # one announcement (TTL 1 s), never refreshed: the worker "died"
    _, client = _app(redis_url=heartbeat_redis)
    assert _ready(client)[0] == 200
    time.sleep(1.3)
    status, body = _ready(client)
    assert status == 503 and body["checks"]["models"]["ok"] is False


def test_503_names_redis_when_it_is_unreachable(heartbeat_redis: str) -> None:
    closed = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    _, client = _app(redis_url=closed)
    started = time.monotonic()
    status, body = _ready(client)
    assert time.monotonic() - started < 5
    assert status == 503
    assert _oks(body) == {"redis": False, "database": True, "models": False}
    assert body["checks"]["redis"]["detail"] == "unreachable"
    # Nothing about where it is, or how to log in.
    assert "hunter2" not in str(body) and "127.0.0.1" not in str(body)


def test_503_names_the_database_when_it_is_unreachable(heartbeat_redis: str) -> None:
    beat = Heartbeat(heartbeat_redis, interval_s=0.5, models="loaded").start()
    try:
        time.sleep(0.2)
        dead = f"postgresql+psycopg://admin:s3cret@127.0.0.1:{free_port()}/moderation"
        _, client = _app(redis_url=heartbeat_redis, database_url=dead)
        status, body = _ready(client)
    finally:
        beat.stop()
    assert status == 503
    assert _oks(body) == {"redis": True, "database": False, "models": True}
    assert "s3cret" not in str(body) and "postgresql" not in str(body)
