"""What a reviewer sees of a queued item: text, verdict, matches, previews, uploader history."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from moderation import review_decisions, review_media
from moderation.review_queue import utc
from moderation.storage.tables import (
    BankEntryRow,
    BankRow,
    ItemRow,
    ReviewDecisionRow,
    ReviewItemRow,
    VerdictRow,
)
from moderation.verdicts import load_verdict

HISTORY_ITEMS = 20


def _lease(row: ReviewItemRow) -> dict[str, Any] | None:
    if row.lease_key_id is None or row.lease_expires_at is None:
        return None
    return {"key_id": row.lease_key_id, "expires_at": utc(row.lease_expires_at).isoformat()}


def summary(row: ReviewItemRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "content_id": row.content_id,
        "queue": row.queue,
        "status": row.status,
        "severity": row.severity,
        "reach": row.reach,
        "entered_at": utc(row.entered_at).isoformat(),
        "lease": _lease(row),
    }


def _matched_references(session: Session, matches: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each match with its bank entry (the reference's note and source) beside it."""
    out = []
    for m in matches:
        entry = session.get(BankEntryRow, int(m.get("entry_id", 0)))
        bank = session.scalar(select(BankRow).where(BankRow.name == m.get("bank")))
        out.append(
            {
                **m,
                "reference": None
                if entry is None
                else {
                    "value": entry.value,
                    "note": entry.note,
                    "source": entry.source,
                    "bank_kind": bank.kind if bank is not None else None,
                },
            }
        )
    return out


def uploader_history(session: Session, uploader_id: str, exclude: str) -> list[dict[str, Any]]:
    """The uploader's latest other items: machine decision and any reviewer outcome."""
    rows = session.execute(
        select(ItemRow.content_id, ItemRow.received_at, VerdictRow.decision)
        .outerjoin(VerdictRow, VerdictRow.content_id == ItemRow.content_id)
        .where(ItemRow.uploader_id == uploader_id, ItemRow.content_id != exclude)
        .order_by(ItemRow.received_at.desc())
        .limit(HISTORY_ITEMS)
    ).all()
    ids = [r.content_id for r in rows]
    outcomes: dict[str, str] = {}
    if ids:
        for cid, outcome in session.execute(
            select(ReviewDecisionRow.content_id, ReviewDecisionRow.outcome)
            .where(ReviewDecisionRow.content_id.in_(ids))
            .order_by(ReviewDecisionRow.id)
        ):
            outcomes[cid] = outcome
    return [
        {
            "content_id": r.content_id,
            "received_at": utc(r.received_at).isoformat(),
            "decision": r.decision,
            "review_outcome": outcomes.get(r.content_id),
        }
        for r in rows
    ]


def _media(session: Session, content_id: str) -> list[dict[str, Any]]:
    """Each preview, and for a video whether its clip can be played."""
    clips = review_media.clip_indexes(session, content_id)
    out: list[dict[str, Any]] = []
    for m in review_media.previews_of(session, content_id):
        entry: dict[str, Any] = {"media_index": m.media_index, "kind": m.kind}
        if m.kind == "video":
            entry["clip"] = m.media_index in clips
        out.append(entry)
    return out


def detail(session: Session, row: ReviewItemRow) -> dict[str, Any]:
    """Everything needed to decide; strings are raw here and escaped where rendered."""
    item = session.get(ItemRow, row.content_id)
    verdict = load_verdict(session, row.content_id)
    verdict_dict = verdict.model_dump() if verdict is not None else None
    return {
        **summary(row),
        "uploader_id": item.uploader_id if item is not None else None,
        "text": item.text if item is not None else None,
        "context": item.context if item is not None else {},
        "verdict": verdict_dict,
        "matches": _matched_references(session, verdict_dict["matches"] if verdict_dict else []),
        "media": _media(session, row.content_id),
        "uploader_history": uploader_history(
            session, item.uploader_id if item is not None else "", row.content_id
        ),
        "decisions": [
            review_decisions.decision_dict(d)
            for d in review_decisions.decisions_for(session, row.content_id)
        ],
    }
