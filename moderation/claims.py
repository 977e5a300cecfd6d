"""Takedown claims: notice validation, verification, takedown, counter-notice and restore.

A notice (DMCA 512(c)(3), DSA Article 16) is acknowledged at once. It is verified
automatically when the work strongly matches the target *and* the work's provenance leaf
was anchored before the target was uploaded; then the item comes down, the uploader gets a
statement of reasons (DSA Article 17) by webhook and a strike. Anything else waits in the
``claims`` review queue with a deadline. A counter-notice (512(g)) restores the item after
10 to 14 business days unless the claimant reports a court action.

Pure rules come first (tested without servers); the database edge follows. Every function
that acts takes ``now``: the caller's clock, so tests drive the business-day wait.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from moderation import audit, strikes
from moderation.errors import Conflict, Forbidden, InvalidInput, NotFound
from moderation.settings import Settings
from moderation.statements import takedown_statement
from moderation.storage.tables import (
    AnchorBatchRow,
    AnchorLeafRow,
    AppealRow,
    ClaimRow,
    ItemHashRow,
    ItemRow,
    WebhookDeliveryRow,
    WorkRow,
)

Clock = Callable[[], datetime]
M = TypeVar("M", bound=BaseModel)
# A claim in one of these states keeps its item down.
REMOVED_STATES = frozenset({"taken_down", "countered", "court_action"})
# A video claim needs this many upload frames close to the work's frames.
MIN_VIDEO_FRAMES = 3
# Upload frames (1 fps) against reference frames (4 fps): wider than one still image's
# radius, since the nearest reference frame can be 1/8 s away (see moderation.video).
VIDEO_FRAME_DISTANCE = 48


def system_clock() -> datetime:
    return datetime.now(UTC)


def utc(at: datetime) -> datetime:
    """SQLite hands back naive datetimes; they were stored in UTC."""
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


# --- notices --------------------------------------------------------------------------------

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def _email(value: str) -> str:
    # A shape check only: whether the claimant can be reached is shown by reaching them.
    if not _EMAIL.match(value):
        raise ValueError("is not an email address")
    return value


Email = Annotated[str, Field(max_length=320), AfterValidator(_email)]


class Claimant(BaseModel):
    """Who claims: the rights holder or their agent, and how to reach them."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=256)
    email: Email
    address: str = Field(min_length=1, max_length=1000)
    phone: str | None = Field(default=None, max_length=64)
    acting_for: str | None = Field(default=None, max_length=256)


class Notice(BaseModel):
    """A takedown notice: every field DMCA 512(c)(3) and DSA Article 16(2) require."""

    model_config = ConfigDict(extra="forbid")

    claimant: Claimant
    work_id: str = Field(min_length=1, max_length=64)
    content_id: str = Field(min_length=1, max_length=256)
    explanation: str = Field(min_length=1, max_length=5000)
    # "I have a good-faith belief that the use is not authorised by the owner, its agent or
    # the law."
    good_faith: Literal[True]
    # "The information is accurate and, under penalty of perjury, I am authorised to act."
    accuracy: Literal[True]
    signature: str = Field(min_length=1, max_length=256)


