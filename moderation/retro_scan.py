"""Retroactive scan: match a newly registered work against items accepted before it existed.

Runs on the ``maintenance`` queue one batch at a time (``moderation.maintenance.retro_scan``
re-queues itself with the next cursor), reading stored item hashes in id order, so a scan
of millions of items never holds a worker or a transaction for long and a crash resumes at
the batch it was in. Each match becomes a ``detected`` claim on the holder's dashboard.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from moderation.claims import (
    StoredHash,
    compare,
    new_id,
    strong_distance,
    work_hashes,
)
from moderation.settings import Settings
from moderation.storage.tables import ClaimRow, ItemHashRow, ItemRow, VerdictRow, WorkRow, utcnow

# Items whose verdict was block never went online: nothing to claim.
ACCEPTED_DECISIONS = ("allow", "review")


@dataclass
class ScanStep:
    """One batch's outcome: where the next starts (None: done) and the claims it made."""

    work_id: str
    next_after: int | None
    rows: int
    claims: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return {
            "work_id": self.work_id,
            "next_after": self.next_after,
            "rows": self.rows,
            "claims": self.claims,
        }


def scan_batch(
    session: Session, settings: Settings, work_id: str, after_id: int = 0, limit: int | None = None
) -> ScanStep:
    """Match the work against the next ``limit`` stored item hashes after ``after_id``."""
    work = session.get(WorkRow, work_id)
    if work is None or work.status != "active":
        return ScanStep(work_id, None, 0)
    limit = limit or settings.retro_scan_batch
    signal = "simhash" if work.kind == "text" else "pdq"
    rows = list(
        session.execute(
            select(ItemHashRow.id, ItemHashRow.content_id, ItemHashRow.value, ItemHashRow.at_ms)
            .where(ItemHashRow.id > after_id, ItemHashRow.signal_type == signal)
            .order_by(ItemHashRow.id)
            .limit(limit)
        )
    )
    if not rows:
        return ScanStep(work_id, None, 0)
    last_id = rows[-1].id
    if len(rows) == limit:
        # A video's frames may straddle the batch's end: take the rest of its last item.
        rest = list(
            session.execute(
                select(ItemHashRow.id, ItemHashRow.content_id, ItemHashRow.value, ItemHashRow.at_ms)
                .where(
                    ItemHashRow.id > last_id,
                    ItemHashRow.content_id == rows[-1].content_id,
                    ItemHashRow.signal_type == signal,
                )
                .order_by(ItemHashRow.id)
            )
        )
        rows.extend(rest)
        last_id = rows[-1].id
    by_item: dict[str, list[StoredHash]] = defaultdict(list)
    for r in rows:
        by_item[r.content_id].append(StoredHash(signal, r.value, r.at_ms))
    claims = _claim_matches(session, settings, work, by_item)
    return ScanStep(work_id, last_id if len(rows) >= limit else None, len(rows), claims)


def _claim_matches(
    session: Session, settings: Settings, work: WorkRow, by_item: dict[str, list[StoredHash]]
) -> list[str]:
    ids = sorted(by_item)
    accepted = set(
        session.scalars(
            select(ItemRow.content_id)
            .join(VerdictRow, VerdictRow.content_id == ItemRow.content_id)
            .where(
                ItemRow.content_id.in_(ids),
                ItemRow.status == "done",
                VerdictRow.decision.in_(ACCEPTED_DECISIONS),
            )
        )
    )
    known = set(
        session.scalars(
            select(ClaimRow.content_id).where(
                ClaimRow.work_id == work.id, ClaimRow.content_id.in_(ids)
            )
        )
    )
    limit = strong_distance(work.kind, settings)
    mine = work_hashes(work)
    made = []
    for content_id in ids:
        if content_id not in accepted or content_id in known:
            continue
        match = compare(work.kind, mine, by_item[content_id])
        if match is None or (work.kind != "video" and match.distance > limit):
            continue
        claim = ClaimRow(
            id=new_id("clm"),
            owner=work.owner,
            work_id=work.id,
            content_id=content_id,
            origin="scan",
            state="detected",
            notice={},
            verification={},
            match=match.to_dict(),
            received_at=utcnow(),
        )
        session.add(claim)
        made.append(claim.id)
    return made


def scan_all(session: Session, settings: Settings, work_id: str) -> list[str]:
    """Every batch in one go (CLI and tests); the task runs them one per message."""
    after, found = 0, []
    while True:
        step = scan_batch(session, settings, work_id, after)
        found.extend(step.claims)
        if step.next_after is None:
            return found
        after = step.next_after


def run_step(settings: Settings, work_id: str, after_id: int) -> dict[str, object]:
    """Task entry: one batch in its own transaction, then the next batch queued."""
    from moderation.queue import send_retro_scan
    from moderation.storage import db

    with db.session_scope(settings.resolved_database_url) as session:
        step = scan_batch(session, settings, work_id, after_id)
    if step.next_after is not None:
        send_retro_scan(work_id, step.next_after)
    return step.to_dict()
