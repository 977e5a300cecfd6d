"""copyright: works, claims, strikes, appeals

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22 23:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _tz() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "works",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("owner", sa.String(length=256), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("title", sa.String(length=512), nullable=False),
        sa.Column("policy", sa.String(length=16), nullable=False),
        sa.Column("territories", sa.JSON(), nullable=False),
        sa.Column("bank", sa.String(length=128), nullable=False),
        sa.Column("entry_id", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("hashes", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", _tz(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_works_owner", "works", ["owner"])
    op.create_index("ix_works_entry_id", "works", ["entry_id"])
    op.create_table(
        "claims",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("owner", sa.String(length=256), nullable=False),
        sa.Column("work_id", sa.String(length=64), sa.ForeignKey("works.id"), nullable=False),
        sa.Column("content_id", sa.String(length=256), nullable=False),
        sa.Column("origin", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=24), nullable=False),
        sa.Column("notice", sa.JSON(), nullable=False),
        sa.Column("verification", sa.JSON(), nullable=False),
        sa.Column("match", sa.JSON(), nullable=False),
        sa.Column("deadline", _tz(), nullable=True),
        sa.Column("received_at", _tz(), nullable=False),
        sa.Column("taken_down_at", _tz(), nullable=True),
        sa.Column("statement", sa.JSON(), nullable=True),
        sa.Column("counter_notice", sa.JSON(), nullable=True),
        sa.Column("countered_at", _tz(), nullable=True),
        sa.Column("restore_after", _tz(), nullable=True),
        sa.Column("restored_at", _tz(), nullable=True),
        sa.Column("court_action_at", _tz(), nullable=True),
        sa.Column("updated_at", _tz(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_claims_owner", "claims", ["owner"])
    op.create_index("ix_claims_work_id", "claims", ["work_id"])
    op.create_index("ix_claims_content_id", "claims", ["content_id"])
    op.create_index("ix_claims_state", "claims", ["state"])
    op.create_table(
        "strikes",
        sa.Column("id", _BIG_ID, autoincrement=True, nullable=False),
        sa.Column("uploader_id", sa.String(length=256), nullable=False),
        sa.Column("claim_id", sa.String(length=64), nullable=False),
        sa.Column("created_at", _tz(), nullable=False),
        sa.Column("expires_at", _tz(), nullable=False),
        sa.Column("revoked_at", _tz(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("claim_id"),
    )
    op.create_index("ix_strikes_uploader_id", "strikes", ["uploader_id"])
    op.create_table(
        "appeals",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("content_id", sa.String(length=256), nullable=False),
        sa.Column("claim_id", sa.String(length=64), nullable=True),
        sa.Column("uploader_id", sa.String(length=256), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("original_decider", sa.String(length=256), nullable=True),
        sa.Column("decided_by", sa.String(length=256), nullable=True),
        sa.Column("decision_reason", sa.Text(), nullable=True),
        sa.Column("created_at", _tz(), nullable=False),
        sa.Column("decided_at", _tz(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_appeals_content_id", "appeals", ["content_id"])
    op.create_index("ix_appeals_state", "appeals", ["state"])


def downgrade() -> None:
    op.drop_table("appeals")
    op.drop_table("strikes")
    op.drop_table("claims")
    op.drop_table("works")