class CounterNotice(BaseModel):
    """A counter-notice: every field DMCA 512(g)(3) requires."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=256)
    address: str = Field(min_length=1, max_length=1000)
    email: Email
    phone: str | None = Field(default=None, max_length=64)
    explanation: str = Field(min_length=1, max_length=5000)
    # "Under penalty of perjury, I believe in good faith the item was removed by mistake or
    # misidentification."
    good_faith_mistake: Literal[True]
    # Consent to the jurisdiction of the federal district court and to service of process.
    consent_to_jurisdiction: Literal[True]
    signature: str = Field(min_length=1, max_length=256)


class Appeal(BaseModel):
    """An internal complaint against a moderation decision (DSA Article 20)."""

    model_config = ConfigDict(extra="forbid")

    content_id: str = Field(min_length=1, max_length=256)
    uploader_id: str = Field(min_length=1, max_length=256)
    reason: str = Field(min_length=1, max_length=5000)
    claim_id: str | None = Field(default=None, max_length=64)

    @field_validator("reason")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value


def _location(err: Any) -> str:
    return ".".join(str(p) for p in err.get("loc", ())) or "body"


def parse_model(model: type[M], payload: Any, what: str) -> M:
    """Validate ``payload``; InvalidInput naming every missing and every invalid field."""
    if not isinstance(payload, dict):
        raise InvalidInput(f"the {what} must be a JSON object")
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        errors = exc.errors()
    missing = [_location(e) for e in errors if e.get("type") == "missing"]
    invalid = [
        {"field": _location(e), "message": _explain(e)}
        for e in errors
        if e.get("type") != "missing"
    ]
    parts = []
    if missing:
        parts.append("missing required fields: " + ", ".join(missing))
    parts.extend(f"{i['field']}: {i['message']}" for i in invalid)
    first = missing[0] if missing else invalid[0]["field"]
    raise InvalidInput(
        f"invalid {what}: " + "; ".join(parts), field=first, missing=missing, invalid=invalid
    )


def _explain(err: Any) -> str:
    if err.get("type") == "literal_error" and err.get("ctx", {}).get("expected") == "True":
        return "must be true (the statement is required)"
    if err.get("type") == "extra_forbidden":
        return "unknown field"
    return str(err.get("msg", "invalid"))


# --- verification -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Evidence:
    """What the verification rule looks at."""

    distance: int | None  # the closest match between work and target; None: no match
    strong_distance: int
    work_anchored_at: datetime | None  # block time of the work's confirmed batch
    target_received_at: datetime


@dataclass(frozen=True)
class Verification:
    automatic: bool
    strong_match: bool
    precedence: bool
    reasons: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def verify(e: Evidence) -> Verification:
    """Automatic takedown needs a strong perceptual match and provenance precedence."""
    strong = e.distance is not None and e.distance <= e.strong_distance
    precedence = e.work_anchored_at is not None and utc(e.work_anchored_at) < utc(
        e.target_received_at
    )
    reasons = []
    if e.distance is None:
        reasons.append("the target does not match the work")
    elif not strong:
        reasons.append(f"match distance {e.distance} is over the strong limit {e.strong_distance}")
    if e.work_anchored_at is None:
        reasons.append("the work is not anchored yet")
    elif not precedence:
        reasons.append("the work was anchored after the target was uploaded")
    return Verification(strong and precedence, strong, precedence, tuple(reasons))


def hamming_hex(a: str, b: str) -> int:
    return (int(a, 16) ^ int(b, 16)).bit_count()


@dataclass(frozen=True)
class StoredHash:
    signal: str
    value: str
    at_ms: int | None = None


@dataclass(frozen=True)
class MatchResult:
    distance: int
    # Video: where the target plays the work (seconds), from the matched frames.
    segment: dict[str, float] | None = None
    frames: int = 0

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"distance": self.distance}
        if self.segment is not None:
            out["segment"] = self.segment
            out["frames"] = self.frames
        return out


def compare(
    kind: str, work: Sequence[StoredHash], target: Sequence[StoredHash]
) -> MatchResult | None:
    """The closest match of the work's hashes in the target's, or None when the signals
    never meet (a video needs several close frames: one look-alike frame is no match)."""
    if kind == "video":
        return _compare_video(work, target)
    signal = "simhash" if kind == "text" else "pdq"
    mine = [h.value for h in work if h.signal == signal]
    theirs = [h.value for h in target if h.signal == signal]
    if not mine or not theirs:
        return None
    return MatchResult(min(hamming_hex(a, b) for a in mine for b in theirs))


def _compare_video(work: Sequence[StoredHash], target: Sequence[StoredHash]) -> MatchResult | None:
    refs = [h for h in work if h.signal == "pdq" and h.at_ms is not None]
    frames = [h for h in target if h.signal == "pdq" and h.at_ms is not None]
    close: list[tuple[int, int, int]] = []  # (distance, query ms, reference ms)
    for f in frames:
        best = min(((hamming_hex(f.value, r.value), r.at_ms or 0) for r in refs), default=None)
        if best is not None and best[0] <= VIDEO_FRAME_DISTANCE:
            close.append((best[0], f.at_ms or 0, best[1]))
    if len(close) < MIN_VIDEO_FRAMES:
        return None
    distances = sorted(d for d, _, _ in close)
    segment = {
        "query_start": min(q for _, q, _ in close) / 1000,
        "query_end": max(q for _, q, _ in close) / 1000,
        "reference_start": min(r for _, _, r in close) / 1000,
        "reference_end": max(r for _, _, r in close) / 1000,
    }
    return MatchResult(distances[len(distances) // 2], segment, len(close))


# --- deadlines ---------------------------------------------------------------------------------


def add_business_days(start: datetime, days: int) -> datetime:
    """``start`` plus ``days`` working days (Monday to Friday), at the same time of day.

    Plain weekday arithmetic, no holiday calendar: the claimant's and the uploader's
    jurisdictions differ, and 512(g) gives a 10-14 day window, so the configured wait (10
    by default) absorbs a holiday while staying inside the window.
    """
    if days < 0:
        raise ValueError("days must be >= 0")
    at = start
    left = days
    while left:
        at += timedelta(days=1)
        if at.weekday() < 5:
            left -= 1
    return at


def review_deadline(received: datetime, hours: float) -> datetime:
    return received + timedelta(hours=hours)


# --- database edge ------------------------------------------------------------------------------


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def item_hashes(session: Session, content_id: str) -> list[StoredHash]:
    rows = session.execute(
        select(ItemHashRow.signal_type, ItemHashRow.value, ItemHashRow.at_ms).where(
            ItemHashRow.content_id == content_id
        )
    )
    return [StoredHash(s, v, a) for s, v, a in rows]


def work_hashes(work: WorkRow) -> list[StoredHash]:
    return [StoredHash(h["signal"], h["value"], h.get("at_ms")) for h in work.hashes or []]


def anchored_at(session: Session, owner: str, sha256: str) -> datetime | None:
    """When the owner first proved to hold this content: the earliest block time of a
    confirmed batch holding a leaf of theirs with this SHA-256 (the work's own leaf, or the
    same file anchored before it was registered as a work)."""
    at = session.scalar(
        select(func.min(AnchorBatchRow.anchored_at))
        .join(AnchorLeafRow, AnchorLeafRow.batch_id == AnchorBatchRow.id)
        .where(
            AnchorLeafRow.owner == owner,
            AnchorLeafRow.sha256 == sha256.lower(),
            AnchorBatchRow.status == "confirmed",
        )
    )
    return utc(at) if at is not None else None


def strong_distance(kind: str, settings: Settings) -> int:
    if kind == "text":
        return settings.claim_strong_simhash_distance
    if kind == "video":
        # A time-aligned segment has passed the alignment's chance test at the video bank's
        # per-frame radius; frame-only evidence is held to VIDEO_FRAME_DISTANCE in compare.
        from moderation.banks import DEFAULT_THRESHOLD

        return DEFAULT_THRESHOLD["video"]
    return settings.claim_strong_pdq_distance


def aligned_match(session: Session, work_id: str, content_id: str) -> MatchResult | None:
    """The time-aligned segment the upload-time match found (videos), if there was one."""
    row = session.scalar(
        select(ClaimRow).where(
            ClaimRow.work_id == work_id,
            ClaimRow.content_id == content_id,
            ClaimRow.origin == "upload",
        )
    )
    if row is None or not (row.match or {}).get("segments"):
        return None
    segments = row.match["segments"]
    keys = ("query_start", "query_end", "reference_start", "reference_end")
    best = max(segments, key=lambda seg: seg.get("score", 0.0))
    return MatchResult(int(row.match["distance"]), {k: float(best[k]) for k in keys})


@dataclass
class Outbox:
    """Webhook deliveries recorded in the transaction; send them once it commits."""

    delivery_ids: list[int]

    def send(self) -> None:
        if not self.delivery_ids:
            return
        from moderation.queue import send_webhook

        for delivery_id in self.delivery_ids:
            send_webhook(delivery_id)


def record_event(
    session: Session,
    settings: Settings,
    outbox: Outbox,
    event: str,
    content_id: str,
    data: dict[str, Any],
) -> None:
    """A webhook event in the same transaction as the change it reports (never one without
    the other); delivered by ``moderation.maintenance.deliver_webhook`` after commit."""
    if not settings.webhook_url:
        return
    row = WebhookDeliveryRow(
        event=event, content_id=content_id, status="pending", payload=data, attempts=0
    )
    session.add(row)
    session.flush()
    outbox.delivery_ids.append(row.id)


def check_queue_grant(session: Session, key_id: int, role: str, queue: str) -> None:
    """A reviewer works only the review queues granted to it (admins: all of them)."""
    if role != "reviewer":
        return
    from moderation import review_queue

    review_queue.require_queue(review_queue.granted_queues(session, key_id, role), queue)


def enqueue_for_review(session: Session, content_id: str, queue: str, severity: float) -> None:
    """Put the target item in a named review queue (``claims``, ``appeals``) of the console."""
    from moderation import review_queue

    review_queue.enqueue(session, content_id, queue, severity=severity)


def file_notice(
    session: Session,
    settings: Settings,
    owner: str,
    notice: Notice,
    *,
    clock: Clock,
    outbox: Outbox,
) -> ClaimRow:
    """Acknowledge a notice, verify it, and take the item down or queue it for review.

    The clock is read at receipt and again at takedown: the gap is the time to takedown."""
    now = clock()
    work = session.get(WorkRow, notice.work_id)
    if work is None or work.owner != owner:
        raise NotFound(f"no work {notice.work_id!r}", field="work_id")
    item = session.get(ItemRow, notice.content_id)
    if item is None:
        raise NotFound(f"no item {notice.content_id!r}", field="content_id")
    match = (
        aligned_match(session, work.id, item.content_id) if work.kind == "video" else None
    ) or (compare(work.kind, work_hashes(work), item_hashes(session, item.content_id)))
    evidence = Evidence(
        distance=match.distance if match is not None else None,
        strong_distance=strong_distance(work.kind, settings),
        work_anchored_at=anchored_at(session, work.owner, work.sha256),
        target_received_at=utc(item.received_at),
    )
    result = verify(evidence)
    claim = ClaimRow(
        id=new_id("clm"),
        owner=owner,
        work_id=work.id,
        content_id=item.content_id,
        origin="notice",
        state="received",
        notice=notice.model_dump(mode="json"),
        verification={
            **result.to_dict(),
            "work_anchored_at": evidence.work_anchored_at.isoformat()
            if evidence.work_anchored_at
            else None,
            "target_received_at": evidence.target_received_at.isoformat(),
        },
        match=match.to_dict() if match is not None else {},
        received_at=now,
    )
    session.add(claim)
    session.flush()
    audit.record(session, owner, "claim.file", "claim", claim.id, content_id=item.content_id)
    if result.automatic:
        take_down(
            session, settings, claim, now=clock(), outbox=outbox, automated=True, actor="auto"
        )
    else:
        claim.state = "needs_review"
        claim.deadline = review_deadline(now, settings.claim_review_hours)
        enqueue_for_review(session, item.content_id, "claims", severity=0.5)
    return claim


def take_down(
    session: Session,
    settings: Settings,
    claim: ClaimRow,
    *,
    now: datetime,
    outbox: Outbox,
    automated: bool,
    actor: str,
) -> None:
    """Remove the item, strike the uploader and send them the statement of reasons."""
    work = session.get(WorkRow, claim.work_id)
    item = session.get(ItemRow, claim.content_id)
    assert work is not None and item is not None
    statement = takedown_statement(
        claim_id=claim.id,
        content_id=claim.content_id,
        work_id=work.id,
        work_title=work.title,
        territories=list(work.territories or []),
        claimant=str(claim.notice.get("claimant", {}).get("name", claim.owner)),
        distance=claim.match.get("distance") if claim.match else None,
        automated=automated,
        at=now,
    )
    claim.state = "taken_down"
    claim.taken_down_at = now
    claim.deadline = None
    claim.statement = statement.model_dump(mode="json")
    strikes.add_strike(session, item.uploader_id, claim.id, now, settings.strike_expiry_days)
    audit.record(session, actor, "claim.takedown", "claim", claim.id, automated=automated)
    record_event(
        session,
        settings,
        outbox,
        "item.taken_down",
        claim.content_id,
        {
            "content_id": claim.content_id,
            "uploader_id": item.uploader_id,
            "claim_id": claim.id,
            "statement_of_reasons": claim.statement,
        },
    )


def get_claim(session: Session, claim_id: str, owner: str | None) -> ClaimRow:
    """The claim, if it is ``owner``'s (None: anyone's, for staff); NotFound otherwise."""
    row = session.get(ClaimRow, claim_id)
    if row is None or (owner is not None and row.owner != owner):
        raise NotFound(f"no claim {claim_id!r}", field="claim_id")
    return row


def list_claims(
    session: Session, owner: str | None, *, state: str | None = None, limit: int = 100
) -> list[ClaimRow]:
    query = select(ClaimRow).order_by(ClaimRow.received_at.desc()).limit(limit)
    if owner is not None:
        query = query.where(ClaimRow.owner == owner)
    if state is not None:
        query = query.where(ClaimRow.state == state)
    return list(session.scalars(query))


def decide_claim(
    session: Session,
    settings: Settings,
    claim: ClaimRow,
    decision: Literal["takedown", "reject"],
    reason: str,
    *,
    actor: str,
    now: datetime,
    outbox: Outbox,
) -> None:
    """A reviewer's decision on a claim waiting in the claims queue."""
    if claim.state != "needs_review":
        raise Conflict(f"claim {claim.id} is {claim.state}, not waiting for review")
    claim.verification = {**claim.verification, "reviewed_by": actor, "review_reason": reason}
    if decision == "takedown":
        take_down(session, settings, claim, now=now, outbox=outbox, automated=False, actor=actor)
    else:
        claim.state = "rejected"
        claim.deadline = None
        audit.record(session, actor, "claim.reject", "claim", claim.id, reason=reason)


