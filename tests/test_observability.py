"""Operations: JSON log lines with request ids carried from the API into a real worker's tasks
(and the tasks they queue), secrets kept out of logs, worker and API Prometheus metrics."""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from moderation import logs
from moderation.api.app import create_app
from moderation.keys import create_key
from moderation.settings import get_settings
from moderation.storage.db import session_scope
from tests.conftest import free_port, wait_http

vs = pytest.importorskip("moderation.video_synth")


# --- log lines (in this process) ---


@pytest.fixture()
def captured() -> Iterator[io.StringIO]:
    """The root logger writing JSON lines into a buffer; the old handlers come back after."""
    root = logging.getLogger()
    old_handlers, old_level = list(root.handlers), root.level
    buf = io.StringIO()
    logs.configure_logging("json", "INFO", secrets=["webhook-secret-value"], stream=buf)
    yield buf
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in old_handlers:
        root.addHandler(h)
    root.setLevel(old_level)


def _lines(buf: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buf.getvalue().splitlines() if line.strip()]


def test_a_line_is_one_json_object_with_the_bound_context(captured: io.StringIO) -> None:
    log = logging.getLogger("moderation.test")
    log.info("outside")
    with logs.bound(request_id="req-1", content_id="c-1"):
        log.warning("inside %s", "a request")
    first, second = _lines(captured)
    assert first["message"] == "outside" and first["request_id"] is None
    assert "content_id" not in first
    assert {k: second[k] for k in ("level", "logger", "message", "request_id", "content_id")} == {
        "level": "WARNING",
        "logger": "moderation.test",
        "message": "inside a request",
        "request_id": "req-1",
        "content_id": "c-1",
    }
    assert second["timestamp"].endswith("+00:00")


def test_secrets_are_redacted_from_messages_and_tracebacks(captured: io.StringIO) -> None:
    log = logging.getLogger("moderation.test")
    key = "mod_" + "A1b2C3d4" * 4
    log.info("got %s and Bearer tok3n-xyz and webhook-secret-value", key)
    try:
        raise ValueError(f"bad key {key}")
    except ValueError:
        log.exception("failed")
    text = captured.getvalue()
    assert key not in text and "tok3n-xyz" not in text and "webhook-secret-value" not in text
    assert text.count(logs.REDACTED) >= 4
    assert "ValueError" in text  # the traceback is still there, scrubbed
    log.info("rotated key mod_Ab12Cd34")  # a 12-character key prefix names a key: kept
    assert _lines(captured)[-1]["message"] == "rotated key mod_Ab12Cd34"


def test_request_ids_are_echoed_checked_or_made(captured: io.StringIO, database_url: str) -> None:
    with session_scope(database_url) as s:
        key = create_key(s, "reviewer", "obs-reviewer")[0]
    client = TestClient(create_app(get_settings()))
    headers = {"Authorization": f"Bearer {key}"}

    given = f"caller-{uuid.uuid4().hex}"
    resp = client.get("/v1/review/queues", headers={**headers, "X-Request-ID": given})
    assert resp.headers["x-request-id"] == given
    # Unsafe or oversized ids are replaced, never echoed or logged.
    for bad in ("a" * 129, "x\r\nSet-Cookie: a=b", "<script>", ""):
        resp = client.get("/healthz", headers={"X-Request-ID": bad})
        made = resp.headers["x-request-id"]
        assert made != bad and len(made) == 32
    # Errors carry one too, and a key (right or wrong) never reaches the log lines.
    resp = client.get("/v1/review/queues", headers={"Authorization": "Bearer mod_wrongwrongwrong"})
    assert resp.status_code == 401 and resp.headers["x-request-id"]

    text = captured.getvalue()
    assert key not in text and "mod_wrongwrongwrong" not in text
    access = [x for x in _lines(captured) if x["logger"] == "moderation.api.access"]
    mine = [x for x in access if x["request_id"] == given]
    assert len(mine) == 1 and mine[0]["status"] == 200
    assert mine[0]["message"] == "GET /v1/review/queues 200"
    assert {x["status"] for x in access} >= {200, 401}


