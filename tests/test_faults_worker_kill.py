"""A worker SIGKILLed mid-task on the `moderate` queue: another worker processes the item,
and exactly one verdict is stored."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.fault_harness import (
    HoldingMediaServer,
    RedisServer,
    TaskClient,
    Worker,
    start_workers,
    verdict_counts,
    wait_until,
    worker_env,
)
from tests.images import photo, png

pytestmark = pytest.mark.integration


def test_an_item_survives_its_worker_being_killed_mid_task(
    database_url: str, var_dir: Path, tmp_path: Path, uid: str
) -> None:
    redis = RedisServer(tmp_path / "redis").start()
    # The media fetch blocks until released: the first worker is provably mid-task.
    media = HoldingMediaServer(png(photo(size=(96, 96))))
    env = worker_env(
        redis.url(),
        tmp_path / "var",
        var_dir,
        MODERATION_BROKER_VISIBILITY_TIMEOUT_S="2",
        MODERATION_FETCH_ALLOW_PRIVATE="1",
        MODERATION_ALLOWED_URI_SCHEMES='["http"]',
        MODERATION_ALLOWED_HOSTS='["127.0.0.1"]',
    )
    workers = [
        Worker(name, env, tmp_path, "-Q", "moderate", "-P", "solo", "-c", "1")
        for name in ("a", "b")
    ]
    client = TaskClient(redis.url())
    try:
        start_workers(workers)
        cid = f"killed-{uid}"
        item = {
            "content_id": cid,
            "uploader_id": "u-kill",
            "media": [{"kind": "image", "uri": f"{media.base}/{cid}.png"}],
        }
        task_id = client.send(item)
        assert media.first_seen.wait(30), "no worker fetched the media"
        holder = wait_until(
            lambda: next((w for w in workers if w.received(task_id)), None),
            10,
            "the log line of the worker that took the task",
        )
        other = next(w for w in workers if w is not holder)
        holder.kill(signal.SIGKILL)
        media.release()

        verdict = client.result(task_id, timeout=60)
        assert verdict["content_id"] == cid and "error" not in verdict, verdict
        assert other.received(task_id)
        # Fetched twice (the killed worker, then the other), stored once.
        assert media.requests[f"/{cid}.png"] >= 2
        assert verdict_counts(database_url, [cid]) == {cid: 1}
        from moderation.storage import db
        from moderation.storage.tables import ItemRow

        with db.session_scope(database_url) as s:
            row = s.get(ItemRow, cid)
            assert row is not None and row.status == "done" and row.attempts == 1
    finally:
        for w in workers:
            w.stop()
        media.close()
        redis.stop()
