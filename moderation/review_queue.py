"""Review queues: which queue an unsure verdict enters, its priority, grants and leases."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, delete, func, or_, select, update
from sqlalchemy.orm import Session

from moderation import review_metrics
from moderation.domain import Verdict
from moderation.errors import Conflict, Forbidden, InvalidInput, NotFound
from moderation.settings import ReviewSettings, get_settings
from moderation.storage.tables import (
    ApiKeyRow,
    ItemRow,
    ReviewClipRow,
    ReviewGrantRow,
    ReviewItemRow,
    ReviewMediaRow,
    ReviewSkipRow,
)

ALL_QUEUES = "*"
# Queues other parts of the service feed (claims, appeals and counter-notices by the
# copyright flow; escalations by reviewers).
FIXED_QUEUES = ("claims", "appeals", "counter-notices", "escalations")
_MACHINE_PREFIXES = ("category:", "bank:")
# The age term grows by the same amount for every item, so ordering by priority minus the
# age term's growth since this epoch orders by priority at any moment without rewriting rows.
_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
_REACH_KEYS = ("reach", "follower_count", "followers")


def utc(at: datetime) -> datetime:
    """SQLite hands datetimes back without a zone; they were stored as UTC."""
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


# --- pure logic ---------------------------------------------------------------------------


def priority(severity: float, reach: int, age_hours: float, weights: ReviewSettings) -> float:
    """The configured formula: severity, log of expected reach, and time waited."""
    return (
        weights.severity_weight * severity
        + weights.reach_weight * math.log10(1 + max(reach, 0))
        + weights.age_weight_per_hour * max(age_hours, 0.0)
    )


def rank(severity: float, reach: int, entered_at: datetime, weights: ReviewSettings) -> float:
    """priority(now) minus a term equal for every item at a given moment (sort key)."""
    hours_since_epoch = (utc(entered_at) - _EPOCH).total_seconds() / 3600
    return priority(severity, reach, 0.0, weights) - weights.age_weight_per_hour * hours_since_epoch


def reach_of(context: dict[str, Any]) -> int:
    """Expected reach from the item's context (``reach`` or a follower count); else 0."""
    for key in _REACH_KEYS:
        value = context.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
            return int(min(value, 10**15))
    return 0


@dataclass(frozen=True)
class Placement:
    """Where a verdict sends its item, and how severe it is."""

    queue: str
    severity: float


def placement(verdict: Verdict, weights: ReviewSettings) -> Placement:
    """Bank matches sent to review go to the bank's queue; else the strongest category's."""
    for m in verdict.matches:
        if m.action == "review":
            return Placement(f"bank:{m.bank}", weights.bank_match_severity)
    best: tuple[float, str] | None = None
    for r in verdict.reasons:
        severity = r.score * weights.category_severity.get(r.category, 1.0)
        if best is None or severity > best[0]:
            best = (severity, r.category)
    if best is None:
        return Placement("category:uncategorised", 0.0)
    return Placement(f"category:{best[1]}"[:160], round(best[0], 6))


def lease_is_live(expires_at: datetime | None, now: datetime) -> bool:
    return expires_at is not None and utc(expires_at) > now


def check_queue_name(queue: str) -> str:
    if not (0 < len(queue) <= 160) or any(c in queue for c in "\x00/\\?#") or queue.isspace():
        raise InvalidInput("a queue name has 1 to 160 characters, no / \\ ? #", field="queue")
    return queue


# --- database edge ------------------------------------------------------------------------


def _now() -> datetime:
    return datetime.now(UTC)


def enqueue(
    session: Session,
    content_id: str,
    queue: str,
    *,
    severity: float,
    reach: int | None = None,
    weights: ReviewSettings | None = None,
) -> ReviewItemRow:
    """Put an item into a queue (idempotent: an item is in a queue once; a decided one reopens)."""
    weights = weights or get_settings().review
    check_queue_name(queue)
    if reach is None:
        item = session.get(ItemRow, content_id)
        reach = reach_of(item.context or {}) if item is not None else 0
    row = session.scalar(
        select(ReviewItemRow).where(
            ReviewItemRow.content_id == content_id, ReviewItemRow.queue == queue
        )
    )
    now = _now()
    if row is None:
        row = ReviewItemRow(
            content_id=content_id, queue=queue, leases=0, expiries=0, entered_at=now
        )
        session.add(row)
    elif row.status == "open":
        row.severity = max(row.severity, severity)
        row.reach = max(row.reach, reach)
        row.rank = rank(row.severity, row.reach, row.entered_at, weights)
        return row
    else:
        row.entered_at, row.decided_at = now, None
        row.lease_key_id = row.lease_expires_at = None
    row.status = "open"
    row.severity, row.reach = severity, reach
    row.rank = rank(severity, reach, now, weights)
    session.flush()
    return row


