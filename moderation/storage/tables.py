"""SQLAlchemy table definitions; every change here needs an Alembic migration."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# SQLite only autoincrements INTEGER PRIMARY KEY; PostgreSQL gets 64-bit ids.
BigId = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, list[Any]: JSON}


class ItemRow(Base):
    """One upload as received; status says whether a verdict exists or why it failed."""

    __tablename__ = "items"

    content_id: Mapped[str] = mapped_column(String(256), primary_key=True)
    uploader_id: Mapped[str] = mapped_column(String(256), index=True)
    status: Mapped[str] = mapped_column(String(16))  # processing | done | failed
    text: Mapped[str | None] = mapped_column(Text, nullable=True)
    media_count: Mapped[int] = mapped_column(Integer, default=0)
    context: Mapped[dict[str, Any]] = mapped_column(default=dict)
    error_code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )


class VerdictRow(Base):
    __tablename__ = "verdicts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    content_id: Mapped[str] = mapped_column(
        String(256), ForeignKey("items.content_id", ondelete="CASCADE"), unique=True
    )
    decision: Mapped[str] = mapped_column(String(16), index=True)
    categories: Mapped[dict[str, Any]] = mapped_column(default=dict)
    reasons: Mapped[list[Any]] = mapped_column(default=list)
    matches: Mapped[list[Any]] = mapped_column(default=list)
    policy_version: Mapped[str] = mapped_column(String(64))
    latency_ms: Mapped[float] = mapped_column(Float, default=0.0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ItemHashRow(Base):
    """Perceptual hashes of an item's media, kept so decisions can feed banks later."""

    __tablename__ = "item_hashes"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    content_id: Mapped[str] = mapped_column(
        String(256), ForeignKey("items.content_id", ondelete="CASCADE"), index=True
    )
    media_index: Mapped[int] = mapped_column(Integer)
    signal_type: Mapped[str] = mapped_column(String(16))
    value: Mapped[str] = mapped_column(String(128))
    quality: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # A video frame's time in milliseconds (signal "pdq" of a sampled frame); else null.
    at_ms: Mapped[int | None] = mapped_column(Integer, nullable=True)


class VideoJobRow(Base):
    """The frame analysis of an item's videos, run on the ``video`` queue after its first
    verdict; the final verdict replaces the first when it is done."""

    __tablename__ = "video_jobs"

    content_id: Mapped[str] = mapped_column(
        String(256), ForeignKey("items.content_id", ondelete="CASCADE"), primary_key=True
    )
    status: Mapped[str] = mapped_column(String(16))  # queued | running | done | failed
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    # The first pass's signals and bank hits, merged with the frames' into the final verdict.
    base: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # Per video: media index, duration, frames sampled, seconds taken.
    media: Mapped[list[Any]] = mapped_column(default=list)
    error_code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class WebhookDeliveryRow(Base):
    """One event sent (or being retried) to the configured webhook."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    event: Mapped[str] = mapped_column(String(64))
    content_id: Mapped[str] = mapped_column(String(256), index=True)
    status: Mapped[str] = mapped_column(String(16))  # pending | delivered | failed
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    response_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class BankRow(Base):
    __tablename__ = "banks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    kind: Mapped[str] = mapped_column(String(16))  # image | text | video
    action: Mapped[str] = mapped_column(String(16))  # block | review | track | allow
    threshold: Mapped[int] = mapped_column(Integer)
    owner: Mapped[str | None] = mapped_column(String(256), nullable=True)
    description: Mapped[str] = mapped_column(Text, default="")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class BankEntryRow(Base):
    __tablename__ = "bank_entries"
    # AUTOINCREMENT on SQLite: a removed entry's id must never be reused, or a worker
    # replaying the change log could confuse the old hash with the new one.
    __table_args__ = (
        Index("ix_bank_entries_bank_value", "bank_id", "signal_type", "value"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    bank_id: Mapped[int] = mapped_column(ForeignKey("banks.id", ondelete="CASCADE"), index=True)
    signal_type: Mapped[str] = mapped_column(String(16))  # pdq
    value: Mapped[str] = mapped_column(String(128))
    quality: Mapped[int | None] = mapped_column(Integer, nullable=True)
    note: Mapped[str] = mapped_column(Text, default="")
    source: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class BankEntryHashRow(Base):
    """Extra reference hashes of an entry the service hashed from an image (models.image_robust):
    the border-stripped picture and its central window. Matched under the entry's id."""

    __tablename__ = "bank_entry_hashes"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    entry_id: Mapped[int] = mapped_column(
        BigId,
        ForeignKey("bank_entries.id", ondelete="CASCADE"),
        index=True,
    )
    name: Mapped[str] = mapped_column(String(32))
    value: Mapped[str] = mapped_column(String(128))


