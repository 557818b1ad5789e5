"""Point transactions: the ledger, one row per reference.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "point_transactions",
        sa.Column("reference", sa.String(64), primary_key=True),
        sa.Column("contact_id", sa.String(64), nullable=False),
        sa.Column("amount_cents", sa.BigInteger),
        sa.Column("description", sa.Text),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("uncertain", sa.Boolean, nullable=False),
        sa.Column("balance_cents", sa.BigInteger),
        sa.Column("balance_mutated_us", sa.BigInteger),
        sa.Column("first_sent_at", sa.DateTime(timezone=True)),
        sa.Column("lease_until", sa.DateTime(timezone=True)),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("booked_at", sa.DateTime(timezone=True)),
        sa.Column("applied_at", sa.DateTime(timezone=True)),
    )
    op.create_index(
        "ix_point_transactions_state", "point_transactions", ["state", "next_attempt_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_point_transactions_state", "point_transactions")
    op.drop_table("point_transactions")
