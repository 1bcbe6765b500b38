"""Nonces of node envelopes shared by PostgreSQL replicas (seen_nonces).

Written by H12a with the SeenNonce model of gateway/core/db.py: a node's signed
poll or release replayed to another replica is refused there too.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 17:55:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Upgrade the schema."""
    op.create_table(
        "seen_nonces",
        sa.Column("nonce", sa.String(length=64), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("nonce"),
    )
    with op.batch_alter_table("seen_nonces", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_seen_nonces_expires_at"), ["expires_at"], unique=False)


def downgrade() -> None:
    """Downgrade the schema."""
    with op.batch_alter_table("seen_nonces", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_seen_nonces_expires_at"))
    op.drop_table("seen_nonces")
