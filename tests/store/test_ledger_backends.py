"""The point-transaction ledger on a SQLite file and on a real PostgreSQL.

Times that a test depends on are written into the row with SQL (a lease run out, a row
untouched for an hour), so no test waits for the clock.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, update

from worker.base.point_request import PointRequest
from worker.store.contacts import ContactState
from worker.store.database import Store
from worker.store.engine import make_engine, utcnow
from worker.store.ledger import LeaseLost, Ledger, LedgerRow, point_transactions
from worker.store.schema import upgrade_schema

CONTACT = "6c1e2f4a-0b1c-4d2e-9f00-1a2b3c4d5e6f"
OTHER_CONTACT = "0f0e0d0c-0b0a-4908-8706-050403020100"
LONG_AGO = datetime(2020, 1, 1, tzinfo=UTC)


@pytest.fixture
def ledger(database_url: str) -> Iterator[Ledger]:
    engine = make_engine(database_url)
    upgrade_schema(engine)
    yield Ledger(Store(engine))
    engine.dispose()


def request(reference: str, cents: int = 250, contact_id: str = CONTACT) -> PointRequest:
    return PointRequest(contact_id=contact_id, amount_cents=cents,
                        description=f"test {reference}", reference=reference)


def recorded(ledger: Ledger, reference: str, cents: int = 250,
             contact_id: str = CONTACT) -> LedgerRow:
    row, created = ledger.record(request(reference, cents, contact_id), "task")
    assert created
    return row


def set_row(ledger: Ledger, reference: str, **values: Any) -> None:
    """Write columns straight into a row (times in the past, say)."""
    with ledger.engine.begin() as conn:
        changed = conn.execute(
            update(point_transactions)
            .where(point_transactions.c.reference == reference).values(**values)
        ).rowcount
    assert changed == 1


def current(ledger: Ledger, reference: str) -> LedgerRow:
    row = ledger.get(reference)
    assert row is not None
    return row


def row_count(ledger: Ledger) -> int:
    with ledger.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(point_transactions)).scalar_one())


def claimed_lease(ledger: Ledger, reference: str) -> datetime:
    row = ledger.claim(reference, 120)
    assert row is not None and row.lease_until is not None
    return row.lease_until


# -- recording ------------------------------------------------------------------------------


def test_record_creates_once_and_returns_the_first_row_after(ledger: Ledger) -> None:
    first, created = ledger.record(request("evt-1", 250), "webhook")
    assert created
    assert (first.state, first.attempts, first.uncertain, first.source, first.amount_cents) == \
        ("received", 0, False, "webhook", 250)

    again, created_again = ledger.record(request("evt-1", 999, OTHER_CONTACT), "task")
    assert not created_again
    assert again == first  # the stored row, not the new arguments
    assert row_count(ledger) == 1


def test_record_invalid_keeps_a_failed_row_once(ledger: Ledger) -> None:
    row, created = ledger.record_invalid("evt-bad", 12345, None, "webhook",
                                         "contact_id: must be a GUID")
    assert created
    assert (row.state, row.reason, row.amount_cents, row.contact_id, row.description) == \
        ("failed", "contact_id: must be a GUID", None, "12345", None)
    assert row.final

    # A later valid request with the same reference finds the refused row, books nothing.
    again, created_again = ledger.record(request("evt-bad"), "webhook")
    assert not created_again and again.state == "failed" and again.amount_cents is None
    assert [r.reference for r in ledger.listing("failed")] == ["evt-bad"]
    assert row_count(ledger) == 1


# -- the lease ------------------------------------------------------------------------------


def test_claim_takes_the_lease_once_until_it_runs_out(ledger: Ledger) -> None:
    recorded(ledger, "t1")
    first = ledger.claim("t1", 120)
    assert first is not None and first.lease_until is not None
    assert first.lease_until > first.created_at
    assert ledger.claim("t1", 120) is None  # held

    set_row(ledger, "t1", lease_until=utcnow() - timedelta(seconds=5))
    second = ledger.claim("t1", 120)
    assert second is not None and second.lease_until is not None
    assert second.lease_until != first.lease_until
    assert ledger.claim("nope", 120) is None


def test_claim_refuses_final_rows(ledger: Ledger) -> None:
    recorded(ledger, "done")
    ledger.fail("done", "treazure: refused")
    assert ledger.claim("done", 120) is None
    recorded(ledger, "applied")
    ledger.applied(["applied"], [])
    assert ledger.claim("applied", 120) is None


def test_claim_due_takes_due_webhook_rows_at_once_and_never_a_held_one(ledger: Ledger) -> None:
    for reference in ("w1", "w2", "w3", "later", "held", "ran-out", "booked"):
        ledger.record(request(reference), "webhook")
    recorded(ledger, "task-row")  # a task's row: its own message books it
    set_row(ledger, "w1", created_at=LONG_AGO)  # the oldest comes first
    set_row(ledger, "later", next_attempt_at=utcnow() + timedelta(hours=1))
    claimed_lease(ledger, "held")
    set_row(ledger, "ran-out", lease_until=LONG_AGO)  # its holder is gone
    ledger.booked("booked", 500, 1)

    first = ledger.claim_due("webhook", 120, 2)
    rest = ledger.claim_due("webhook", 120, 10)

    assert len(first) == 2 and first[0].reference == "w1"
    assert {r.reference for r in first} | {r.reference for r in rest} == {
        "w1", "w2", "w3", "ran-out"}
    assert not {r.reference for r in first} & {r.reference for r in rest}
    assert all(r.lease_until is not None and r.lease_until > utcnow() for r in first + rest)
    assert ledger.claim_due("webhook", 120, 10) == []  # each is held now
    assert ledger.claim("w2", 120) is None


def test_renew_sending_counts_the_attempt_and_checks_the_lease(ledger: Ledger) -> None:
    recorded(ledger, "t1")
    lease = claimed_lease(ledger, "t1")

    renewed = ledger.renew_sending("t1", lease, 300)

    row = current(ledger, "t1")
    assert row.uncertain and row.attempts == 1 and row.first_sent_at is not None
    assert row.lease_until == renewed and renewed > lease
    first_sent = row.first_sent_at
    ledger.renew_sending("t1", renewed, 300)
    assert current(ledger, "t1").first_sent_at == first_sent  # the first send's time stays
    with pytest.raises(LeaseLost):
        ledger.renew_sending("t1", lease, 300)  # an old lease
    assert current(ledger, "t1").attempts == 2


def test_a_move_with_a_lease_that_is_no_longer_the_rows_raises_lease_lost(
    ledger: Ledger,
) -> None:
    recorded(ledger, "t1")
    old_lease = claimed_lease(ledger, "t1")
    set_row(ledger, "t1", lease_until=old_lease - timedelta(hours=1))  # ran out
    new_lease = claimed_lease(ledger, "t1")  # and another worker took it

    with pytest.raises(LeaseLost):
        ledger.sending("t1", old_lease)
    with pytest.raises(LeaseLost):
        ledger.booked("t1", 1000, 1, old_lease)
    with pytest.raises(LeaseLost):
        ledger.fail("t1", "x", old_lease)
    row = current(ledger, "t1")
    assert (row.state, row.attempts, row.lease_until) == ("received", 0, new_lease)

    ledger.sending("t1", new_lease)  # the holder's own lease still works
    assert current(ledger, "t1").attempts == 1


def test_release_gives_the_lease_back_with_a_retry_time(ledger: Ledger) -> None:
    recorded(ledger, "t1")
    lease = claimed_lease(ledger, "t1")
    before = utcnow()
    ledger.release("t1", retry_in=60, lease=lease)
    row = current(ledger, "t1")
    assert row.lease_until is None
    assert row.next_attempt_at is not None and row.next_attempt_at >= before + timedelta(seconds=60)
    assert ledger.claim("t1", 120) is not None


# -- state moves ----------------------------------------------------------------------------


def test_sending_counts_attempts_marks_uncertain_and_keeps_first_sent_at(ledger: Ledger) -> None:
    recorded(ledger, "t1")
    lease = claimed_lease(ledger, "t1")
    ledger.sending("t1", lease)
    row = current(ledger, "t1")
    assert (row.attempts, row.uncertain) == (1, True)
    assert row.first_sent_at is not None

    set_row(ledger, "t1", first_sent_at=LONG_AGO)
    ledger.sending("t1", lease)
    row = current(ledger, "t1")
    assert (row.attempts, row.uncertain, row.first_sent_at) == (2, True, LONG_AGO)

    ledger.not_booked("t1", "treazure: 400", lease)
    row = current(ledger, "t1")
    assert (row.uncertain, row.reason, row.attempts) == (False, "treazure: 400", 2)


def test_booked_sets_state_and_balance_and_clears_the_lease(ledger: Ledger) -> None:
    recorded(ledger, "t1")
    lease = claimed_lease(ledger, "t1")
    ledger.sending("t1", lease)
    ledger.still_uncertain("t1", "timeout", lease)
    ledger.booked("t1", 12_345, 1_763_712_000_000_000, lease)
    row = current(ledger, "t1")
    assert (row.state, row.balance_cents, row.balance_mutated_us) == \
        ("booked", 12_345, 1_763_712_000_000_000)
    assert (row.lease_until, row.uncertain, row.reason) == (None, False, None)
    assert row.booked_at is not None and not row.final


def test_fail_sets_failed_with_the_reason(ledger: Ledger) -> None:
    recorded(ledger, "t1")
    lease = claimed_lease(ledger, "t1")
    ledger.fail("t1", "treazure: account unknown", lease)
    row = current(ledger, "t1")
    assert (row.state, row.reason, row.lease_until, row.final) == \
        ("failed", "treazure: account unknown", None, True)

    recorded(ledger, "t2")
    ledger.fail("t2", "x" * 3000)
    assert current(ledger, "t2").reason == "x" * 2000


# -- Engage side ----------------------------------------------------------------------------


def test_due_booked_honours_next_attempt_and_orders_by_booking_time(ledger: Ledger) -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    for ref, booked_at in (("a", t0 + timedelta(minutes=2)), ("b", t0),
                           ("c", t0 + timedelta(minutes=1))):
        recorded(ledger, ref)
        ledger.booked(ref, 100, 1)
        set_row(ledger, ref, booked_at=booked_at)
    recorded(ledger, "still-received")

    assert [r.reference for r in ledger.due_booked(10)] == ["b", "c", "a"]
    assert [r.reference for r in ledger.due_booked(1)] == ["b"]

    ledger.defer(["c"], 3600, reason="engage: 503")
    ledger.defer(["b"], -60)  # due already
    assert [r.reference for r in ledger.due_booked(10)] == ["b", "a"]
    assert current(ledger, "c").reason == "engage: 503"


def test_defer_sets_the_next_attempt_and_keeps_the_reason_unless_given(ledger: Ledger) -> None:
    recorded(ledger, "t1")
    ledger.not_booked("t1", "first reason")
    before = utcnow()
    ledger.defer(["t1"], 3600)
    after = utcnow()
    row = current(ledger, "t1")
    assert row.next_attempt_at is not None
    assert before + timedelta(hours=1) <= row.next_attempt_at <= after + timedelta(hours=1)
    assert row.reason == "first reason"
    ledger.defer([], 10)  # nothing to do, no error


def test_applied_marks_rows_and_records_the_balance_sent(ledger: Ledger) -> None:
    recorded(ledger, "t1")
    ledger.booked("t1", 12_345, 2_000)
    recorded(ledger, "t2")
    ledger.booked("t2", 500, 50, None)
    ledger.applied(["t1"], [(CONTACT, 12_345, 2_000)])

    row = current(ledger, "t1")
    assert row.state == "applied" and row.applied_at is not None and row.final
    assert current(ledger, "t2").state == "booked"
    assert ledger.store.contact_states([CONTACT]) == {
        CONTACT: ContactState(CONTACT, 12_345, 2_000, None)}


def test_applied_never_moves_a_contacts_guard_back_in_time(ledger: Ledger) -> None:
    ledger.store.save_contact_states([(CONTACT, 100, 1_000, 7)])
    ledger.applied([], [(CONTACT, 300, 3_000)])
    ledger.applied([], [(CONTACT, 200, 2_000)])  # older: arrives late
    assert ledger.store.contact_states([CONTACT])[CONTACT] == \
        ContactState(CONTACT, 300, 3_000, 7)  # newer kept, the sync's seen run too

    ledger.applied([], [(CONTACT, 400, 3_000)])  # the same time replaces
    assert ledger.store.contact_states([CONTACT])[CONTACT].sent_cents == 400


def test_save_contact_states_never_moves_a_contact_back_in_time(ledger: Ledger) -> None:
    store = ledger.store
    store.save_contact_states([("a", 100, 2_000, 1), ("b", None, None, 1)])
    store.save_contact_states([("a", 50, 1_000, 2), ("b", 10, 5, 2)])
    states = store.contact_states(["a", "b"])
    assert states["a"] == ContactState("a", 100, 2_000, 1)  # older sync row: left as it is
    assert states["b"] == ContactState("b", 10, 5, 2)  # nothing known yet: written

    store.save_contact_states([("a", 300, 3_000, None)])
    assert store.contact_states(["a"])["a"] == ContactState("a", 300, 3_000, 1)
    store.save_contact_states([("a", 300, 3_000, 4)])
    assert store.contact_states(["a"])["a"].seen_run_id == 4


# -- the sweep and operators ----------------------------------------------------------------


def test_lost_received_finds_unleased_rows_due_or_left_stale(ledger: Ledger) -> None:
    past, future = utcnow() - timedelta(minutes=5), utcnow() + timedelta(hours=1)
    old = utcnow() - timedelta(hours=1)
    created = datetime(2026, 1, 1, tzinfo=UTC)
    for n, ref in enumerate(("stale", "due", "lease-ran-out", "fresh", "deferred", "leased",
                             "booked", "failed")):
        recorded(ledger, ref)
        set_row(ledger, ref, created_at=created + timedelta(minutes=n))
    set_row(ledger, "stale", updated_at=old)
    set_row(ledger, "due", next_attempt_at=past)  # touched just now, but due
    # Touched just now, but a lease that ran out unrenewed means its holder is gone.
    set_row(ledger, "lease-ran-out", lease_until=past)
    set_row(ledger, "deferred", next_attempt_at=future, updated_at=old)
    set_row(ledger, "leased", lease_until=future, updated_at=old)
    ledger.booked("booked", 100, 1)
    set_row(ledger, "booked", updated_at=old)
    ledger.fail("failed", "x")
    set_row(ledger, "failed", updated_at=old)

    lost = ledger.lost_received(stale_seconds=600)
    assert [r.reference for r in lost] == ["stale", "due", "lease-ran-out"]
    assert [r.reference for r in ledger.lost_received(stale_seconds=600, limit=1)] == ["stale"]
    # Untouched for an hour is not stale when the limit is two hours; a lease that ran out
    # is due at once.
    assert [r.reference for r in ledger.lost_received(stale_seconds=7200)] == [
        "due", "lease-ran-out"]
    # Once the sweep has re-sent it (a retry planned), it waits for that retry.
    set_row(ledger, "lease-ran-out", next_attempt_at=future)
    assert [r.reference for r in ledger.lost_received(stale_seconds=7200)] == ["due"]


def test_reopen_turns_a_failed_row_back_by_what_treazure_holds(ledger: Ledger) -> None:
    recorded(ledger, "with-balance")
    lease = claimed_lease(ledger, "with-balance")
    ledger.sending("with-balance", lease)
    ledger.booked("with-balance", 7_500, 1_000, lease)
    ledger.fail("with-balance", "engage: contact unknown")

    recorded(ledger, "no-balance")
    lease = claimed_lease(ledger, "no-balance")
    ledger.sending("no-balance", lease)
    ledger.sending("no-balance", lease)
    ledger.fail("no-balance", "treazure: gave up", lease)
    set_row(ledger, "no-balance", next_attempt_at=LONG_AGO)

    booked = ledger.reopen("with-balance")
    assert booked is not None
    assert (booked.state, booked.balance_cents, booked.attempts, booked.reason) == \
        ("booked", 7_500, 0, None)
    received = ledger.reopen("no-balance")
    assert received is not None
    assert (received.state, received.attempts, received.reason, received.next_attempt_at,
            received.lease_until) == ("received", 0, None, None, None)
    assert ledger.claim("no-balance", 120) is not None  # open again


def test_reopen_leaves_rows_that_are_not_replayable(ledger: Ledger) -> None:
    recorded(ledger, "open")
    ledger.record_invalid("invalid", "x", None, "webhook", "amount: must be a number")
    assert ledger.reopen("missing") is None
    open_row = ledger.reopen("open")
    assert open_row is not None and open_row.state == "received"
    invalid = ledger.reopen("invalid")
    assert invalid is not None
    assert (invalid.state, invalid.reason) == ("failed", "amount: must be a number")


def test_counts_by_state_and_listing(ledger: Ledger) -> None:
    assert ledger.counts_by_state() == {}
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    for ref in ("r1", "r2", "b1", "f1", "a1", "f2"):
        recorded(ledger, ref)
    ledger.booked("b1", 100, 1)
    ledger.fail("f1", "one")
    ledger.fail("f2", "two")
    ledger.applied(["a1"], [])
    for n, ref in enumerate(("r1", "r2", "b1", "f1", "a1", "f2")):
        set_row(ledger, ref, updated_at=t0 + timedelta(minutes=n))

    assert ledger.counts_by_state() == {"received": 2, "booked": 1, "failed": 2, "applied": 1}
    assert [r.reference for r in ledger.listing("failed")] == ["f2", "f1"]
    assert [r.reference for r in ledger.listing("received")] == ["r2", "r1"]
    assert [r.reference for r in ledger.listing()] == ["f2", "a1", "f1", "b1", "r2", "r1"]
    assert [r.reference for r in ledger.listing(limit=2)] == ["f2", "a1"]
    assert ledger.listing("nonsense") == []


# -- the counts /metrics reads ----------------------------------------------------------------


def exact_counts(ledger: Ledger) -> dict[str, int]:
    return {"received": 0, "booked": 0, "applied": 0, "failed": 0, **ledger.counts_by_state()}


def test_state_totals_stay_exact_through_every_kind_of_move(ledger: Ledger) -> None:
    """The running totals of final states agree with a full count after each move: moves
    by the ledger's methods, repeats of a move, rows written or deleted by plain SQL."""
    steps: list[Any] = [
        lambda: [recorded(ledger, ref) for ref in ("t1", "t2", "t3", "t4", "t5")],
        lambda: ledger.record_invalid("bad-1", 1, None, "webhook", "amount: not a number"),
        lambda: ledger.booked("t1", 100, 1),
        lambda: ledger.booked("t2", 200, 2),
        lambda: ledger.applied(["t1", "t2"], []),
        lambda: ledger.applied(["t1"], []),  # applied again: no move
        lambda: ledger.fail("t3", "refused"),
        lambda: ledger.fail("t3", "refused again"),  # failed again: no move
        lambda: ledger.fail_many({"t4": "a", "bad-1": "b"}),
        lambda: ledger.reopen("t3"),
        lambda: set_row(ledger, "t5", state="applied"),
        lambda: _delete(ledger, "t1", "bad-1"),  # a purge of old rows
    ]
    assert ledger.state_totals() == exact_counts(ledger)
    for step in steps:
        step()
        assert ledger.state_totals() == exact_counts(ledger)
    assert exact_counts(ledger) == {"received": 1, "booked": 0, "applied": 2, "failed": 1}


def _delete(ledger: Ledger, *references: str) -> None:
    with ledger.engine.begin() as conn:
        conn.execute(point_transactions.delete()
                     .where(point_transactions.c.reference.in_(references)))


def test_the_totals_start_from_the_rows_a_database_already_holds(database_url: str) -> None:
    from alembic import command

    from worker.store.schema import migrations_config

    engine = make_engine(database_url)
    config = migrations_config()
    with engine.begin() as conn:  # the schema as it was before the totals
        config.attributes["connection"] = conn
        command.upgrade(config, "0005")
    ledger = Ledger(Store(engine))
    for ref in ("old-1", "old-2", "old-3"):
        recorded(ledger, ref)
    ledger.applied(["old-1"], [])
    ledger.fail("old-2", "refused")

    upgrade_schema(engine)

    assert ledger.state_totals() == exact_counts(ledger) == \
        {"received": 1, "booked": 0, "applied": 1, "failed": 1}
    engine.dispose()
