"""A poison message (its task kills the worker process every time): delivered a bounded
number of times, then dead-lettered with its error, visible to operators (CLI and admin
route), and the items sent after it are still processed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fault_harness import (
    ApiServer,
    RedisServer,
    TaskClient,
    Worker,
    start_workers,
    verdict_counts,
    worker_env,
)

pytestmark = pytest.mark.integration

MAX_DELIVERIES = 3


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "moderation", *args],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )


def test_a_poison_message_is_dead_lettered_and_the_queue_keeps_flowing(
    database_url: str, var_dir: Path, tmp_path: Path, uid: str
) -> None:
    import httpx

    from moderation.keys import create_key
    from moderation.storage import db
    from moderation.storage.tables import ItemRow

    redis = RedisServer(tmp_path / "redis").start()
    env = worker_env(
        redis.url(),
        tmp_path / "var",
        var_dir,
        # FOR TESTS ONLY: the worker process exits (os._exit) on items named poison-*, and
        # the task raises an unexpected exception on items named broken-*.
        MODERATION_FAULT_INJECTION=f"crash_on:poison-{uid},raise_on:broken-{uid}",
        MODERATION_TASK_MAX_DELIVERIES=str(MAX_DELIVERIES),
    )
    # Prefork: the parent sees its child die (WorkerLostError) and, with acks_late and
    # reject_on_worker_lost, puts the task back at once; without a bound, forever.
    worker = Worker("poison", env, tmp_path, "-Q", "moderate", "-P", "prefork", "-c", "2")
    client = TaskClient(redis.url())
    api = ApiServer(env, tmp_path)  # starts now, used at the end
    try:
        start_workers([worker])
        poison_id = f"poison-{uid}"
        poison = client.send({"content_id": poison_id, "uploader_id": "u", "text": "hello"})
        broken_id = f"broken-{uid}"
        broken = client.send({"content_id": broken_id, "uploader_id": "u", "text": "hi"})
        after_ids = [f"after-poison-{uid}-{i}" for i in range(6)]
        after = [
            client.send({"content_id": cid, "uploader_id": "u", "text": f"fine text {i}"})
            for i, cid in enumerate(after_ids)
        ]
        for result in after:
            verdict = client.result(result, timeout=90)
            assert "error" not in verdict, verdict
        assert verdict_counts(database_url, after_ids) == dict.fromkeys(after_ids, 1)

        outcome = client.result(poison, timeout=120)
        assert outcome["error"]["code"] == "dead_lettered", outcome
        assert f"after {MAX_DELIVERIES + 1} deliveries" in outcome["error"]["message"]
        assert "worker process died" in outcome["error"]["message"]
        # Each delivery up to the bound crashed its process; the last was not run.
        assert worker.log().count("fault injection: crashing on item") == MAX_DELIVERIES
        assert verdict_counts(database_url, [poison_id]) == {poison_id: 0}
        with db.session_scope(database_url) as s:
            row = s.get(ItemRow, poison_id)
            assert row is not None and row.status == "failed"
            assert row.error_code == "dead_lettered"

        # A task that raises is retried with backoff, then dead-lettered with its error.
        failed = client.result(broken, timeout=60)
        assert failed["error"]["code"] == "dead_lettered", failed
        assert "InjectedFault: fault injection: raising on item" in failed["error"]["message"]
        assert verdict_counts(database_url, [broken_id]) == {broken_id: 0}

        # Operators see it: the CLI ...
        listed = json.loads(_cli(env, "dead-letters", "list", "--json").stdout)
        mine = [d for d in listed if d["content_id"] == poison_id]
        assert len(mine) == 1
        letter = mine[0]
        assert letter["task_id"] == poison
        assert letter["deliveries"] == MAX_DELIVERIES + 1
        assert letter["payload"]["text"] == "hello"
        assert "worker process died" in letter["error"]
        assert any(d["content_id"] == broken_id and "InjectedFault" in d["error"] for d in listed)

        # ... and the admin route (admin only), which can replay it: the replay is a new
        # task that crashes the same way, so it is dead-lettered again under its new id.
        with db.session_scope(database_url) as s:
            admin_key, _ = create_key(s, "admin", f"ops-{uid}")
            service_key, _ = create_key(s, "service", f"svc-{uid}")
        api.wait_ready()
        http = httpx.Client(base_url=api.base, headers={"Authorization": f"Bearer {admin_key}"})
        denied = http.get(
            "/v1/admin/dead-letters", headers={"Authorization": f"Bearer {service_key}"}
        )
        assert denied.status_code == 403
        shown = http.get("/v1/admin/dead-letters").json()
        assert [d["id"] for d in shown if d["content_id"] == poison_id] == [letter["id"]]
        replay = http.post(f"/v1/admin/dead-letters/{letter['id']}/replay")
        assert replay.status_code == 200, replay.text
        new_task = replay.json()["task_id"]
        again = client.result(new_task, timeout=120)
        assert again["error"]["code"] == "dead_lettered"
        shown = http.get("/v1/admin/dead-letters").json()
        letters = [d for d in shown if d["content_id"] == poison_id]
        assert {d["task_id"] for d in letters} == {poison, new_task}
        assert next(d for d in letters if d["id"] == letter["id"])["replay_count"] == 1
        assert http.delete(f"/v1/admin/dead-letters/{letter['id']}").json() == {"purged": 1}
        purged = json.loads(_cli(env, "dead-letters", "purge", "--all", "--json").stdout)
        assert purged["purged"] >= 1
        assert json.loads(_cli(env, "dead-letters", "list", "--json").stdout) == []
    finally:
        api.stop()
        worker.stop()
        redis.stop()