class ChangeRow(Base):
    """Append-only change log that workers poll to keep their in-memory indexes current."""

    __tablename__ = "changes"
    __table_args__ = ({"sqlite_autoincrement": True},)

    seq: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    topic: Mapped[str] = mapped_column(String(32))  # bank_entry | bank | keyword
    ref_id: Mapped[int] = mapped_column(BigInteger)
    op: Mapped[str] = mapped_column(String(16))  # add | remove | update
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class KeywordTermRow(Base):
    """Custom keyword terms managed through the API, on top of the list files."""

    __tablename__ = "keyword_terms"
    __table_args__ = (UniqueConstraint("category", "term"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    category: Mapped[str] = mapped_column(String(64))
    term: Mapped[str] = mapped_column(String(256))
    score: Mapped[float] = mapped_column(Float, default=1.0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ApiKeyRow(Base):
    """API keys, stored only as SHA-256 digests of the secret."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128))
    role: Mapped[str] = mapped_column(String(32))
    prefix: Mapped[str] = mapped_column(String(16), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # Security (issue #9): an optional end of life, a per-key rate limit overriding the role's
    # default, and the secret replaced by the last rotation, accepted until its grace ends.
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    rate_limit: Mapped[str | None] = mapped_column(String(128), nullable=True)
    previous_prefix: Mapped[str | None] = mapped_column(String(16), nullable=True, index=True)
    previous_key_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    previous_expires_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )
    rotated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class AuditEventRow(Base):
    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(64))
    subject_type: Mapped[str] = mapped_column(String(32))
    subject_id: Mapped[str] = mapped_column(String(256))
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)


class AnchorBatchRow(Base):
    """One Merkle root and the transaction that anchors it: pending (signed, maybe sent),
    included (in a block), confirmed (enough blocks on top). A reorg sends it back to pending
    and the same root (the same signed transaction where possible) is anchored again."""

    __tablename__ = "anchor_batches"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    root: Mapped[str] = mapped_column(String(66), index=True)
    leaf_count: Mapped[int] = mapped_column(Integer)
    # The batch's leaf hashes in tree order (32 bytes each): proofs are rebuilt from these.
    leaf_hashes: Mapped[bytes] = mapped_column(LargeBinary)
    status: Mapped[str] = mapped_column(String(16), index=True)  # pending|included|confirmed
    chain_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    contract: Mapped[str | None] = mapped_column(String(42), nullable=True)
    signer: Mapped[str | None] = mapped_column(String(42), nullable=True)
    nonce: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    tx_hash: Mapped[str | None] = mapped_column(String(66), nullable=True, index=True)
    raw_tx: Mapped[str | None] = mapped_column(Text, nullable=True)
    block_number: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    block_hash: Mapped[str | None] = mapped_column(String(66), nullable=True)
    log_index: Mapped[int | None] = mapped_column(Integer, nullable=True)
    anchored_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    gas_used: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    reorgs: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )
    confirmed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class AnchorLeafRow(Base):
    """One work's or item's originality hashes, waiting for (or placed in) a batch."""

    __tablename__ = "anchor_leaves"
    __table_args__ = (Index("ix_anchor_leaves_status_id", "status", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    # The work or item id; one leaf per subject (registering it again returns the first).
    subject_id: Mapped[str] = mapped_column(String(256), unique=True)
    owner: Mapped[str] = mapped_column(String(256), index=True)
    sha256: Mapped[str] = mapped_column(String(64))
    # The canonical leaf encoding (chain.leaf), salt included: the receipt's leaf.
    preimage: Mapped[str] = mapped_column(Text)
    salt: Mapped[str] = mapped_column(String(64))
    leaf_hash: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))  # pending | batched | confirmed
    # Its batch; a batch's leaves are in id order in its tree.
    batch_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("anchor_batches.id"), nullable=True, index=True
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


# --- human review (issue #8): queues, leases, grants, decisions, console sessions ----------


class ReviewItemRow(Base):
    """An item waiting in (or decided out of) one review queue; at most one lease at a time."""

    __tablename__ = "review_items"
    __table_args__ = (
        UniqueConstraint("content_id", "queue"),
        Index("ix_review_items_queue_status_rank", "queue", "status", "rank"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    content_id: Mapped[str] = mapped_column(
        String(256), ForeignKey("items.content_id", ondelete="CASCADE"), index=True
    )
    # category:<name> | bank:<name> | claims | appeals | counter-notices | escalations
    queue: Mapped[str] = mapped_column(String(160))
    status: Mapped[str] = mapped_column(String(16))  # open | decided
    severity: Mapped[float] = mapped_column(Float, default=0.0)
    reach: Mapped[int] = mapped_column(BigInteger, default=0)
    # Priority minus the age term's growth (see review_queue.rank): order by it, highest first.
    rank: Mapped[float] = mapped_column(Float, default=0.0)
    entered_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    lease_key_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )
    leases: Mapped[int] = mapped_column(Integer, default=0)
    expiries: Mapped[int] = mapped_column(Integer, default=0)
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class ReviewSkipRow(Base):
    """A reviewer passed on an item: it is not offered to them again."""

    __tablename__ = "review_skips"
    __table_args__ = (UniqueConstraint("review_item_id", "key_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    review_item_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("review_items.id", ondelete="CASCADE")
    )
    key_id: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ReviewGrantRow(Base):
    """A reviewer key may work a queue ("*" grants every queue)."""

    __tablename__ = "review_grants"
    __table_args__ = (UniqueConstraint("key_id", "queue"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key_id: Mapped[int] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"), index=True)
    queue: Mapped[str] = mapped_column(String(160))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ReviewDecisionRow(Base):
    """One reviewer's decision on one queued item: actions, policy reason, statement."""

    __tablename__ = "review_decisions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    review_item_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("review_items.id", ondelete="CASCADE"), index=True
    )
    content_id: Mapped[str] = mapped_column(String(256), index=True)
    queue: Mapped[str] = mapped_column(String(160))
    reviewer_key_id: Mapped[int] = mapped_column(Integer, index=True)
    reviewer: Mapped[str] = mapped_column(String(128))
    outcome: Mapped[str] = mapped_column(String(32))  # the decisive action
    actions: Mapped[list[Any]] = mapped_column(default=list)
    policy: Mapped[str] = mapped_column(String(128))
    note: Mapped[str] = mapped_column(Text, default="")
    statement: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # Quality control: the earlier decision on the same item this one agrees with or overturns.
    previous_decision_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    agrees: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    decided_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, index=True
    )


class ConsoleSessionRow(Base):
    """A reviewer console sign-in: the cookie's SHA-256 and its CSRF token."""

    __tablename__ = "console_sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    key_id: Mapped[int] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


# --- copyright (issue #7): works, claims, strikes, appeals -------------------------------


class WorkRow(Base):
    """A rights holder's reference work: an entry in the holder's reference bank."""

    __tablename__ = "works"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    # The rights holder's API key name (as the receipts route matches it).
    owner: Mapped[str] = mapped_column(String(256), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # image | video | text
    title: Mapped[str] = mapped_column(String(512), default="")
    policy: Mapped[str] = mapped_column(String(16))  # block | review | track
    territories: Mapped[list[Any]] = mapped_column(default=list)
    bank: Mapped[str] = mapped_column(String(128))
    entry_id: Mapped[int] = mapped_column(BigInteger, index=True)
    sha256: Mapped[str] = mapped_column(String(64))
    # The work's fingerprint for scans and claim verification: [{signal, value, at_ms}].
    hashes: Mapped[list[Any]] = mapped_column(default=list)
    status: Mapped[str] = mapped_column(String(16), default="active")  # active | removed
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ClaimRow(Base):
    """A holder's claim on an item: a takedown notice, or a match found at upload or by a scan."""

    __tablename__ = "claims"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner: Mapped[str] = mapped_column(String(256), index=True)
    work_id: Mapped[str] = mapped_column(String(64), ForeignKey("works.id"), index=True)
    content_id: Mapped[str] = mapped_column(String(256), index=True)
    origin: Mapped[str] = mapped_column(String(16))  # notice | scan | upload
    # detected | tracked | matched | needs_review | taken_down | rejected | countered |
    # restored | court_action
    state: Mapped[str] = mapped_column(String(24), index=True)
    notice: Mapped[dict[str, Any]] = mapped_column(default=dict)
    verification: Mapped[dict[str, Any]] = mapped_column(default=dict)
    match: Mapped[dict[str, Any]] = mapped_column(default=dict)
    deadline: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    taken_down_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    statement: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    counter_notice: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    countered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    restore_after: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    restored_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    court_action_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )


class StrikeRow(Base):
    """One copyright strike against an uploader; strikes past ``expires_at`` no longer count."""

    __tablename__ = "strikes"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    uploader_id: Mapped[str] = mapped_column(String(256), index=True)
    claim_id: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class AppealRow(Base):
    """An uploader's appeal of a moderation decision (DSA Art. 20), decided by another person."""

    __tablename__ = "appeals"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    content_id: Mapped[str] = mapped_column(String(256), index=True)
    claim_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    uploader_id: Mapped[str] = mapped_column(String(256))
    reason: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16), index=True)  # open | upheld | reversed
    # Who made the appealed decision: they may not decide the appeal.
    original_decider: Mapped[str | None] = mapped_column(String(256), nullable=True)
    decided_by: Mapped[str | None] = mapped_column(String(256), nullable=True)
    decision_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class ReviewMediaRow(Base):
    """A reduced JPEG of an image (or a video's thumbnail) of an item sent to review: what the
    console shows. Only items sent to review keep one; the upload itself is never served."""

    __tablename__ = "review_media"
    __table_args__ = (UniqueConstraint("content_id", "media_index"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    content_id: Mapped[str] = mapped_column(
        String(256), ForeignKey("items.content_id", ondelete="CASCADE"), index=True
    )
    media_index: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))  # image | video (its thumbnail)
    jpeg: Mapped[bytes] = mapped_column(LargeBinary)


class ReviewClipRow(Base):
    """A video of an item in review, kept (MP4 or WebM, bounded) so a reviewer can play it."""

    __tablename__ = "review_clips"
    __table_args__ = (UniqueConstraint("content_id", "media_index"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    content_id: Mapped[str] = mapped_column(
        String(256), ForeignKey("items.content_id", ondelete="CASCADE"), index=True
    )
    media_index: Mapped[int] = mapped_column(Integer)
    mime: Mapped[str] = mapped_column(String(32))
    data: Mapped[bytes] = mapped_column(LargeBinary)


class DeadLetterRow(Base):
    """A task that failed every delivery it was allowed (moderation.dead_letters): kept with
    its payload and last error until an operator replays or purges it."""

    __tablename__ = "dead_letters"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    task_id: Mapped[str] = mapped_column(String(64), unique=True)
    task_name: Mapped[str] = mapped_column(String(128))
    content_id: Mapped[str | None] = mapped_column(String(256), nullable=True, index=True)
    payload: Mapped[Any] = mapped_column(JSON)
    error: Mapped[str] = mapped_column(Text)
    deliveries: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    replayed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    replay_count: Mapped[int] = mapped_column(Integer, default=0)
