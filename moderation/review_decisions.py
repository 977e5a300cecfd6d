"""Reviewer decisions: validate actions, record them with a statement of reasons, feed banks."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import case, func, or_, select, update
from sqlalchemy.orm import Session

from moderation import audit, banks, review_metrics, review_queue
from moderation.errors import Conflict, InvalidInput
from moderation.keys import Principal
from moderation.storage.tables import ItemHashRow, ReviewDecisionRow, ReviewItemRow
from moderation.text_matching import TEXT_MEDIA_INDEX
from moderation.verdicts import load_verdict

ActionType = Literal["approve", "remove", "age_restrict", "label", "escalate"]
# The decisive action of a decision (its outcome) is the first of these it contains.
_OUTCOME_ORDER: tuple[ActionType, ...] = ("remove", "age_restrict", "approve", "escalate", "label")


class ReviewAction(BaseModel):
    """One action: ``bank`` (remove: a bank to add the item's hashes to; approve: an allow
    list), ``label`` (label), ``queue`` (escalate; default "escalations")."""

    model_config = ConfigDict(extra="forbid")

    type: ActionType
    bank: str | None = Field(default=None, max_length=128)
    label: str | None = Field(default=None, min_length=1, max_length=64)
    queue: str | None = Field(default=None, min_length=1, max_length=160)

    @model_validator(mode="after")
    def _fields_fit_the_type(self) -> ReviewAction:
        if self.bank is not None and self.type not in ("remove", "approve"):
            raise ValueError("'bank' goes with 'remove' (a block bank) or 'approve' (allow list)")
        if (self.label is not None) != (self.type == "label"):
            raise ValueError("a 'label' action needs 'label', and only it takes one")
        if self.queue is not None and self.type != "escalate":
            raise ValueError("'queue' goes with 'escalate' only")
        return self


class DecisionInput(BaseModel):
    """Several actions on one item, with the policy they apply (required) and a note."""

    model_config = ConfigDict(extra="forbid")

    actions: list[ReviewAction] = Field(min_length=1, max_length=8)
    policy: str = Field(min_length=1, max_length=128)
    note: str = Field(default="", max_length=4000)

    @model_validator(mode="after")
    def _actions_agree(self) -> DecisionInput:
        if not self.policy.strip():
            raise ValueError("a policy reason is required")
        types = {a.type for a in self.actions}
        if "approve" in types and types & {"remove", "age_restrict"}:
            raise ValueError("'approve' cannot go with 'remove' or 'age_restrict'")
        if sum(a.type == "escalate" for a in self.actions) > 1:
            raise ValueError("escalate to one queue at a time")
        return self

    @property
    def outcome(self) -> ActionType:
        types = {a.type for a in self.actions}
        return next(t for t in _OUTCOME_ORDER if t in types)


@dataclass(frozen=True)
class DecisionResult:
    id: int
    review_item_id: int
    content_id: str
    outcome: str
    banked: dict[str, int]
    escalated_to: str | None

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def statement_of_reasons(
    decision: DecisionInput, automated_reasons: list[dict[str, Any]], queue: str
) -> dict[str, Any]:
    """What the uploader is told: the restriction, the ground, the facts, automation used
    (the DSA Article 17 headings), and how to appeal."""
    restrictions = [a.type for a in decision.actions if a.type not in ("approve", "escalate")]
    return {
        "decision": decision.outcome,
        "restrictions": restrictions,
        "labels": [a.label for a in decision.actions if a.label],
        "ground": decision.policy,
        "facts": decision.note,
        "automated_detection": bool(automated_reasons),
        "automated_signals": [
            {"category": r.get("category"), "score": r.get("score")} for r in automated_reasons
        ],
        "automated_decision": False,
        "queue": queue,
        "redress": "appeal through the platform's appeal route (review queue 'appeals')",
    }


def _hash_values(session: Session, content_id: str, bank: Any) -> list[banks.EntryInput]:
    signal = banks.SIGNAL_FOR_KIND[bank.kind]
    if bank.kind == "video":
        raise InvalidInput("review decisions add to image and text banks only", field="bank")
    stmt = select(ItemHashRow).where(
        ItemHashRow.content_id == content_id, ItemHashRow.signal_type == signal
    )
    if signal == "pdq":
        stmt = stmt.where(ItemHashRow.at_ms.is_(None), ItemHashRow.media_index != TEXT_MEDIA_INDEX)
    rows = list(session.scalars(stmt.order_by(ItemHashRow.id)))
    if not rows:
        raise InvalidInput(
            f"item {content_id!r} has no {signal} hash for the {bank.kind} bank {bank.name!r}",
            field="bank",
        )
    return [
        banks.EntryInput(r.value, r.quality, note="review decision", source=f"review:{content_id}")
        for r in rows
    ]


def _feed_bank(session: Session, action: ReviewAction, content_id: str) -> tuple[str, int] | None:
    if action.bank is None:
        return None
    bank = banks.get_bank_row(session, action.bank)
    if action.type == "approve" and bank.action != "allow":
        raise InvalidInput(f"bank {bank.name!r} is not an allow list", field="bank")
    if action.type == "remove" and bank.action == "allow":
        raise InvalidInput(f"bank {bank.name!r} is an allow list", field="bank")
    ids = banks.add_entries(session, bank, _hash_values(session, content_id, bank))
    return bank.name, len(ids)


def decide(
    session: Session,
    principal: Principal,
    granted: set[str] | None,
    item_id: int,
    decision: DecisionInput,
) -> DecisionResult:
    """Decide one queued item: open, in a granted queue, and not under someone else's lease."""
    row = review_queue.get_review_item(session, item_id, granted)
    now = datetime.now(UTC)
    closed = session.execute(
        update(ReviewItemRow)
        .where(
            ReviewItemRow.id == item_id,
            ReviewItemRow.status == "open",
            or_(
                ReviewItemRow.lease_key_id.is_(None),
                ReviewItemRow.lease_key_id == principal.key_id,
                ReviewItemRow.lease_expires_at <= now,
            ),
        )
        .values(status="decided", decided_at=now, lease_key_id=None, lease_expires_at=None)
        .execution_options(synchronize_session=False)
    )
    if closed.rowcount != 1:  # type: ignore[attr-defined]
        raise Conflict(
            f"review item {item_id} is already decided or leased to another reviewer",
            field="item_id",
        )
    content_id, queue = row.content_id, row.queue
    banked: dict[str, int] = {}
    escalated: str | None = None
    for action in decision.actions:
        fed = _feed_bank(session, action, content_id)
        if fed is not None:
            banked[fed[0]] = banked.get(fed[0], 0) + fed[1]
        if action.type == "escalate":
            escalated = action.queue or "escalations"
            if escalated == queue:
                raise InvalidInput("escalate to another queue than the item's", field="queue")
            review_queue.enqueue(
                session, content_id, escalated, severity=row.severity, reach=row.reach
            )
    previous = session.scalars(
        select(ReviewDecisionRow)
        .where(ReviewDecisionRow.content_id == content_id)
        .order_by(ReviewDecisionRow.id.desc())
        .limit(1)
    ).first()
    verdict = load_verdict(session, content_id)
    automated = [r.model_dump() for r in verdict.reasons] if verdict is not None else []
    record = ReviewDecisionRow(
        review_item_id=item_id,
        content_id=content_id,
        queue=queue,
        reviewer_key_id=principal.key_id,
        reviewer=principal.name,
        outcome=decision.outcome,
        actions=[a.model_dump(exclude_none=True) for a in decision.actions],
        policy=decision.policy,
        note=decision.note,
        statement=statement_of_reasons(decision, automated, queue),
        previous_decision_id=previous.id if previous is not None else None,
        # An escalation passes the item on; it neither agrees nor disagrees.
        agrees=(
            previous.outcome == decision.outcome
            if previous is not None and "escalate" not in (previous.outcome, decision.outcome)
            else None
        ),
        decided_at=now,
    )
    session.add(record)
    session.flush()
    audit.record(
        session,
        principal.name,
        "review.decide",
        "item",
        content_id,
        decision_id=record.id,
        queue=queue,
        outcome=decision.outcome,
        actions=record.actions,
        policy=decision.policy,
        banked=banked,
    )
    review_metrics.note_decision(principal.name, decision.outcome)
    return DecisionResult(record.id, item_id, content_id, decision.outcome, banked, escalated)


