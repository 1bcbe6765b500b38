"""Initial schema, exactly as ``create_all`` made it before migrations.

Projects, researchers, memberships, enrollment tokens, nodes, queries, releases,
training jobs and the gateway audit.

Revision ID: 0001
Revises:
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

_WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    """Create every table of the first gateway schema."""
    op.create_table(
        "projects",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("created_at", _WHEN, nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "researchers",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", _WHEN, nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_index("ix_researchers_token_hash", "researchers", ["token_hash"], unique=True)
    op.create_table(
        "memberships",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("researcher", sa.String(length=100), nullable=False),
        sa.Column("project", sa.String(length=100), nullable=False),
        sa.ForeignKeyConstraint(["project"], ["projects.name"]),
        sa.ForeignKeyConstraint(["researcher"], ["researchers.name"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("researcher", "project"),
    )
    op.create_table(
        "enrollment_tokens",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("site", sa.String(length=64), nullable=False),
        sa.Column("expires_at", _WHEN, nullable=False),
        sa.Column("used_at", _WHEN, nullable=True),
        sa.PrimaryKeyConstraint("token_hash"),
    )
    op.create_table(
        "nodes",
        sa.Column("site", sa.String(length=64), nullable=False),
        sa.Column("public_key", sa.String(length=64), nullable=False),
        sa.Column("enrolled_at", _WHEN, nullable=False),
        sa.PrimaryKeyConstraint("site"),
    )
    op.create_table(
        "queries",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("researcher", sa.String(length=100), nullable=False),
        sa.Column("project", sa.String(length=100), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("created_at", _WHEN, nullable=False),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_queries_project", "queries", ["project"])
    op.create_index("ix_queries_researcher", "queries", ["researcher"])
    op.create_table(
        "releases",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("query_id", sa.String(length=64), nullable=False),
        sa.Column("site", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=40), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("signature", sa.String(length=200), nullable=False),
        sa.Column("received_at", _WHEN, nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_releases_query_id", "releases", ["query_id"])
    op.create_table(
        "training_jobs",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("researcher", sa.String(length=100), nullable=False),
        sa.Column("project", sa.String(length=100), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("sites", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("run_id", sa.String(length=24), nullable=True),
        sa.Column("created_at", _WHEN, nullable=False),
        sa.Column("updated_at", _WHEN, nullable=False),
        sa.Column("status", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_training_jobs_project", "training_jobs", ["project"])
    op.create_index("ix_training_jobs_researcher", "training_jobs", ["researcher"])
    op.create_index("ix_training_jobs_state", "training_jobs", ["state"])
    op.create_table(
        "gateway_audit",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", _WHEN, nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("site", sa.String(length=64), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_gateway_audit_kind", "gateway_audit", ["kind"])


def downgrade() -> None:
    """Drop every table (an empty database)."""
    for table in (
        "gateway_audit",
        "training_jobs",
        "releases",
        "queries",
        "nodes",
        "enrollment_tokens",
        "memberships",
        "researchers",
        "projects",
    ):
        op.drop_table(table)