def counter_notify(
    session: Session,
    settings: Settings,
    claim: ClaimRow,
    counter: CounterNotice,
    *,
    now: datetime,
    outbox: Outbox,
) -> None:
    """Record the uploader's counter-notice, tell the claimant, and set the restore time."""
    if claim.state != "taken_down":
        raise Conflict(f"claim {claim.id} is {claim.state}: only a takedown can be countered")
    claim.state = "countered"
    claim.counter_notice = counter.model_dump(mode="json")
    claim.countered_at = now
    claim.restore_after = add_business_days(now, settings.counter_notice_restore_business_days)
    audit.record(session, counter.name, "claim.counter_notice", "claim", claim.id)
    record_event(
        session,
        settings,
        outbox,
        "claim.counter_notice",
        claim.content_id,
        {
            "content_id": claim.content_id,
            "claim_id": claim.id,
            "claimant": claim.notice.get("claimant"),
            "counter_notice": claim.counter_notice,
            "restore_after": claim.restore_after.isoformat(),
            "note": "the item is restored then unless the claimant reports a court action "
            f"(POST /v1/claims/{claim.id}/court-action)",
        },
    )


def report_court_action(session: Session, claim: ClaimRow, detail: str, *, now: datetime) -> None:
    """The claimant has sued the uploader: the item stays down."""
    if claim.state != "countered":
        raise Conflict(f"claim {claim.id} is {claim.state}: no counter-notice to answer")
    claim.state = "court_action"
    claim.court_action_at = now
    claim.verification = {**claim.verification, "court_action": detail}
    audit.record(session, claim.owner, "claim.court_action", "claim", claim.id)


