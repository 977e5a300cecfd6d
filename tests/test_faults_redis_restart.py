"""Redis killed and restarted under load: workers, the API and Celery clients reconnect, and
every item whose send was accepted ends with exactly one stored verdict.

The client contract tested here: an error (an exception from send_task, a 503 from the API)
means "not accepted, send it again"; sending again is safe, as items are idempotent by
content_id. Redis persists every write (AOF, appendfsync always), as production Redis must.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from tests.fault_harness import (
    ApiServer,
    RedisServer,
    TaskClient,
    Worker,
    start_workers,
    verdict_counts,
    wait_until,
    worker_env,
)

pytestmark = pytest.mark.integration

CELERY_ITEMS = 60
HTTP_ITEMS = 30
# Longer than Celery's result consumer keeps reconnecting before it gives up on a call.
OUTAGE_S = 6.0


class Sender:
    """Sends a stream of items, retrying each until it is accepted; counts the errors."""

    def __init__(self) -> None:
        self.accepted: list[str] = []
        self.errors = 0
        self.thread: threading.Thread | None = None

    def run(self, ids: list[str], send_one: object, pause: float) -> None:
        def loop() -> None:
            for cid in ids:
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    try:
                        send_one(cid)  # type: ignore[operator]
                    except Exception:
                        self.errors += 1
                        time.sleep(0.2)
                        continue
                    self.accepted.append(cid)
                    break
                time.sleep(pause)

        self.thread = threading.Thread(target=loop, daemon=True)
        self.thread.start()


def test_nothing_accepted_is_lost_when_redis_restarts_under_load(
    database_url: str, var_dir: Path, tmp_path: Path, uid: str
) -> None:
    import httpx

    from moderation.keys import create_key
    from moderation.storage import db

    redis = RedisServer(tmp_path / "redis").start()
    env = worker_env(
        redis.url(),
        tmp_path / "var",
        var_dir,
        MODERATION_BROKER_VISIBILITY_TIMEOUT_S="4",
        MODERATION_API_RESULT_TIMEOUT_S="5",
    )
    workers = [Worker(n, env, tmp_path, "-Q", "moderate", "-P", "solo") for n in ("r1", "r2")]
    api = ApiServer(env, tmp_path)
    base = api.base
    try:
        with db.session_scope(database_url) as s:
            key, _ = create_key(s, "service", f"restart-{uid}")
        start_workers(workers)
        api.wait_ready()
        client = TaskClient(redis.url())
        http = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"})

        statuses: list[int] = []

        def send_task(cid: str) -> None:
            item = {"content_id": cid, "uploader_id": "u", "text": f"item {cid}"}
            client.send(item)

        def post(cid: str) -> None:
            item = {"content_id": cid, "uploader_id": "u", "text": f"item {cid}"}
            r = http.post("/v1/moderate", json=item, timeout=20)
            if r.status_code != 200:
                statuses.append(r.status_code)
            r.raise_for_status()  # 5xx: not accepted, send again
            assert r.json()["content_id"] == cid

        by_task, by_http = Sender(), Sender()
        by_task.run([f"rr-task-{uid}-{i}" for i in range(CELERY_ITEMS)], send_task, 0.08)
        by_http.run([f"rr-http-{uid}-{i}" for i in range(HTTP_ITEMS)], post, 0.1)
        wait_until(lambda: len(by_task.accepted) >= CELERY_ITEMS // 4, 30, "the first sends")
        before = (len(by_task.accepted), len(by_http.accepted))
        redis.kill()
        time.sleep(OUTAGE_S)
        redis.start()
        for sender in (by_task, by_http):
            assert sender.thread is not None
            sender.thread.join(120)
            assert not sender.thread.is_alive(), "a sender never got its items accepted"
        assert by_task.errors > 0, "no send met the outage: the test proved nothing"
        assert by_http.errors > 0, "no request met the outage: the test proved nothing"
        # An outage is answered 503 unavailable (retry), never as an internal error.
        assert set(statuses) <= {503}, statuses
        assert before[0] < CELERY_ITEMS and before[1] < HTTP_ITEMS

        accepted = by_task.accepted + by_http.accepted
        assert len(accepted) == CELERY_ITEMS + HTTP_ITEMS

        def all_stored() -> bool:
            return all(n == 1 for n in verdict_counts(database_url, accepted).values())

        wait_until(all_stored, 60, "a verdict for every accepted item", interval=0.5)
        counts = verdict_counts(database_url, accepted)
        assert set(counts.values()) == {1}, {k: v for k, v in counts.items() if v != 1}
    finally:
        api.stop()
        for w in workers:
            w.stop()
        redis.stop()
