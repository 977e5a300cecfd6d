"""The database unavailable for a while: each worker answers per its fail mode, holds the
items in Redis, and stores them once the database is back, each exactly once.

The outage is real. PostgreSQL: the workers reach it through a TCP proxy that the test cuts
(the port closes and every open connection is reset, as in a network partition). SQLite: the
test holds an exclusive write lock (BEGIN EXCLUSIVE) from another connection, so every write
fails with "database is locked" after the busy timeout, as when a long writer or a stuck
process holds the file.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.fault_harness import (
    ApiServer,
    RedisServer,
    TaskClient,
    TcpProxy,
    Worker,
    start_workers,
    verdict_counts,
    wait_until,
    worker_env,
)

pytestmark = pytest.mark.integration

BLOCKED_TEXT = "你这个傻\u200b逼，滚"  # blocked by the builtin keyword lists
SPOOL_KEY = "moderation:db-spool"


class Outage:
    """Cuts the workers off the database and back (see the module docstring)."""

    def __init__(self, database_url: str) -> None:
        from sqlalchemy.engine import make_url

        self.url = make_url(database_url)
        self.proxy: TcpProxy | None = None
        self.lock: sqlite3.Connection | None = None
        if self.url.get_backend_name() == "postgresql":
            self.proxy = TcpProxy(self.url.host or "127.0.0.1", self.url.port or 5432)

    def worker_url(self) -> str:
        if self.proxy is None:
            return self.url.render_as_string(hide_password=False)
        proxied = self.url.set(host="127.0.0.1", port=self.proxy.port)
        return proxied.render_as_string(hide_password=False)

    def begin(self) -> None:
        if self.proxy is not None:
            self.proxy.cut()
            return
        self.lock = sqlite3.connect(self.url.database or "", timeout=5, isolation_level=None)
        self.lock.execute("BEGIN EXCLUSIVE")

    def end(self) -> None:
        if self.proxy is not None:
            self.proxy.restore()
        if self.lock is not None:
            self.lock.execute("ROLLBACK")
            self.lock.close()
            self.lock = None


def _item(cid: str, text: str) -> dict[str, Any]:
    return {"content_id": cid, "uploader_id": "u-outage", "text": text}


def test_fail_modes_hold_items_while_the_database_is_down_and_catch_up(
    database_url: str, var_dir: Path, tmp_path: Path, uid: str
) -> None:
    import redis as redis_py

    from moderation.storage import db
    from moderation.storage.tables import ReviewItemRow

    outage = Outage(database_url)
    redis = RedisServer(tmp_path / "redis").start()
    workers = []
    for mode, redis_db in (("fail_closed", 0), ("fail_open", 1)):
        env = worker_env(
            redis.url(redis_db),
            tmp_path / f"var-{mode}",
            var_dir,
            MODERATION_DATABASE_URL=outage.worker_url(),
            MODERATION_DB_FAIL_MODE=mode,
            MODERATION_DB_SPOOL_DRAIN_INTERVAL_S="1",
        )
        args = ("-Q", "moderate,maintenance", "-P", "threads", "-c", "3", "--beat")
        workers.append(Worker(mode, env, tmp_path, *args))
    # The API in front of the fail_closed worker: a key it saw before the outage still gets
    # in while the database is down, and the worker's fail mode answers.
    api = ApiServer(workers[0].env, tmp_path)
    closed = TaskClient(redis.url(0))
    opened = TaskClient(redis.url(1))

    def moderate(client: TaskClient, item: dict[str, Any]) -> Callable[[], dict[str, Any]]:
        task_id = client.send(item)
        return lambda: client.result(task_id, timeout=60)

    held_closed = f"held-closed-{uid}"
    held_open = f"held-open-{uid}"
    held_open_blocked = f"held-open-blocked-{uid}"
    held_http = f"held-http-{uid}"
    ids = [held_closed, held_open, held_open_blocked, held_http]
    try:
        import httpx

        from moderation.keys import create_key

        with db.session_scope(database_url) as s:
            key, _ = create_key(s, "service", f"outage-{uid}")
            stranger, _ = create_key(s, "service", f"outage-unseen-{uid}")
        start_workers(workers)
        api.wait_ready()
        http = httpx.Client(
            base_url=api.base, headers={"Authorization": f"Bearer {key}"}, timeout=60
        )
        # Both work while the database is up (and hold pooled connections to it).
        for app, name in ((closed, "closed"), (opened, "open")):
            warm = moderate(app, _item(f"before-{name}-{uid}", "hello"))()
            assert warm["decision"] == "allow", warm
        warm_http = http.post("/v1/moderate", json=_item(f"before-http-{uid}", "hello"))
        assert warm_http.status_code == 200 and warm_http.json()["decision"] == "allow"

        outage.begin()
        started = time.monotonic()
        waits = [
            moderate(closed, _item(held_closed, "a holiday photo caption")),
            # The client retries (it got no answer in time, say): still held once.
            moderate(closed, _item(held_closed, "a holiday photo caption")),
            moderate(opened, _item(held_open, "a holiday photo caption")),
            moderate(opened, _item(held_open_blocked, BLOCKED_TEXT)),
        ]
        answers = [wait() for wait in waits]
        through_api = http.post("/v1/moderate", json=_item(held_http, "a holiday photo"))
        assert through_api.status_code == 200, through_api.text
        assert through_api.json()["decision"] == "review", through_api.json()
        if outage.proxy is not None:
            # A key the API never saw cannot be checked while the database is away.
            # (SQLite's lock leaves reads possible, so there the key is simply checked.)
            unseen = http.post(
                "/v1/moderate",
                json=_item(f"unseen-{uid}", "hello"),
                headers={"Authorization": f"Bearer {stranger}"},
            )
            assert unseen.status_code == 503, unseen.text
        for answer in answers[:2]:
            assert answer["content_id"] == held_closed
            assert answer["decision"] == "review", answer
            assert answer["reasons"][0]["source"] == "fail_mode"
        for answer in answers[2:]:
            assert answer["decision"] == "allow", answer
            assert answer["reasons"][0]["detail"].startswith("fail_open")
        # Held in Redis, once each, and nothing in the database yet; a drain tick during the
        # outage (every second) keeps them there.
        time.sleep(2.5)
        spool_closed = redis_py.Redis.from_url(redis.url(0))
        spool_open = redis_py.Redis.from_url(redis.url(1))
        assert sorted(spool_closed.hkeys(SPOOL_KEY)) == sorted(
            [held_closed.encode(), held_http.encode()]
        )
        assert sorted(spool_open.hkeys(SPOOL_KEY)) == sorted(
            [held_open.encode(), held_open_blocked.encode()]
        )
        assert verdict_counts(database_url, ids) == dict.fromkeys(ids, 0)
        outage.end()
        down_for = time.monotonic() - started

        def caught_up() -> bool:
            return set(verdict_counts(database_url, ids).values()) == {1}

        wait_until(caught_up, 60, "the held items to be stored", interval=0.25)
        assert spool_closed.hlen(SPOOL_KEY) == 0 and spool_open.hlen(SPOOL_KEY) == 0
        assert verdict_counts(database_url, ids) == dict.fromkeys(ids, 1)
        with db.session_scope(database_url) as s:
            from moderation.verdicts import load_verdict

            stored = {cid: load_verdict(s, cid) for cid in ids}
            queued = s.query(ReviewItemRow).filter(ReviewItemRow.content_id == held_closed).all()
        # fail_closed: a review verdict (the held reason kept) and an entry in a review queue.
        for cid in (held_closed, held_http):
            v = stored[cid]
            assert v is not None and v.decision == "review"
            assert any(r.source == "fail_mode" for r in v.reasons)
        assert len(queued) == 1 and queued[0].status == "open"
        # fail_open: the re-check decides; the blocked text is blocked after all.
        assert stored[held_open] is not None and stored[held_open].decision == "allow"
        blocked = stored[held_open_blocked]
        assert blocked is not None and blocked.decision == "block"
        assert down_for < 60
    finally:
        api.stop()
        for w in workers:
            w.stop()
        redis.stop()
        outage.end()
