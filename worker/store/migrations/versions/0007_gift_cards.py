"""Gift cards: orders, points → card redemptions and till adjustments, each an outbox table.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

TABLES = ("giftcard_orders", "giftcard_redemptions", "giftcard_adjustments")


def _outbox(key: str, key_length: int = 64) -> list[sa.Column]:
    """The columns of worker/store/outbox.py's outbox_columns, as of this revision."""
    return [
        sa.Column(key, sa.String(key_length), primary_key=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("uncertain", sa.Boolean, nullable=False),
        sa.Column("lease_until", sa.DateTime(timezone=True)),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "giftcard_orders", *_outbox("reference"),
        sa.Column("value_minor", sa.BigInteger, nullable=False),
        sa.Column("email", sa.String(254)),
        sa.Column("message", sa.Text),
        sa.Column("note", sa.Text),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("order_id", sa.BigInteger),
        sa.Column("line_item_id", sa.BigInteger),
        sa.Column("card_id", sa.BigInteger),
        sa.Column("card_reference", sa.String(64)),
        sa.Column("card_masked", sa.String(64)),
        sa.Column("issued_at", sa.DateTime(timezone=True)),
    )
    op.create_table(
        "giftcard_redemptions", *_outbox("reference"),
        sa.Column("contact_id", sa.String(64), nullable=False),
        sa.Column("points_cents", sa.BigInteger, nullable=False),
        sa.Column("value_minor", sa.BigInteger, nullable=False),
        sa.Column("email", sa.String(254)),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("points_reference", sa.String(64), nullable=False),
        sa.Column("refund_reference", sa.String(64), nullable=False),
        sa.Column("order_reference", sa.String(64), nullable=False),
        sa.Column("order_id", sa.BigInteger),
        sa.Column("line_item_id", sa.BigInteger),
        sa.Column("card_masked", sa.String(64)),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
    )
    op.create_table(
        "giftcard_adjustments", *_outbox("reference", 80),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("card_reference", sa.String(64)),
        sa.Column("value_minor", sa.BigInteger),
        sa.Column("site", sa.String(64), nullable=False),
        sa.Column("site_reference", sa.String(64), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("original_reference", sa.String(80)),
        sa.Column("adjustment_id", sa.BigInteger),
        sa.Column("line_item_id", sa.BigInteger),
        sa.Column("reversal_id", sa.BigInteger),
        sa.Column("balance_after_minor", sa.BigInteger),
    )
    for table in TABLES:
        op.create_index(f"ix_{table}_state", table, ["state", "next_attempt_at"])


def downgrade() -> None:
    for table in reversed(TABLES):
        op.drop_index(f"ix_{table}_state", table)
        op.drop_table(table)
