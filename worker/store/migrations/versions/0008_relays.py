"""Event relays: the events sources sent us and their deliveries, an outbox table.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "relay_events",
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("event_id", sa.String(128), nullable=False),
        sa.Column("topic", sa.String(128), nullable=False),
        sa.Column("subject", sa.String(200), nullable=False),
        sa.Column("source_created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("source", "event_id", name="pk_relay_events"),
    )
    op.create_table(
        "relay_deliveries",
        # The columns of worker/store/outbox.py's outbox_columns, as of this revision.
        sa.Column("key", sa.String(300), primary_key=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("uncertain", sa.Boolean, nullable=False),
        sa.Column("lease_until", sa.DateTime(timezone=True)),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("event_id", sa.String(128), nullable=False),
        sa.Column("destination", sa.String(16), nullable=False),
        sa.Column("topic", sa.String(128), nullable=False),
        sa.Column("subject", sa.String(200), nullable=False),
        sa.Column("source_created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sequence", sa.String(128), nullable=False),
        sa.Column("ambiguous", sa.Integer, nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_relay_deliveries_state", "relay_deliveries", ["state", "next_attempt_at"])
    op.create_index("ix_relay_deliveries_subject", "relay_deliveries",
                    ["source", "subject", "state"])


def downgrade() -> None:
    op.drop_index("ix_relay_deliveries_subject", "relay_deliveries")
    op.drop_index("ix_relay_deliveries_state", "relay_deliveries")
    op.drop_table("relay_deliveries")
    op.drop_table("relay_events")
