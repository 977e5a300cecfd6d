"""Fast checks of the fault handling's building blocks, on a real Redis and database."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.fault_harness import RedisServer, free_port


def test_the_api_path_says_unavailable_when_redis_is_down(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from moderation.errors import Unavailable
    from moderation.queue import moderate_via_queue, reset_client
    from moderation.settings import get_settings

    monkeypatch.setenv("MODERATION_REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    get_settings.cache_clear()
    reset_client()
    try:
        started = time.monotonic()
        with pytest.raises(Unavailable, match="retry"):
            moderate_via_queue({"content_id": "x", "uploader_id": "u"}, timeout=5)
        assert time.monotonic() - started < 10  # an answer, not a hang
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
        reset_client()


@pytest.mark.integration  # starts a redis-server
def test_a_drained_item_already_stored_is_not_stored_twice(
    runtime, tmp_path: Path, uid: str, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    """A drainer that died between storing an item and removing it from the spool: the next
    drain finds the stored verdict and only removes the entry."""
    from moderation import fail_mode
    from moderation.domain import Item
    from moderation.service import moderate_and_store
    from moderation.settings import get_settings
    from tests.fault_harness import verdict_counts

    redis = RedisServer(tmp_path / "redis").start()
    try:
        settings = get_settings().model_copy(update={"redis_url": redis.url()})
        monkeypatch.setattr(runtime, "settings", settings)
        item = Item(content_id=f"spooled-{uid}", uploader_id="u")  # no text: no model to load
        first = moderate_and_store(runtime, item)
        entry = {"item": item.model_dump(mode="json"), "mode": "fail_open", "answered": "allow"}
        spool = fail_mode.redis_client(settings)
        spool.hset(fail_mode.SPOOL_KEY, item.content_id, json.dumps(entry))
        assert fail_mode.waiting(runtime) == 1
        report = fail_mode.drain(runtime)
        assert report["stored"] == 1 and report["waiting"] == 0
        assert verdict_counts(runtime.database_url, [item.content_id]) == {item.content_id: 1}
        from moderation.service import get_verdict

        assert get_verdict(runtime, item.content_id) == first
    finally:
        redis.stop()


def test_a_dead_letter_is_kept_once_per_task(runtime, uid: str) -> None:  # type: ignore[no-untyped-def]
    from moderation import dead_letters

    for _ in range(2):
        with runtime.session() as s:
            dead_letters.store(
                s,
                task_id=f"task-{uid}",
                task_name="moderation.moderate",
                payload={"content_id": f"dl-{uid}"},
                error="boom",
                deliveries=6,
            )
    with runtime.session() as s:
        mine = [r for r in dead_letters.list_letters(s) if r.task_id == f"task-{uid}"]
        assert len(mine) == 1 and mine[0].content_id == f"dl-{uid}"
        assert dead_letters.purge(s, [mine[0].id]) == 1
