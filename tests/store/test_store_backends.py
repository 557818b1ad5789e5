"""The store on a SQLite file and on a real PostgreSQL: migrations and every query."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import inspect

from worker.store.database import Store
from worker.store.engine import make_engine, utcnow
from worker.store.schema import upgrade_schema


def open_store(url: str) -> Store:
    engine = make_engine(url)
    upgrade_schema(engine)
    return Store(engine)


def test_migrations_create_the_schema_and_are_idempotent(database_url: str) -> None:
    store = open_store(database_url)
    upgrade_schema(store.engine)  # a second start must be a no-op
    tables = set(inspect(store.engine).get_table_names())
    assert {"sync_runs", "contact_balances", "sync_rejections", "alembic_version"} <= tables
    store.engine.dispose()


def test_watermark_comes_only_from_successful_scheduled_runs(database_url: str) -> None:
    store = open_store(database_url)
    t0 = datetime(2026, 11, 21, 8, tzinfo=UTC)

    def run(status: str, at: datetime, explicit: bool = False) -> int:
        run_id = store.start_run(started_at=at, window_from=at, window_to=at,
                                 explicit_window=explicit, task_id=None)
        store.update_run(run_id, status=status)
        return run_id

    assert store.watermark() is None
    run("succeeded", t0)
    run("failed", t0 + timedelta(hours=1))
    run("succeeded", t0 + timedelta(hours=2), explicit=True)
    assert store.watermark() == t0
    run("succeeded", t0 + timedelta(hours=3))
    assert store.watermark() == t0 + timedelta(hours=3)
    store.engine.dispose()


def test_contact_states_upsert(database_url: str) -> None:
    store = open_store(database_url)
    store.save_contact_states([("a", 100, 1, 1), ("b", 200, 2, 1)])
    store.save_contact_states([("a", 150, 3, 2), ("b", 200, 2, 2), ("c", None, None, 2)],
                              [(2, "c", 5, "2026-11-21T08:00:00Z", "ContactNotFound")])
    states = store.contact_states(["a", "b", "c", "d"])
    assert (states["a"].sent_cents, states["a"].sent_mutated_us, states["a"].seen_run_id) == \
        (150, 3, 2)
    assert (states["b"].sent_cents, states["b"].seen_run_id) == (200, 2)
    assert states["c"].sent_cents is None and "d" not in states
    assert [r["reason"] for r in store.rejections(2)] == ["ContactNotFound"]
    store.engine.dispose()


# What Engage was sent, and rows read against it: the same, other cents, a newer and an
# older time, a contact the run (7) already marked, one Engage refused, one never sent.
SENT = [("same", 100, 5, 1), ("cents", 100, 5, 1), ("newer", 100, 5, 1), ("older", 100, 5, 1),
        ("seen", 100, 5, 7), ("refused", None, None, 1)]
READ = [("same", 100, 5), ("cents", 101, 5), ("newer", 100, 6), ("older", 100, 4),
        ("seen", 100, 5), ("refused", 100, 5), ("never", 100, 5)]


def test_changed_contact_states_leave_out_rows_read_exactly_as_sent(
        database_url: str) -> None:
    store = open_store(database_url)
    store.save_contact_states(SENT)
    rows = READ
    states = {s.contact_id: s for s in store.changed_contact_states(rows, 7)}
    assert set(states) == {"cents", "newer", "older", "seen", "refused", "never"}
    assert tuple(states["cents"]) == ("cents", 100, 5, 1)
    assert tuple(states["seen"]) == ("seen", 100, 5, 7)  # already seen by this run
    assert tuple(states["never"]) == ("never", None, None, None)
    assert tuple(states["refused"]) == ("refused", None, None, 1)
    assert store.changed_contact_states([], 7) == []
    store.engine.dispose()


def test_rows_not_as_sent_are_the_positions_of_every_row_but_those_read_exactly_as_sent(
        database_url: str) -> None:
    store = open_store(database_url)
    store.save_contact_states(SENT)
    rows = [*READ, ("same", 100, 5), ("same", 100, 6)]  # a contact may repeat
    assert store.rows_not_as_sent(rows, 7) == [1, 2, 3, 4, 5, 6, 8]
    assert store.rows_not_as_sent(rows, 8) == [1, 2, 3, 5, 6, 8]  # "seen" is as sent now
    assert store.rows_not_as_sent([], 7) == []
    store.engine.dispose()


def test_states_travel_as_json_whatever_the_contact_id_holds(database_url: str) -> None:
    """The upsert and the compares pass rows as one JSON array and read one back: ids with
    quotes, backslashes and non-ASCII, and µs beyond 32 bits, come through as they were."""
    store = open_store(database_url)
    odd = ['quo"te', "back\\slash", "ümlaut-ß", "[0]"]
    big = 1_796_202_441_053_123
    store.save_contact_states([(cid, 100 + n, big + n, 1) for n, cid in enumerate(odd)])
    states = store.contact_states(odd)
    assert [tuple(states[cid]) for cid in odd] == \
        [(cid, 100 + n, big + n, 1) for n, cid in enumerate(odd)]
    rows = [(cid, 100 + n, big + n) for n, cid in enumerate(odd)] + [(odd[0], 1, big)]
    assert store.rows_not_as_sent(rows, 2) == [4]
    assert [tuple(s) for s in store.changed_contact_states(rows[3:], 2)] == \
        [(odd[0], 100, big, 1)]
    store.engine.dispose()


def test_running_runs_are_abandoned_and_runs_listed_newest_first(database_url: str) -> None:
    store = open_store(database_url)
    first = store.start_run(started_at=utcnow(), window_from=None, window_to=None,
                            explicit_window=False, task_id="t1")
    second = store.start_run(started_at=utcnow(), window_from=None, window_to=None,
                             explicit_window=False, task_id="t2", status="skipped")
    assert store.abandon_running_runs() == 1
    runs = store.recent_runs()
    assert [r["id"] for r in runs] == [second, first]
    assert runs[1]["status"] == "abandoned" and runs[1]["error"]
    store.engine.dispose()


def test_runs_have_a_kind_and_are_found_by_task_or_kind(database_url: str) -> None:
    store = open_store(database_url)
    at = datetime(2026, 11, 21, 8, tzinfo=UTC)
    sync_id = store.start_run(started_at=at, window_from=at, window_to=at,
                              explicit_window=False, task_id="task-1")
    migrate_id = store.start_run(started_at=at, window_from=at, window_to=at,
                                 explicit_window=False, task_id=None, kind="migrate")
    again = store.start_run(started_at=at, window_from=at, window_to=at,
                            explicit_window=False, task_id="task-1", status="skipped")
    assert [r["kind"] for r in store.recent_runs()] == ["sync", "migrate", "sync"]
    assert [r["id"] for r in store.recent_runs(kind="migrate")] == [migrate_id]
    found = store.run_for_task("task-1")
    assert found is not None and found["id"] == again != sync_id
    assert store.run_for_task("task-2") is None
    store.engine.dispose()


def test_a_sample_comes_from_contacts_engage_was_sent(database_url: str) -> None:
    store = open_store(database_url)
    store.save_contact_states([(f"c{i}", 100, 1, 1) for i in range(20)]
                              + [("never-sent", None, None, 1)])
    picked = store.sample_contact_ids(5)
    assert len(picked) == len(set(picked)) == 5
    assert set(picked) <= {f"c{i}" for i in range(20)}
    assert sorted(store.sample_contact_ids(100)) == sorted(f"c{i}" for i in range(20))
    store.engine.dispose()