def queue_verdict(session: Session, verdict: Verdict) -> None:
    """Called wherever a final verdict is stored: a ``review`` verdict enters its queue; any
    other verdict takes the item out of the machine queues it waits in, undecided."""
    weights = get_settings().review
    if verdict.decision != "review":
        session.execute(
            delete(ReviewItemRow).where(
                ReviewItemRow.content_id == verdict.content_id,
                ReviewItemRow.status == "open",
                or_(*(ReviewItemRow.queue.startswith(p) for p in _MACHINE_PREFIXES)),
            )
        )
        # Previews are kept for reviewers only: an item no queue holds keeps none.
        queued = select(ReviewItemRow.id).where(ReviewItemRow.content_id == verdict.content_id)
        if session.scalar(queued.limit(1)) is None:
            for table in (ReviewMediaRow, ReviewClipRow):
                session.execute(delete(table).where(table.content_id == verdict.content_id))
        return
    place = placement(verdict, weights)
    enqueue(session, verdict.content_id, place.queue, severity=place.severity, weights=weights)


# --- grants -------------------------------------------------------------------------------


def granted_queues(session: Session, key_id: int, role: str) -> set[str] | None:
    """The queues a key may work; None means every queue (admins, or a "*" grant)."""
    if role == "admin":
        return None
    if role != "reviewer":
        return set()
    queues = set(
        session.scalars(select(ReviewGrantRow.queue).where(ReviewGrantRow.key_id == key_id))
    )
    return None if ALL_QUEUES in queues else queues


def may_work(granted: set[str] | None, queue: str) -> bool:
    return granted is None or queue in granted


def require_queue(granted: set[str] | None, queue: str) -> None:
    if not may_work(granted, queue):
        raise Forbidden(f"you are not granted the review queue {queue!r}", field="queue")


def grant(session: Session, key_id: int, queue: str) -> None:
    check_queue_name(queue)
    key = session.get(ApiKeyRow, key_id)
    if key is None:
        raise NotFound(f"no API key with id {key_id}", field="key_id")
    if key.role != "reviewer":
        raise InvalidInput(f"key {key_id} has role {key.role!r}, not 'reviewer'", field="key_id")
    exists = session.scalar(
        select(ReviewGrantRow).where(ReviewGrantRow.key_id == key_id, ReviewGrantRow.queue == queue)
    )
    if exists is None:
        session.add(ReviewGrantRow(key_id=key_id, queue=queue))
        session.flush()


def revoke_grant(session: Session, key_id: int, queue: str) -> None:
    result = session.execute(
        delete(ReviewGrantRow).where(ReviewGrantRow.key_id == key_id, ReviewGrantRow.queue == queue)
    )
    if not result.rowcount:  # type: ignore[attr-defined]
        raise NotFound(f"key {key_id} has no grant for queue {queue!r}", field="queue")


def list_grants(session: Session) -> list[dict[str, Any]]:
    rows = session.scalars(
        select(ReviewGrantRow).order_by(ReviewGrantRow.key_id, ReviewGrantRow.queue)
    )
    return [{"key_id": r.key_id, "queue": r.queue} for r in rows]


# --- queues and leases --------------------------------------------------------------------


@dataclass(frozen=True)
class QueueInfo:
    queue: str
    depth: int
    leased: int
    oldest_age_s: float


def queue_infos(session: Session, granted: set[str] | None) -> list[QueueInfo]:
    """Depth, items under lease and oldest waiting age of every open queue one may see."""
    now = _now()
    stmt = (
        select(
            ReviewItemRow.queue,
            func.count(),
            func.sum(case((ReviewItemRow.lease_expires_at > now, 1), else_=0)),
            func.min(ReviewItemRow.entered_at),
        )
        .where(ReviewItemRow.status == "open")
        .group_by(ReviewItemRow.queue)
        .order_by(ReviewItemRow.queue)
    )
    if granted is not None:
        stmt = stmt.where(ReviewItemRow.queue.in_(granted or {""}))
    return [
        QueueInfo(q, int(n), int(leased or 0), (now - utc(oldest)).total_seconds())
        for q, n, leased, oldest in session.execute(stmt)
    ]


def list_open(session: Session, queue: str, *, limit: int = 100) -> list[ReviewItemRow]:
    """A queue's open items, highest priority first (for bulk selection)."""
    return list(
        session.scalars(
            select(ReviewItemRow)
            .where(ReviewItemRow.queue == queue, ReviewItemRow.status == "open")
            .order_by(ReviewItemRow.rank.desc(), ReviewItemRow.id)
            .limit(limit)
        )
    )


def _free(now: datetime) -> Any:
    return or_(ReviewItemRow.lease_expires_at.is_(None), ReviewItemRow.lease_expires_at <= now)


def held_by(session: Session, key_id: int, granted: set[str] | None) -> ReviewItemRow | None:
    """The open item whose live lease this reviewer holds, if any."""
    stmt = select(ReviewItemRow).where(
        ReviewItemRow.lease_key_id == key_id,
        ReviewItemRow.status == "open",
        ReviewItemRow.lease_expires_at > _now(),
    )
    if granted is not None:
        stmt = stmt.where(ReviewItemRow.queue.in_(granted or {""}))
    return session.scalars(stmt.order_by(ReviewItemRow.id).limit(1)).first()


