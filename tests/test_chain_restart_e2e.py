"""Provenance through `moderation serve` (as `make run` starts it): the worker's beat anchors
a registered work, receipts are served over HTTP, and after a restart of the server both
the receipts and the embedded chain they point to are unchanged and verify."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import moderation_serve

pytestmark = pytest.mark.integration


def run(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, *args],
        env=env,
        capture_output=True,
        text=True,
        cwd=env["MODERATION_VAR_DIR"],
        timeout=180,
    )
    if check and done.returncode:
        raise AssertionError(f"{args} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done


REGISTER = """
import sys
from moderation.provenance import register_leaf
from moderation.settings import get_settings
from moderation.storage import db
with db.session_scope(get_settings().resolved_database_url) as s:
    register_leaf(s, subject_id=sys.argv[1], owner=sys.argv[2], sha256="ef" * 32,
                  perceptual=[("pdq", "12" * 32)])
"""


def test_receipts_survive_a_restart_of_serve(tmp_path: Path) -> None:
    var = tmp_path / "var"
    var.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODERATION_")}
    env.update(
        MODERATION_VAR_DIR=str(var),
        MODERATION_ANCHOR_TICK_S="1",
        MODERATION_ANCHOR_INTERVAL_S="1",
    )
    work = var / "work.txt"
    work.write_text("an original work")
    with moderation_serve(var, env) as base:
        holder = json.loads(
            run(
                env,
                "-m",
                "moderation",
                "keys",
                "create",
                "--role",
                "rights_holder",
                "--name",
                "studio-e2e",
                "--json",
            ).stdout
        )["key"]
        headers = {"Authorization": f"Bearer {holder}"}
        # A work registered the way issue #7 will: the worker's periodic task anchors it.
        run(env, "-c", REGISTER, "work-e2e-1", "studio-e2e")
        deadline = time.monotonic() + 90
        while True:
            resp = httpx.get(f"{base}/v1/receipts/work-e2e-1", headers=headers, timeout=10)
            if resp.status_code == 200 or time.monotonic() > deadline:
                break
            assert resp.status_code == 409, resp.text
            time.sleep(0.5)
        assert resp.status_code == 200, (var / "serve.log").read_text()[-3000:]
        served_before = resp.json()
        # And files anchored by the CLI next to the running service.
        done = run(
            env,
            "-m",
            "moderation",
            "anchor",
            str(work),
            "--owner",
            "studio-e2e",
            "--out",
            str(var / "receipts"),
            "--json",
        )
        file_receipt = Path(json.loads(done.stdout)["receipts"][0]["receipt"])
        file_before = file_receipt.read_text()

    with moderation_serve(var, env) as base:
        after = httpx.get(f"{base}/v1/receipts/work-e2e-1", headers=headers, timeout=10)
        assert after.status_code == 200 and after.json() == served_before
        saved = var / "work-e2e-1.receipt.json"
        saved.write_text(json.dumps(after.json()))
        for path in (saved, file_receipt):
            checked = run(
                env,
                "-m",
                "moderation",
                "verify",
                str(path),
                "--chain",
                "--confirmations",
                "3",
                "--json",
            )
            result: dict[str, Any] = json.loads(checked.stdout)
            assert result["valid"], result
        assert file_receipt.read_text() == file_before