def decision_dict(row: ReviewDecisionRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "review_item_id": row.review_item_id,
        "content_id": row.content_id,
        "queue": row.queue,
        "reviewer": row.reviewer,
        "outcome": row.outcome,
        "actions": row.actions,
        "policy": row.policy,
        "note": row.note,
        "statement": row.statement,
        "agrees_with_previous": row.agrees,
        "decided_at": review_queue.utc(row.decided_at).isoformat(),
    }


def decisions_for(session: Session, content_id: str) -> list[ReviewDecisionRow]:
    return list(
        session.scalars(
            select(ReviewDecisionRow)
            .where(ReviewDecisionRow.content_id == content_id)
            .order_by(ReviewDecisionRow.id)
        )
    )


def quality(session: Session) -> list[dict[str, Any]]:
    """Per reviewer: decisions, how often a later reviewer agreed or overturned them, and how
    often they agreed with the reviewer before them."""
    later = ReviewDecisionRow.__table__.alias("later")
    overturned = (
        select(
            ReviewDecisionRow.reviewer.label("reviewer"),
            func.count(later.c.id).label("second_looks"),
            func.sum(case((later.c.agrees.is_(False), 1), else_=0)).label("overturned"),
        )
        .join(later, later.c.previous_decision_id == ReviewDecisionRow.id)
        .where(later.c.agrees.is_not(None))
        .group_by(ReviewDecisionRow.reviewer)
    )
    by_later = {r.reviewer: r for r in session.execute(overturned)}
    own = session.execute(
        select(
            ReviewDecisionRow.reviewer,
            func.count(),
            func.sum(case((ReviewDecisionRow.agrees.is_not(None), 1), else_=0)),
            func.sum(case((ReviewDecisionRow.agrees.is_(True), 1), else_=0)),
        )
        .group_by(ReviewDecisionRow.reviewer)
        .order_by(ReviewDecisionRow.reviewer)
    )
    out = []
    for reviewer, n, compared, agreed in own:
        second = by_later.get(reviewer)
        looks = int(second.second_looks) if second is not None else 0
        overturns = int(second.overturned or 0) if second is not None else 0
        out.append(
            {
                "reviewer": reviewer,
                "decisions": int(n),
                "agreement_rate": (int(agreed or 0) / int(compared)) if compared else None,
                "overturn_rate": (overturns / looks) if looks else None,
                "second_looks": looks,
                "overturned": overturns,
            }
        )
    return out
