"""Points history: each contact's Treazure history entries, and when it was last fetched.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "points_history",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
                  autoincrement=True),
        sa.Column("contact_id", sa.String(64), nullable=False),
        sa.Column("entry_key", sa.String(64), nullable=False),
        sa.Column("at_us", sa.BigInteger, nullable=False),
        sa.Column("entry", sa.Text, nullable=False),
        sa.Column("fetched_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("contact_id", "entry_key", name="uq_points_history_entry"),
    )
    op.create_index("ix_points_history_contact", "points_history", ["contact_id", "at_us"])
    op.create_index("ix_points_history_at", "points_history", ["at_us"])
    op.create_table(
        "history_contacts",
        sa.Column("contact_id", sa.String(64), primary_key=True),
        sa.Column("fetched_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("newest_at_us", sa.BigInteger),
    )


def downgrade() -> None:
    op.drop_table("history_contacts")
    op.drop_index("ix_points_history_at", "points_history")
    op.drop_index("ix_points_history_contact", "points_history")
    op.drop_table("points_history")
