"""Running totals of the ledger's final states, kept by triggers, for /metrics.

Counting every row by state on each scrape is a full scan of a table that grows with
every transaction. The open states (received, booked) are few and counted through the
state index; applied and failed rows are counted here, in the same transaction as the
move that makes or removes them, whatever code (or plain SQL) moves them.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

FINAL_STATES = ("applied", "failed")

# Only states with a row in ledger_state_totals are counted: an UPDATE that finds no row
# (an open state) does nothing.
_SQLITE_TRIGGERS = (
    """CREATE TRIGGER ledger_totals_insert AFTER INSERT ON point_transactions
    BEGIN
        UPDATE ledger_state_totals SET count = count + 1 WHERE state = NEW.state;
    END""",
    """CREATE TRIGGER ledger_totals_update AFTER UPDATE OF state ON point_transactions
    WHEN OLD.state IS NOT NEW.state
    BEGIN
        UPDATE ledger_state_totals SET count = count - 1 WHERE state = OLD.state;
        UPDATE ledger_state_totals SET count = count + 1 WHERE state = NEW.state;
    END""",
    """CREATE TRIGGER ledger_totals_delete AFTER DELETE ON point_transactions
    BEGIN
        UPDATE ledger_state_totals SET count = count - 1 WHERE state = OLD.state;
    END""",
)

_POSTGRESQL_TRIGGERS = (
    """CREATE FUNCTION ledger_state_totals_move() RETURNS trigger AS $$
    BEGIN
        IF TG_OP IN ('UPDATE', 'DELETE') THEN
            UPDATE ledger_state_totals SET count = count - 1 WHERE state = OLD.state;
        END IF;
        IF TG_OP IN ('UPDATE', 'INSERT') THEN
            UPDATE ledger_state_totals SET count = count + 1 WHERE state = NEW.state;
        END IF;
        RETURN NULL;
    END $$ LANGUAGE plpgsql""",
    """CREATE TRIGGER ledger_totals_insert_delete AFTER INSERT OR DELETE
    ON point_transactions FOR EACH ROW EXECUTE FUNCTION ledger_state_totals_move()""",
    """CREATE TRIGGER ledger_totals_update AFTER UPDATE OF state ON point_transactions
    FOR EACH ROW WHEN (OLD.state IS DISTINCT FROM NEW.state)
    EXECUTE FUNCTION ledger_state_totals_move()""",
)


def upgrade() -> None:
    op.create_table(
        "ledger_state_totals",
        sa.Column("state", sa.String(16), primary_key=True),
        sa.Column("count", sa.BigInteger, nullable=False),
    )
    postgresql = op.get_bind().dialect.name == "postgresql"
    # Triggers first: on PostgreSQL creating them locks out writers until this commits,
    # so the count below misses no move.
    for statement in _POSTGRESQL_TRIGGERS if postgresql else _SQLITE_TRIGGERS:
        op.execute(statement)
    for state in FINAL_STATES:
        op.execute(sa.text(
            "INSERT INTO ledger_state_totals (state, count) "
            "SELECT :state, count(*) FROM point_transactions WHERE state = :state"
        ).bindparams(state=state))


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER ledger_totals_update ON point_transactions")
        op.execute("DROP TRIGGER ledger_totals_insert_delete ON point_transactions")
        op.execute("DROP FUNCTION ledger_state_totals_move()")
    else:
        for name in ("insert", "update", "delete"):
            op.execute(f"DROP TRIGGER ledger_totals_{name}")
    op.drop_table("ledger_state_totals")
