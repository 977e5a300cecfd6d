"""`moderation serve` on its embedded defaults (SQLite, embedded Redis, one worker), driven
over HTTP like `make run` and a client would."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port, moderation_serve, wait_http
from tests.images import jpeg, near_copy, photo

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    var = tmp_path_factory.mktemp("serve-var")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODERATION_")}
    env["MODERATION_VAR_DIR"] = str(var)
    with moderation_serve(var, env) as base:
        yield base, env
    assert not (Path(var) / "embedded-redis.json").exists(), "embedded Redis left running"


def _key(env: dict[str, str], role: str) -> str:
    # Created while the server runs, against the same database.
    out = subprocess.run(
        [sys.executable, "-m", "moderation", "keys", "create", "--role", role, "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=env["MODERATION_VAR_DIR"],
    )
    return str(json.loads(out.stdout)["key"])


def test_serve_blocks_evasive_text_and_banked_near_copies(served) -> None:  # type: ignore[no-untyped-def]
    base, env = served
    svc = httpx.Client(
        base_url=base, timeout=30, headers={"Authorization": f"Bearer {_key(env, 'service')}"}
    )
    admin = httpx.Client(
        base_url=base, timeout=30, headers={"Authorization": f"Bearer {_key(env, 'admin')}"}
    )

    first = {
        "content_id": "e2e-text",
        "uploader_id": "u",
        "text": "你是个傻\u200b逼",
        "media": [],
        "context": {},
    }
    # The worker warms its models (and builds the text encoder's ONNX cache in a fresh
    # var/) after /healthz answers: a client retries 503s, and the task is idempotent.
    deadline = time.monotonic() + 180
    while (r := svc.post("/v1/moderate", json=first)).status_code == 503:
        assert time.monotonic() < deadline, r.text
    assert r.status_code == 200, r.text
    assert r.json()["decision"] == "block"
    assert any("傻逼" in reason["detail"] for reason in r.json()["reasons"])

    r = svc.post(
        "/v1/moderate", json={"content_id": "e2e-fw", "uploader_id": "u", "text": "ＦＵＣＫ ＹＯＵ"}
    )
    assert r.json()["decision"] == "block"

    original = photo("chelsea")
    assert admin.post("/v1/banks", json={"name": "e2e-block"}).status_code == 201
    added = admin.post(
        "/v1/banks/e2e-block/entries", json={"data_b64": base64.b64encode(jpeg(original)).decode()}
    )
    assert added.status_code == 201, added.text
    r = svc.post(
        "/v1/moderate",
        json={
            "content_id": "e2e-img",
            "uploader_id": "u",
            "media": [
                {"kind": "image", "data_b64": base64.b64encode(near_copy(original)).decode()}
            ],
        },
    )
    assert r.status_code == 200, r.text
    verdict = r.json()
    assert verdict["decision"] == "block"
    assert verdict["matches"][0]["bank"] == "e2e-block"
    assert verdict["matches"][0]["entry_id"] == added.json()["entry_id"]
    assert verdict["matches"][0]["distance"] <= 31

    assert svc.post("/v1/banks", json={"name": "nope"}).status_code == 403
    assert httpx.post(base + "/v1/moderate", json={}).status_code == 401


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(x) for x in (task / "children").read_text().split()]
    return found


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc")
def test_killed_serve_leaves_no_orphans(tmp_path: Path) -> None:
    import signal
    import time

    env = {k: v for k, v in os.environ.items() if not k.startswith("MODERATION_")}
    env["MODERATION_VAR_DIR"] = str(tmp_path)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moderation", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=tmp_path,
    )
    wait_http(f"http://127.0.0.1:{port}/healthz", timeout=60)
    children = _children(proc.pid)
    assert len(children) == 2  # the embedded Redis and the worker
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 15
    while any(_alive(c) for c in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [c for c in children if _alive(c)], "children outlived a killed serve"
