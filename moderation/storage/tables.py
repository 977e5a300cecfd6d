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
