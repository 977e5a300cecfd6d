"""api keys: expiry, rotation with a grace period, per-key rate limits

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-23 01:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _tz() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("expires_at", _tz(), nullable=True))
        batch_op.add_column(sa.Column("rate_limit", sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column("previous_prefix", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("previous_key_hash", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("previous_expires_at", _tz(), nullable=True))
        batch_op.add_column(sa.Column("rotated_at", _tz(), nullable=True))
        batch_op.create_index("ix_api_keys_previous_prefix", ["previous_prefix"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_index("ix_api_keys_previous_prefix")
        batch_op.drop_column("rotated_at")
        batch_op.drop_column("previous_expires_at")
        batch_op.drop_column("previous_key_hash")
        batch_op.drop_column("previous_prefix")
        batch_op.drop_column("rate_limit")
        batch_op.drop_column("expires_at")
