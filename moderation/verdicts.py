"""Stored verdicts: the one mapping between the Verdict model and its database row."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from moderation.domain import Verdict
from moderation.errors import NotFound
from moderation.review_queue import queue_verdict
from moderation.storage.tables import ItemRow, VerdictRow


def _fields(verdict: Verdict) -> dict[str, Any]:
    return {
        "decision": verdict.decision,
        "categories": verdict.categories,
        "reasons": [r.model_dump() for r in verdict.reasons],
        "matches": [m.model_dump() for m in verdict.matches],
        "policy_version": verdict.policy_version,
        "latency_ms": verdict.latency_ms,
    }


def load_verdict(session: Session, content_id: str) -> Verdict | None:
    """The verdict stored for ``content_id``, if any."""
    row = session.scalar(select(VerdictRow).where(VerdictRow.content_id == content_id))
    if row is None:
        return None
    return Verdict(
        content_id=row.content_id,
        decision=row.decision,  # type: ignore[arg-type]
        categories=row.categories,
        reasons=row.reasons,
        matches=row.matches,
        policy_version=row.policy_version,
        latency_ms=row.latency_ms,
    )


def add_verdict(session: Session, verdict: Verdict) -> None:
    """Store an item's first verdict (a second one for the same id fails on flush)."""
    session.add(VerdictRow(content_id=verdict.content_id, **_fields(verdict)))
    # A video item's first verdict is provisional: it is queued when the final one replaces it.
    # (Only a review verdict needs the queue: a new item waits in none yet.)
    if verdict.decision == "review":
        item = session.get(ItemRow, verdict.content_id)
        if item is None or item.status != "pending":
            queue_verdict(session, verdict)


def replace_verdict(session: Session, verdict: Verdict) -> None:
    """Put a final verdict in place of the item's first one (video items)."""
    row = session.scalar(select(VerdictRow).where(VerdictRow.content_id == verdict.content_id))
    if row is None:
        raise NotFound(f"item {verdict.content_id!r} has no first verdict", field="content_id")
    for name, value in _fields(verdict).items():
        setattr(row, name, value)
    queue_verdict(session, verdict)
