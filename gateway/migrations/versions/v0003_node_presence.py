"""Nodes: last seen, version, state (reported in each poll) and revocation.

Written by H16core for issue 16 (``varde admin nodes``, ``varde admin revoke``,
``GET /v1/sites``). Every column is nullable: rows of nodes enrolled before
this revision have no poll recorded yet and are not revoked.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03 17:05:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Upgrade the schema."""
    with op.batch_alter_table("nodes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("last_seen", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("version", sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column("state", sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    """Downgrade the schema."""
    with op.batch_alter_table("nodes", schema=None) as batch_op:
        batch_op.drop_column("revoked_at")
        batch_op.drop_column("state")
        batch_op.drop_column("version")
        batch_op.drop_column("last_seen")
