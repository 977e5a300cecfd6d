"""provenance anchoring: anchor batches and leaves

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22 22:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "anchor_batches",
        sa.Column("id", _BIG_ID, autoincrement=True, nullable=False),
        sa.Column("root", sa.String(length=66), nullable=False),
        sa.Column("leaf_count", sa.Integer(), nullable=False),
        sa.Column("leaf_hashes", sa.LargeBinary(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("chain_id", sa.BigInteger(), nullable=True),
        sa.Column("contract", sa.String(length=42), nullable=True),
        sa.Column("signer", sa.String(length=42), nullable=True),
        sa.Column("nonce", sa.BigInteger(), nullable=True),
        sa.Column("tx_hash", sa.String(length=66), nullable=True),
        sa.Column("raw_tx", sa.Text(), nullable=True),
        sa.Column("block_number", sa.BigInteger(), nullable=True),
        sa.Column("block_hash", sa.String(length=66), nullable=True),
        sa.Column("log_index", sa.Integer(), nullable=True),
        sa.Column("anchored_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("gas_used", sa.BigInteger(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("reorgs", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("confirmed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("anchor_batches", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_anchor_batches_root"), ["root"], unique=False)
        batch_op.create_index(batch_op.f("ix_anchor_batches_status"), ["status"], unique=False)
        batch_op.create_index(batch_op.f("ix_anchor_batches_tx_hash"), ["tx_hash"], unique=False)
    op.create_table(
        "anchor_leaves",
        sa.Column("id", _BIG_ID, autoincrement=True, nullable=False),
        sa.Column("subject_id", sa.String(length=256), nullable=False),
        sa.Column("owner", sa.String(length=256), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("preimage", sa.Text(), nullable=False),
        sa.Column("salt", sa.String(length=64), nullable=False),
        sa.Column("leaf_hash", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("batch_id", _BIG_ID, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["batch_id"], ["anchor_batches.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("subject_id"),
    )
    with op.batch_alter_table("anchor_leaves", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_anchor_leaves_batch_id"), ["batch_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_anchor_leaves_owner"), ["owner"], unique=False)
        batch_op.create_index("ix_anchor_leaves_status_id", ["status", "id"], unique=False)


def downgrade() -> None:
    op.drop_table("anchor_leaves")
    op.drop_table("anchor_batches")
