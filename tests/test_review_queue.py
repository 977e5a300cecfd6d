"""Review queues: the priority formula and lease logic (pure), and leases under concurrency
against the real database (SQLite, or PostgreSQL with MODERATION_TEST_DATABASE_URL)."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from moderation import review_queue
from moderation.domain import Match, Reason, Verdict
from moderation.settings import ReviewSettings
from moderation.storage.db import session_scope
from moderation.storage.tables import ReviewItemRow
from tests.review_helpers import queued_item

W = ReviewSettings()


# --- pure logic ---------------------------------------------------------------------------


def test_priority_grows_with_severity_reach_and_age() -> None:
    base = review_queue.priority(0.5, 100, 1.0, W)
    assert review_queue.priority(0.9, 100, 1.0, W) > base
    assert review_queue.priority(0.5, 1_000_000, 1.0, W) > base
    assert review_queue.priority(0.5, 100, 5.0, W) > base
    # The formula is the configured one.
    w = ReviewSettings(severity_weight=2, reach_weight=3, age_weight_per_hour=4)
    assert review_queue.priority(0.5, 99, 2.0, w) == pytest.approx(2 * 0.5 + 3 * 2 + 4 * 2)


def test_rank_orders_like_priority_at_any_moment() -> None:
    t0 = datetime(2026, 11, 1, tzinfo=UTC)
    items = [
        (0.9, 0, t0),
        (0.2, 10_000_000, t0 + timedelta(hours=2)),
        (0.5, 50, t0 - timedelta(hours=30)),
        (0.1, 0, t0 + timedelta(hours=5)),
    ]
    by_rank = sorted(items, key=lambda x: -review_queue.rank(x[0], x[1], x[2], W))
    for now in (t0 + timedelta(hours=6), t0 + timedelta(days=3)):
        by_priority = sorted(
            items,
            key=lambda x: (
                -review_queue.priority(x[0], x[1], (now - x[2]).total_seconds() / 3600, W)
            ),
        )
        assert by_rank == by_priority


def test_an_old_low_item_overtakes_a_fresh_severe_one() -> None:
    now = datetime(2026, 11, 22, tzinfo=UTC)
    fresh = review_queue.rank(0.9, 0, now, W)
    old = review_queue.rank(0.1, 0, now - timedelta(hours=24), W)
    assert old > fresh  # 8 severity points lost, 12 age points gained


def test_reach_comes_from_the_context() -> None:
    assert review_queue.reach_of({"reach": 1200}) == 1200
    assert review_queue.reach_of({"follower_count": 50.7}) == 50
    assert review_queue.reach_of({"reach": "lots", "followers": -3}) == 0
    assert review_queue.reach_of({"reach": True}) == 0
    assert review_queue.reach_of({}) == 0


def test_placement_by_bank_then_by_strongest_category() -> None:
    v = Verdict(
        content_id="c",
        decision="review",
        reasons=[
            Reason(source="text", category="spam", score=0.6, threshold=0.5),
            Reason(source="image", category="nudity", score=0.7, threshold=0.5),
        ],
        policy_version="p",
    )
    assert review_queue.placement(v, W) == review_queue.Placement("category:nudity", 0.7)
    weighted = ReviewSettings(category_severity={"spam": 2.0})
    assert review_queue.placement(v, weighted).queue == "category:spam"
    v.matches = [Match(bank="csam-hashes", entry_id=1, distance=3, action="review")]
    assert review_queue.placement(v, W) == review_queue.Placement("bank:csam-hashes", 0.8)


def test_lease_liveness() -> None:
    now = datetime(2026, 11, 22, tzinfo=UTC)
    assert not review_queue.lease_is_live(None, now)
    assert not review_queue.lease_is_live(now, now)
    assert review_queue.lease_is_live(now + timedelta(seconds=1), now)
    # SQLite hands back naive datetimes; they are UTC.
    assert review_queue.lease_is_live((now + timedelta(seconds=1)).replace(tzinfo=None), now)


def test_queue_names_are_checked() -> None:
    for bad in ("", "a/b", "x" * 161, "  ", "q?x"):
        with pytest.raises(Exception, match="queue name"):
            review_queue.check_queue_name(bad)


# --- database: enqueue, take, expire, release, skip ---------------------------------------


def test_review_verdict_enters_its_queue_once(database_url: str, uid: str) -> None:
    row = queued_item(database_url, f"q-once-{uid}", category=f"cat{uid}", context={"reach": 99})
    assert (row.queue, row.status, row.reach) == (f"category:cat{uid}", "open", 99)
    with session_scope(database_url) as s:
        again = review_queue.enqueue(s, row.content_id, row.queue, severity=0.1)
        assert again.id == row.id


def test_take_gives_highest_priority_and_keeps_the_lease(database_url: str, uid: str) -> None:
    q = f"category:prio{uid}"
    low = queued_item(database_url, f"q-low-{uid}", category=f"prio{uid}", score=0.2)
    high = queued_item(
        database_url, f"q-high-{uid}", category=f"prio{uid}", score=0.9, context={"reach": 10**6}
    )
    with session_scope(database_url) as s:
        first = review_queue.take_next(s, 901, {q}, lease_seconds=60)
        assert first is not None and first.id == high.id
    with session_scope(database_url) as s:
        # Asking again returns the item one already holds, not a second one.
        again = review_queue.take_next(s, 901, {q}, lease_seconds=60)
        assert again is not None and again.id == high.id
        other = review_queue.take_next(s, 902, {q}, lease_seconds=60)
        assert other is not None and other.id == low.id
        assert review_queue.take_next(s, 903, {q}, lease_seconds=60) is None


def test_expired_lease_returns_to_the_queue(database_url: str, uid: str) -> None:
    q = f"category:exp{uid}"
    row = queued_item(database_url, f"q-exp-{uid}", category=f"exp{uid}")
    with session_scope(database_url) as s:
        assert review_queue.take_next(s, 911, {q}, lease_seconds=0.3) is not None
    with session_scope(database_url) as s:
        assert review_queue.take_next(s, 912, {q}, lease_seconds=60) is None
    time.sleep(0.4)
    with session_scope(database_url) as s:
        taken = review_queue.take_next(s, 912, {q}, lease_seconds=60)
        assert taken is not None and taken.id == row.id
        assert (taken.lease_key_id, taken.leases, taken.expiries) == (912, 2, 1)


def test_release_and_skip(database_url: str, uid: str) -> None:
    q = f"category:skip{uid}"
    row = queued_item(database_url, f"q-skip-{uid}", category=f"skip{uid}")
    with session_scope(database_url) as s:
        assert review_queue.take_next(s, 921, {q}, lease_seconds=60) is not None
        review_queue.release(s, row.id, 921, {q})
    with session_scope(database_url) as s, pytest.raises(Exception, match="no lease"):
        review_queue.release(s, row.id, 921, {q})
    with session_scope(database_url) as s:
        assert review_queue.take_next(s, 921, {q}, lease_seconds=60) is not None
        review_queue.skip(s, row.id, 921, {q})
    with session_scope(database_url) as s:
        # Skipped: not offered to this reviewer again, but to the next one at once.
        assert review_queue.take_next(s, 921, {q}, lease_seconds=60) is None
        taken = review_queue.take_next(s, 922, {q}, lease_seconds=60)
        assert taken is not None and taken.id == row.id


def test_take_refuses_queues_not_granted(database_url: str, uid: str) -> None:
    queued_item(database_url, f"q-nogrant-{uid}", category=f"ng{uid}")
    with session_scope(database_url) as s:
        assert review_queue.take_next(s, 931, set(), lease_seconds=60) is None
        assert review_queue.take_next(s, 931, {"category:other"}, lease_seconds=60) is None
        with pytest.raises(Exception, match="not granted"):
            review_queue.take_next(s, 931, set(), queues=[f"category:ng{uid}"], lease_seconds=60)


def test_parallel_takers_never_share_an_item(database_url: str, uid: str) -> None:
    """Eight reviewers in threads, each with its own connection, drain one queue: every item
    is leased exactly once."""
    q = f"category:par{uid}"
    ids = {
        queued_item(database_url, f"q-par-{uid}-{i}", category=f"par{uid}", score=i / 40).id
        for i in range(40)
    }
    taken: dict[int, list[int]] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def reviewer(key_id: int) -> None:
        try:
            start.wait()
            while True:
                with session_scope(database_url) as s:
                    row = review_queue.take_next(s, key_id, {q}, lease_seconds=300)
                    if row is None:
                        return
                    taken.setdefault(row.id, []).append(key_id)
                    # Decide it, so the reviewer's next take is a fresh item.
                    row.status = "decided"
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=reviewer, args=(1000 + k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert set(taken) == ids
    assert all(len(holders) == 1 for holders in taken.values()), taken
    with session_scope(database_url) as s:
        from sqlalchemy import select

        leases = s.scalars(select(ReviewItemRow.leases).where(ReviewItemRow.queue == q)).all()
        assert sorted(set(leases)) == [1]


def test_final_verdict_moves_the_item_in_or_out_of_review(database_url: str, uid: str) -> None:
    """The video job's replacement verdict is the one that counts: a pending item's first
    verdict queues nothing; a final `review` queues it; a final `allow` takes it out."""
    from sqlalchemy import select

    from moderation.storage.tables import ItemRow, ReviewMediaRow
    from moderation.verdicts import add_verdict, replace_verdict

    cid = f"q-video-{uid}"
    reason = Reason(source="video", category=f"vid{uid}", score=0.7, threshold=0.5)
    first = Verdict(content_id=cid, decision="review", reasons=[reason], policy_version="p")
    with session_scope(database_url) as s:
        s.add(ItemRow(content_id=cid, uploader_id="u", status="pending", context={}, attempts=1))
        s.flush()
        s.add(ReviewMediaRow(content_id=cid, media_index=0, kind="video", jpeg=b"\xff\xd8"))
        add_verdict(s, first)

    def queued() -> list[tuple[str, str]]:
        with session_scope(database_url) as s:
            rows = s.scalars(select(ReviewItemRow).where(ReviewItemRow.content_id == cid))
            return [(r.queue, r.status) for r in rows]

    assert queued() == []
    with session_scope(database_url) as s:
        replace_verdict(s, first)
    assert queued() == [(f"category:vid{uid}", "open")]
    with session_scope(database_url) as s:
        replace_verdict(s, first)  # redelivered job: still once
    assert queued() == [(f"category:vid{uid}", "open")]
    with session_scope(database_url) as s:
        replace_verdict(s, first.model_copy(update={"decision": "allow"}))
    assert queued() == []
    with session_scope(database_url) as s:
        previews = s.scalars(select(ReviewMediaRow).where(ReviewMediaRow.content_id == cid))
        assert list(previews) == []