# --- a real worker on its own Redis database, JSON logs on stdout, metrics on a port ---


def _other_db(url: str) -> str:
    base, _, db = url.rpartition("/")
    if not db.isdigit():
        pytest.skip(f"cannot pick a separate database on {url}")
    return f"{base}/{(int(db) + 1) % 16}"


class OpsWorker:
    def __init__(self, redis_url: str, log: Path, metrics_port: int) -> None:
        self.redis_url, self.log, self.metrics_port = redis_url, log, metrics_port

    def lines(self) -> list[dict[str, Any]]:
        out = []
        for raw in self.log.read_text(errors="replace").splitlines():
            if raw.startswith("{"):
                out.append(json.loads(raw))
        return out

    def metrics(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        from prometheus_client.parser import text_string_to_metric_families

        body = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text
        return {
            (s.name, frozenset(s.labels.items())): s.value
            for fam in text_string_to_metric_families(body)
            for s in fam.samples
        }


@pytest.fixture(scope="module")
def ops_worker(redis_url: str, var_dir: Path, database_url: str) -> Iterator[OpsWorker]:
    """`moderation worker` (solo) on Redis db N+1, consuming every queue but ``anchor``;
    this process's settings and queue client point there too while the module runs."""
    import redis

    from moderation.embedded import stop_process
    from moderation.queue import reset_client

    url = _other_db(redis_url)
    redis.Redis.from_url(url).flushdb()
    port = free_port()
    env = dict(os.environ)
    env.update(
        MODERATION_REDIS_URL=url,
        MODERATION_LOG_FORMAT="json",
        MODERATION_WORKER_METRICS_PORT=str(port),
        MODERATION_WORKER_HEARTBEAT_S="1",
    )
    env.pop("MODERATION_WEBHOOK_URL", None)
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    log = var_dir / f"ops-worker-{uuid.uuid4().hex[:8]}.log"
    cmd = [sys.executable, "-m", "moderation", "worker", "-P", "solo", "-c", "1"]
    cmd += ["-Q", "moderate,video,maintenance", "-l", "INFO"]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    old = {k: os.environ.get(k) for k in ("MODERATION_REDIS_URL", "MODERATION_WEBHOOK_URL")}
    os.environ["MODERATION_REDIS_URL"] = url
    os.environ.pop("MODERATION_WEBHOOK_URL", None)
    get_settings.cache_clear()
    reset_client()
    try:
        try:
            wait_http(f"http://127.0.0.1:{port}/metrics", timeout=90)
        except TimeoutError:
            pytest.fail("worker did not start:\n" + log.read_text()[-4000:])
        yield OpsWorker(url, log, port)
    finally:
        stop_process(proc)
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        get_settings.cache_clear()
        reset_client()
        redis.Redis.from_url(url).flushdb()


@pytest.fixture(scope="module")
def admin_key(database_url: str) -> str:
    with session_scope(database_url) as s:
        return create_key(s, "admin", "obs-admin")[0]


def _wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.integration
def test_request_id_goes_from_the_api_into_the_task_and_the_video_job_it_queues(
    ops_worker: OpsWorker, admin_key: str, captured: io.StringIO
) -> None:
    script = vs.reference_scripts(1, 2.0, seed=5, size=(160, 96))[0]
    video = vs.make_video(script, preset="ultrafast")
    request_id = f"obs-{uuid.uuid4().hex}"
    cid = f"obs-{uuid.uuid4().hex}"
    item = {
        "content_id": cid,
        "uploader_id": "u-obs",
        "text": "a quiet walk by the river",
        "media": [{"kind": "video", "data_b64": base64.b64encode(video).decode()}],
        "context": {},
    }
    client = TestClient(create_app(get_settings()))
    resp = client.post(
        "/v1/moderate",
        json=item,
        headers={"Authorization": f"Bearer {admin_key}", "X-Request-ID": request_id},
    )
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-request-id"] == request_id
    (access,) = [x for x in _lines(captured) if x["logger"] == "moderation.api.access"]
    assert access["request_id"] == request_id and access["content_id"] == cid
    assert access["message"] == "POST /v1/moderate 200"

    def by_task(name: str) -> list[dict[str, Any]]:
        return [x for x in ops_worker.lines() if x.get("task") == name]

    _wait_for(lambda: by_task("moderation.moderate_video"), 60, "the video job's log lines")
    moderate_lines = by_task("moderation.moderate")
    video_lines = by_task("moderation.moderate_video")
    assert moderate_lines and video_lines
    for line in moderate_lines + video_lines:
        assert line["request_id"] == request_id, line
        assert line["content_id"] == cid, line
        assert line["task_id"]
        assert {"timestamp", "level", "logger", "message"} <= set(line)
    # Two tasks, two task ids, one request id.
    assert moderate_lines[0]["task_id"] != video_lines[0]["task_id"]
    assert admin_key not in ops_worker.log.read_text()

    # The worker's metrics: task and model latency observed, frames classified.
    def count(name: str, **labels: str) -> float:
        return sum(
            v
            for (n, ls), v in ops_worker.metrics().items()
            if n == name and set(labels.items()) <= set(ls)
        )

    _wait_for(
        lambda: count("moderation_task_seconds_count", task="moderation.moderate_video") >= 1,
        10,
        "the video task's latency observation",
    )
    assert count("moderation_task_seconds_count", task="moderation.moderate", outcome="ok") >= 1
    assert count("moderation_model_seconds_count", kind="text") >= 1
    assert count("moderation_model_seconds_count", kind="video_frame") >= 1
    assert count("moderation_model_seconds_sum", kind="text") > 0


@pytest.mark.integration
def test_an_error_result_is_counted_by_code_in_the_worker(
    ops_worker: OpsWorker, admin_key: str
) -> None:
    client = TestClient(create_app(get_settings()))
    bad = {"content_id": f"obs-bad-{uuid.uuid4().hex}", "uploader_id": "u", "text": "x" * 30_000}
    resp = client.post("/v1/moderate", json=bad, headers={"Authorization": f"Bearer {admin_key}"})
    assert resp.status_code == 413, resp.text
    samples = ops_worker.metrics()
    errors = {
        dict(ls).get("code"): v for (n, ls), v in samples.items() if n == "moderation_errors_total"
    }
    assert errors.get("input_too_large", 0) >= 1
    outcomes = {
        dict(ls)["outcome"]
        for (n, ls), v in samples.items()
        if n == "moderation_task_seconds_count" and v > 0
    }
    assert "error" in outcomes


@pytest.mark.integration
def test_api_metrics_show_the_depth_of_a_queue_nobody_consumes(
    ops_worker: OpsWorker, admin_key: str
) -> None:
    from moderation.queue import ANCHOR_TASK, client

    client().send_task(ANCHOR_TASK, queue="anchor")
    client().send_task(ANCHOR_TASK, queue="anchor")
    client().send_task(ANCHOR_TASK, queue="anchor")
    api = TestClient(create_app(get_settings()))
    resp = api.get("/metrics", headers={"Authorization": f"Bearer {admin_key}"})
    assert resp.status_code == 200
    body = resp.text
    assert 'moderation_queue_depth{queue="anchor"} 3.0' in body
    assert 'moderation_queue_depth{queue="moderate"} 0.0' in body
    assert "moderation_queue_unacked " in body


@pytest.mark.integration
def test_ready_once_the_worker_has_announced_its_models(ops_worker: OpsWorker) -> None:
    api = TestClient(create_app(get_settings()))
    resp = api.get("/readyz")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["status"] == "ready"
    assert {name: c["ok"] for name, c in body["checks"].items()} == {
        "redis": True,
        "database": True,
        "models": True,
    }
    assert "1 of 1" in body["checks"]["models"]["detail"]
