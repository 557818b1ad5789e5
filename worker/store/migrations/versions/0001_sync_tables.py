"""Balance sync: runs, what Engage was sent per contact, rejected rows.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sync_runs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("explicit_window", sa.Boolean, nullable=False),
        sa.Column("window_from", sa.DateTime(timezone=True)),
        sa.Column("window_to", sa.DateTime(timezone=True)),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.Column("duration_seconds", sa.Float),
        sa.Column("fetched", sa.BigInteger, nullable=False),
        sa.Column("unique_contacts", sa.BigInteger, nullable=False),
        sa.Column("unchanged", sa.BigInteger, nullable=False),
        sa.Column("stale", sa.BigInteger, nullable=False),
        sa.Column("pushed", sa.BigInteger, nullable=False),
        sa.Column("rejected", sa.BigInteger, nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("task_id", sa.String(64)),
    )
    op.create_index("ix_sync_runs_status", "sync_runs", ["status", "started_at"])
    op.create_table(
        "contact_balances",
        sa.Column("contact_id", sa.String(36), primary_key=True),
        sa.Column("sent_cents", sa.BigInteger),
        sa.Column("sent_mutated_us", sa.BigInteger),
        sa.Column("seen_run_id", sa.Integer),
        # SQLite: one B-tree keyed by contact id instead of a rowid table plus an index,
        # which halves the work of the million-row upserts of a large sync.
        sqlite_with_rowid=False,
    )
    op.create_table(
        "sync_rejections",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.Integer, nullable=False),
        sa.Column("contact_id", sa.String(64), nullable=False),
        sa.Column("cents", sa.BigInteger),
        sa.Column("mutated_at", sa.String(40)),
        sa.Column("reason", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_sync_rejections_run_id", "sync_rejections", ["run_id"])


def downgrade() -> None:
    op.drop_table("sync_rejections")
    op.drop_table("contact_balances")
    op.drop_index("ix_sync_runs_status", "sync_runs")
    op.drop_table("sync_runs")