def take_next(
    session: Session,
    key_id: int,
    granted: set[str] | None,
    *,
    queues: list[str] | None = None,
    lease_seconds: float,
) -> ReviewItemRow | None:
    """Lease the highest-priority free item to this reviewer; their live lease comes first.

    The conditional UPDATE (free or expired lease) is what keeps two reviewers off one item:
    on PostgreSQL it re-checks the row after any concurrent writer commits, on SQLite writers
    are serialised. SKIP LOCKED only spares PostgreSQL takers from queueing on one row.
    """
    if queues:
        for q in queues:
            require_queue(granted, q)
        wanted: set[str] | None = set(queues)
    else:
        wanted = granted
    held = held_by(session, key_id, wanted)
    if held is not None:
        return held
    if wanted is not None and not wanted:
        return None
    postgres = session.get_bind().dialect.name == "postgresql"
    skipped = select(ReviewSkipRow.review_item_id).where(ReviewSkipRow.key_id == key_id)
    for _ in range(20):
        now = _now()
        stmt = (
            select(ReviewItemRow.id)
            .where(ReviewItemRow.status == "open", _free(now), ReviewItemRow.id.not_in(skipped))
            .order_by(ReviewItemRow.rank.desc(), ReviewItemRow.id)
            .limit(1 if postgres else 8)
        )
        if wanted is not None:
            stmt = stmt.where(ReviewItemRow.queue.in_(wanted))
        if postgres:
            stmt = stmt.with_for_update(skip_locked=True)
        candidates = list(session.scalars(stmt))
        if not candidates:
            return None
        for item_id in candidates:
            if _claim(session, item_id, key_id, now, lease_seconds):
                row = session.get(ReviewItemRow, item_id, populate_existing=True)
                assert row is not None
                return row
    return None


def _claim(session: Session, item_id: int, key_id: int, now: datetime, seconds: float) -> bool:
    lapsed = and_(ReviewItemRow.lease_key_id.is_not(None), ReviewItemRow.lease_key_id != key_id)
    before = session.scalar(select(ReviewItemRow.lease_key_id).where(ReviewItemRow.id == item_id))
    result = session.execute(
        update(ReviewItemRow)
        .where(ReviewItemRow.id == item_id, ReviewItemRow.status == "open", _free(now))
        .values(
            lease_key_id=key_id,
            lease_expires_at=now + timedelta(seconds=seconds),
            leases=ReviewItemRow.leases + 1,
            expiries=ReviewItemRow.expiries + case((lapsed, 1), else_=0),
        )
        .execution_options(synchronize_session=False)
    )
    claimed = bool(result.rowcount == 1)  # type: ignore[attr-defined]
    if claimed:
        review_metrics.note_take(lease_expired=before is not None and before != key_id)
    return claimed


def get_review_item(session: Session, item_id: int, granted: set[str] | None) -> ReviewItemRow:
    """A queued item one may see; one in a queue not granted is reported as missing."""
    row = session.get(ReviewItemRow, item_id)
    if row is None or not may_work(granted, row.queue):
        raise NotFound(f"no review item {item_id}", field="item_id")
    return row


def release(session: Session, item_id: int, key_id: int, granted: set[str] | None) -> None:
    """Give a lease back so the item is offered again at once."""
    get_review_item(session, item_id, granted)
    result = session.execute(
        update(ReviewItemRow)
        .where(ReviewItemRow.id == item_id, ReviewItemRow.lease_key_id == key_id)
        .values(lease_key_id=None, lease_expires_at=None)
        .execution_options(synchronize_session=False)
    )
    if not result.rowcount:  # type: ignore[attr-defined]
        raise Conflict(f"you hold no lease on review item {item_id}", field="item_id")


def skip(session: Session, item_id: int, key_id: int, granted: set[str] | None) -> None:
    """Release, and never offer this item to this reviewer again."""
    release(session, item_id, key_id, granted)
    session.add(ReviewSkipRow(review_item_id=item_id, key_id=key_id))
    session.flush()


def extend_lease(session: Session, item_id: int, key_id: int, seconds: float) -> datetime:
    now = _now()
    expires = now + timedelta(seconds=seconds)
    result = session.execute(
        update(ReviewItemRow)
        .where(
            ReviewItemRow.id == item_id,
            ReviewItemRow.lease_key_id == key_id,
            ReviewItemRow.lease_expires_at > now,
            ReviewItemRow.status == "open",
        )
        .values(lease_expires_at=expires)
        .execution_options(synchronize_session=False)
    )
    if not result.rowcount:  # type: ignore[attr-defined]
        raise Conflict(f"your lease on review item {item_id} has expired", field="item_id")
    return expires
