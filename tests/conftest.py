"""Shared fixtures: a real database (SQLite, or PostgreSQL via MODERATION_TEST_DATABASE_URL),
a real Redis (the local server when reachable, else the embedded one) and a real worker."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

REQUIRE_ALL = os.environ.get("MODERATION_TEST_REQUIRE_ALL") == "1"


def _reachable(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.3).ping())
    except Exception:
        return False


def _reset_database(url: str) -> None:
    from sqlalchemy import text

    from moderation.storage import db
    from moderation.storage.tables import Base

    engine = db.get_engine(url)
    Base.metadata.drop_all(engine)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
    db.migrate(url)


@pytest.fixture(scope="session")
def var_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("var")


@pytest.fixture(scope="session")
def database_url(var_dir: Path) -> str:
    url = os.environ.get("MODERATION_TEST_DATABASE_URL") or f"sqlite:///{var_dir / 'test.db'}"
    _reset_database(url)
    return url


@pytest.fixture(scope="session")
def redis_url(var_dir: Path) -> Iterator[str]:
    url = os.environ.get("MODERATION_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    if _reachable(url):
        import redis

        redis.Redis.from_url(url).flushdb()
        yield url
        return
    if REQUIRE_ALL:
        pytest.fail(f"MODERATION_TEST_REQUIRE_ALL is set but Redis at {url} is not reachable")
    from moderation.embedded import EmbeddedRedis

    embedded = EmbeddedRedis(var_dir / "embedded")
    yield embedded.start()
    embedded.stop()


@pytest.fixture(scope="session", autouse=True)
def service_env(var_dir: Path, database_url: str) -> Iterator[None]:
    """Point the settings at the test database before anything reads them."""
    from moderation.settings import get_settings

    old = dict(os.environ)
    os.environ["MODERATION_VAR_DIR"] = str(var_dir)
    os.environ["MODERATION_DATABASE_URL"] = database_url
    os.environ.pop("MODERATION_CONFIG", None)
    get_settings.cache_clear()
    yield
    os.environ.clear()
    os.environ.update(old)
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def queue_env(redis_url: str) -> Iterator[str]:
    from moderation.queue import reset_client
    from moderation.settings import get_settings

    os.environ["MODERATION_REDIS_URL"] = redis_url
    get_settings.cache_clear()
    reset_client()
    yield redis_url
    reset_client()


class WebhookReceiver:
    """A real HTTP server on loopback that records the webhook requests it gets."""

    secret = "test-webhook-secret"

    def __init__(self) -> None:
        import http.server
        import threading

        self.requests: list[tuple[dict[str, str], bytes]] = []
        # Content id -> how many of its events to answer with 503 first.
        self.fail_first: dict[str, int] = {}
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                import json

                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                cid = json.loads(body).get("content_id", "")
                if receiver.fail_first.get(cid, 0) > 0:
                    receiver.fail_first[cid] -= 1
                    self.send_response(503)
                    self.end_headers()
                    return
                receiver.requests.append((dict(self.headers.items()), body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def events_for(self, content_id: str) -> list[tuple[dict[str, str], bytes]]:
        import json

        return [(h, b) for h, b in self.requests if json.loads(b)["content_id"] == content_id]


@pytest.fixture(scope="session")
def webhook_receiver() -> Iterator[WebhookReceiver]:
    """Where the worker sends its webhook events (set before the worker starts)."""
    from moderation.settings import get_settings

    receiver = WebhookReceiver()
    os.environ["MODERATION_WEBHOOK_URL"] = receiver.url
    os.environ["MODERATION_WEBHOOK_SECRET"] = receiver.secret
    get_settings.cache_clear()
    yield receiver
    receiver.server.shutdown()


@pytest.fixture(scope="session")
def worker(
    queue_env: str, var_dir: Path, webhook_receiver: WebhookReceiver
) -> Iterator[subprocess.Popen[bytes]]:
    """One real Celery worker process (prefork, 2 children) on the test Redis and database."""
    from moderation.embedded import stop_process, wait_for_worker

    log = (var_dir / "worker.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "moderation", "worker", "-c", "2", "-P", "prefork", "-l", "INFO"],
        env=dict(os.environ),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_worker(timeout=60)
    except Exception:
        stop_process(proc)
        pytest.fail("worker did not start:\n" + (var_dir / "worker.log").read_text()[-4000:])
    yield proc
    stop_process(proc)
    log.close()


@pytest.fixture(scope="module")
def sender(worker, queue_env):  # type: ignore[no-untyped-def]
    """A plain Celery client that knows nothing of our code: it sends the task by name."""
    from celery import Celery

    app = Celery("outside-caller", broker=queue_env, backend=queue_env)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
    )

    def send(item: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
        result = app.send_task("moderation.moderate", args=[item], queue="moderate")
        return result.get(timeout=timeout, interval=0.01)

    return send


@pytest.fixture()
def runtime(database_url: str):  # type: ignore[no-untyped-def]
    """A fresh in-process runtime on the test database (banks and lists loaded)."""
    from moderation.runtime import build_runtime
    from moderation.settings import get_settings

    return build_runtime(get_settings(), migrate=False)


@pytest.fixture()
def uid() -> str:
    """A unique suffix so tests sharing the session database never collide."""
    return uuid.uuid4().hex[:10]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 30.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=0.5)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise TimeoutError(url)


def run_cli(
    *args: str, check: bool = True, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """``python -m moderation ARGS`` in a child process, with this process's environment."""
    return subprocess.run(
        [sys.executable, "-m", "moderation", *args],
        env=dict(os.environ),
        capture_output=True,
        text=True,
        check=check,
        timeout=timeout,
    )


@contextmanager
def moderation_serve(var: Path, env: dict[str, str], timeout: float = 90) -> Iterator[str]:
    """`moderation serve` run in ``var`` (as `make run` starts it); yields its base URL."""
    port = free_port()
    with (var / "serve.log").open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moderation", "serve", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=var,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            wait_http(base + "/healthz", timeout=timeout)
            yield base
        finally:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
