"""What a recorded run was: a scheduled or manual sync, the go-live migration, or a heal.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sync_runs") as batch:
        batch.add_column(sa.Column("kind", sa.String(16), nullable=False,
                                   server_default="sync"))
    op.create_index("ix_sync_runs_kind", "sync_runs", ["kind", "id"])
    op.create_index("ix_sync_runs_task", "sync_runs", ["task_id"])


def downgrade() -> None:
    op.drop_index("ix_sync_runs_task", "sync_runs")
    op.drop_index("ix_sync_runs_kind", "sync_runs")
    with op.batch_alter_table("sync_runs") as batch:
        batch.drop_column("kind")
