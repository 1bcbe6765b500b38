"""Shared work queue (PostgreSQL replicas): work items and site presence.

Written by H12b from the models of gateway/core/db.py (WorkItemRecord, SitePresence) so that the
migrated schema has them; whoever changes those models changes this revision with them until it
ships.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03 16:58:06.130293
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Upgrade the schema."""
    op.create_table(
        "site_presence",
        sa.Column("site", sa.String(length=64), nullable=False),
        sa.Column("manifest", sa.Text(), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("site"),
    )
    op.create_table(
        "work_items",
        sa.Column("query_id", sa.String(length=64), nullable=False),
        sa.Column("site", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=12), nullable=False),
        sa.Column("envelope", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deadline", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("handed_out", sa.Integer(), nullable=False),
        sa.Column("release", sa.Text(), nullable=True),
        sa.Column("evidence", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("query_id", "site"),
    )
    with op.batch_alter_table("work_items", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_work_items_deadline"), ["deadline"], unique=False)
        batch_op.create_index(batch_op.f("ix_work_items_state"), ["state"], unique=False)


def downgrade() -> None:
    """Downgrade the schema."""
    with op.batch_alter_table("work_items", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_work_items_state"))
        batch_op.drop_index(batch_op.f("ix_work_items_deadline"))

    op.drop_table("work_items")
    op.drop_table("site_presence")