def restore(
    session: Session,
    settings: Settings,
    claim: ClaimRow,
    *,
    now: datetime,
    outbox: Outbox,
    why: str,
) -> None:
    claim.state = "restored"
    claim.restored_at = now
    strikes.revoke_strike(session, claim.id, now)
    audit.record(session, "system", "claim.restore", "claim", claim.id, why=why)
    record_event(
        session,
        settings,
        outbox,
        "item.restored",
        claim.content_id,
        {"content_id": claim.content_id, "claim_id": claim.id, "reason": why},
    )


def restore_due(
    session: Session, settings: Settings, *, now: datetime, outbox: Outbox
) -> list[str]:
    """Restore every countered item whose wait is over; returns the claim ids restored."""
    due = session.scalars(
        select(ClaimRow).where(ClaimRow.state == "countered", ClaimRow.restore_after <= now)
    )
    done = []
    for claim in due:
        restore(session, settings, claim, now=now, outbox=outbox, why="counter-notice period over")
        done.append(claim.id)
    return done


def run_restore_due(settings: Settings, *, clock: Clock = system_clock) -> dict[str, Any]:
    """Task and CLI entry: :func:`restore_due` in its own transaction, events sent after."""
    from moderation.storage import db

    outbox = Outbox([])
    with db.session_scope(settings.resolved_database_url) as session:
        restored = restore_due(session, settings, now=clock(), outbox=outbox)
    outbox.send()
    return {"restored": restored}


