"""human review: queues, leases, skips, grants, decisions, console sessions

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22 23:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_AT = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "review_items",
        sa.Column("id", _BIG_ID, autoincrement=True, nullable=False),
        sa.Column("content_id", sa.String(length=256), nullable=False),
        sa.Column("queue", sa.String(length=160), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("severity", sa.Float(), nullable=False),
        sa.Column("reach", sa.BigInteger(), nullable=False),
        sa.Column("rank", sa.Float(), nullable=False),
        sa.Column("entered_at", _AT, nullable=False),
        sa.Column("lease_key_id", sa.Integer(), nullable=True),
        sa.Column("lease_expires_at", _AT, nullable=True),
        sa.Column("leases", sa.Integer(), nullable=False),
        sa.Column("expiries", sa.Integer(), nullable=False),
        sa.Column("decided_at", _AT, nullable=True),
        sa.ForeignKeyConstraint(["content_id"], ["items.content_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("content_id", "queue"),
    )
    with op.batch_alter_table("review_items", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_review_items_content_id"), ["content_id"])
        batch_op.create_index(batch_op.f("ix_review_items_lease_key_id"), ["lease_key_id"])
        batch_op.create_index(
            "ix_review_items_queue_status_rank", ["queue", "status", "rank"], unique=False
        )
    op.create_table(
        "review_skips",
        sa.Column("id", _BIG_ID, autoincrement=True, nullable=False),
        sa.Column("review_item_id", _BIG_ID, nullable=False),
        sa.Column("key_id", sa.Integer(), nullable=False),
        sa.Column("at", _AT, nullable=False),
        sa.ForeignKeyConstraint(["review_item_id"], ["review_items.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("review_item_id", "key_id"),
    )
    op.create_table(
        "review_grants",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("key_id", sa.Integer(), nullable=False),
        sa.Column("queue", sa.String(length=160), nullable=False),
        sa.Column("created_at", _AT, nullable=False),
        sa.ForeignKeyConstraint(["key_id"], ["api_keys.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("key_id", "queue"),
    )
    with op.batch_alter_table("review_grants", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_review_grants_key_id"), ["key_id"])
    op.create_table(
        "review_decisions",
        sa.Column("id", _BIG_ID, autoincrement=True, nullable=False),
        sa.Column("review_item_id", _BIG_ID, nullable=False),
        sa.Column("content_id", sa.String(length=256), nullable=False),
        sa.Column("queue", sa.String(length=160), nullable=False),
        sa.Column("reviewer_key_id", sa.Integer(), nullable=False),
        sa.Column("reviewer", sa.String(length=128), nullable=False),
        sa.Column("outcome", sa.String(length=32), nullable=False),
        sa.Column("actions", sa.JSON(), nullable=False),
        sa.Column("policy", sa.String(length=128), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("statement", sa.JSON(), nullable=False),
        sa.Column("previous_decision_id", sa.BigInteger(), nullable=True),
        sa.Column("agrees", sa.Boolean(), nullable=True),
        sa.Column("decided_at", _AT, nullable=False),
        sa.ForeignKeyConstraint(["review_item_id"], ["review_items.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("review_decisions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_review_decisions_review_item_id"), ["review_item_id"])
        batch_op.create_index(batch_op.f("ix_review_decisions_content_id"), ["content_id"])
        batch_op.create_index(
            batch_op.f("ix_review_decisions_reviewer_key_id"), ["reviewer_key_id"]
        )
        batch_op.create_index(batch_op.f("ix_review_decisions_decided_at"), ["decided_at"])
    op.create_table(
        "console_sessions",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("key_id", sa.Integer(), nullable=False),
        sa.Column("csrf_token", sa.String(length=64), nullable=False),
        sa.Column("created_at", _AT, nullable=False),
        sa.Column("expires_at", _AT, nullable=False),
        sa.ForeignKeyConstraint(["key_id"], ["api_keys.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("token_hash"),
    )
    with op.batch_alter_table("console_sessions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_console_sessions_key_id"), ["key_id"])
    op.create_table(
        "review_media",
        sa.Column("id", _BIG_ID, autoincrement=True, nullable=False),
        sa.Column("content_id", sa.String(length=256), nullable=False),
        sa.Column("media_index", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("jpeg", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["content_id"], ["items.content_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("content_id", "media_index"),
    )
    with op.batch_alter_table("review_media", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_review_media_content_id"), ["content_id"])
    op.create_table(
        "review_clips",
        sa.Column("id", _BIG_ID, autoincrement=True, nullable=False),
        sa.Column("content_id", sa.String(length=256), nullable=False),
        sa.Column("media_index", sa.Integer(), nullable=False),
        sa.Column("mime", sa.String(length=32), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["content_id"], ["items.content_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("content_id", "media_index"),
    )
    with op.batch_alter_table("review_clips", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_review_clips_content_id"), ["content_id"])


def downgrade() -> None:
    op.drop_table("review_clips")
    op.drop_table("review_media")
    op.drop_table("console_sessions")
    op.drop_table("review_decisions")
    op.drop_table("review_grants")
    op.drop_table("review_skips")
    op.drop_table("review_items")
