"""Refusals are looked up by reason and time: each sync pushes again the balances Engage
refused with ContactNotFound within ENGAGE_NOT_FOUND_RETRY_SECONDS.

Revision ID: 0005
Revises: 0004
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_sync_rejections_reason", "sync_rejections", ["reason", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_sync_rejections_reason", "sync_rejections")