def item_restriction(session: Session, content_id: str) -> dict[str, Any] | None:
    """The live copyright restriction of an item (the claim keeping it down), if any."""
    claim = session.scalar(
        select(ClaimRow)
        .where(ClaimRow.content_id == content_id, ClaimRow.state.in_(REMOVED_STATES))
        .order_by(ClaimRow.taken_down_at)
        .limit(1)
    )
    if claim is None:
        return None
    return {
        "claim_id": claim.id,
        "state": claim.state,
        "taken_down_at": utc(claim.taken_down_at).isoformat() if claim.taken_down_at else None,
        "restore_after": utc(claim.restore_after).isoformat() if claim.restore_after else None,
        "statement_of_reasons": claim.statement,
    }


def claim_to_dict(row: ClaimRow) -> dict[str, Any]:
    def iso(at: datetime | None) -> str | None:
        return utc(at).isoformat() if at is not None else None

    received = utc(row.received_at)
    took = (
        (utc(row.taken_down_at) - received).total_seconds()
        if row.taken_down_at is not None
        else None
    )
    return {
        "id": row.id,
        "owner": row.owner,
        "work_id": row.work_id,
        "content_id": row.content_id,
        "origin": row.origin,
        "state": row.state,
        "notice": row.notice or None,
        "verification": row.verification or None,
        "match": row.match or None,
        "deadline": iso(row.deadline),
        "received_at": received.isoformat(),
        "taken_down_at": iso(row.taken_down_at),
        "time_to_takedown_s": took,
        "statement_of_reasons": row.statement,
        "counter_notice": row.counter_notice,
        "countered_at": iso(row.countered_at),
        "restore_after": iso(row.restore_after),
        "restored_at": iso(row.restored_at),
        "court_action_at": iso(row.court_action_at),
    }


def takedown_report(session: Session, owner: str | None) -> dict[str, Any]:
    """How fast notices took items down (the platform promises 98 % within 24 hours)."""
    query = select(ClaimRow.received_at, ClaimRow.taken_down_at, ClaimRow.state).where(
        ClaimRow.origin == "notice"
    )
    if owner is not None:
        query = query.where(ClaimRow.owner == owner)
    rows = list(session.execute(query))
    took = sorted(
        (utc(down) - utc(received)).total_seconds()
        for received, down, _ in rows
        if down is not None
    )
    open_count = sum(1 for _, down, state in rows if down is None and state == "needs_review")
    within = sum(1 for t in took if t <= 24 * 3600)
    return {
        "notices": len(rows),
        "taken_down": len(took),
        "waiting_for_review": open_count,
        "time_to_takedown_s": {
            "min": took[0] if took else None,
            "median": took[len(took) // 2] if took else None,
            "max": took[-1] if took else None,
        },
        "within_24h": (within / len(took)) if took else None,
    }


# --- appeals (DSA Article 20) ------------------------------------------------------------------


def file_appeal(session: Session, appeal: Appeal, *, now: datetime) -> AppealRow:
    """An uploader's complaint, queued in ``appeals`` for a reviewer who did not decide it."""
    item = session.get(ItemRow, appeal.content_id)
    if item is None or item.uploader_id != appeal.uploader_id:
        raise NotFound(f"no item {appeal.content_id!r} of that uploader", field="content_id")
    decider: str | None = "automated"
    if appeal.claim_id is not None:
        claim = session.get(ClaimRow, appeal.claim_id)
        if claim is None or claim.content_id != appeal.content_id:
            raise NotFound(f"no claim {appeal.claim_id!r} on that item", field="claim_id")
        decider = claim.verification.get("reviewed_by") or "automated"
    row = AppealRow(
        id=new_id("apl"),
        content_id=appeal.content_id,
        claim_id=appeal.claim_id,
        uploader_id=appeal.uploader_id,
        reason=appeal.reason,
        state="open",
        original_decider=decider,
        created_at=now,
    )
    session.add(row)
    session.flush()
    enqueue_for_review(session, appeal.content_id, "appeals", severity=0.5)
    audit.record(session, appeal.uploader_id, "appeal.file", "appeal", row.id)
    return row


def decide_appeal(
    session: Session,
    settings: Settings,
    appeal_id: str,
    decision: Literal["uphold", "reverse"],
    reason: str,
    *,
    actor: str,
    now: datetime,
    outbox: Outbox,
) -> AppealRow:
    """Decide an appeal; the reviewer of the original decision may not. Reversing a
    takedown restores the item at once."""
    row = session.get(AppealRow, appeal_id)
    if row is None:
        raise NotFound(f"no appeal {appeal_id!r}", field="appeal_id")
    if row.state != "open":
        raise Conflict(f"appeal {appeal_id} is decided already ({row.state})")
    if row.original_decider == actor:
        raise Forbidden("an appeal is decided by someone other than the original decider")
    row.state = "upheld" if decision == "uphold" else "reversed"
    row.decided_by, row.decision_reason, row.decided_at = actor, reason, now
    if decision == "reverse" and row.claim_id is not None:
        claim = session.get(ClaimRow, row.claim_id)
        if claim is not None and claim.state in REMOVED_STATES:
            restore(session, settings, claim, now=now, outbox=outbox, why="appeal reversed")
    audit.record(session, actor, "appeal.decide", "appeal", row.id, decision=decision)
    return row


def appeal_to_dict(row: AppealRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "content_id": row.content_id,
        "claim_id": row.claim_id,
        "uploader_id": row.uploader_id,
        "reason": row.reason,
        "state": row.state,
        "decided_by": row.decided_by,
        "decision_reason": row.decision_reason,
        "created_at": utc(row.created_at).isoformat(),
        "decided_at": utc(row.decided_at).isoformat() if row.decided_at else None,
    }


def list_appeals(session: Session, *, state: str | None = None) -> Iterable[AppealRow]:
    query = select(AppealRow).order_by(AppealRow.created_at)
    if state is not None:
        query = query.where(AppealRow.state == state)
    return session.scalars(query.limit(100))
