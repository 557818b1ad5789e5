"""Every rule of the balance sync, on the real flow with respx answering HTTP."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime, timedelta

import orjson
import pytest
import redis.exceptions
from redis.asyncio.lock import Lock
from sqlalchemy import update

from tests.support.flows import FakeRemotes, Parts
from worker.base.arguments import InvalidArgument
from worker.base.money import utc_micros
from worker.flows.sync.locking import RUN_LOCK
from worker.flows.sync.run import run_sync
from worker.store.contacts import sync_rejections
from worker.systems.treazure.parsing import BalanceEntry

A, B, C = (f"00000000-0000-0000-0000-00000000000{i}" for i in (1, 2, 3))
T1, T2, T3 = "2026-11-21T08:00:00Z", "2026-11-21T09:00:00Z", "2026-11-21T10:00:00Z"


async def sync(parts: Parts, **kwargs: str):  # type: ignore[no-untyped-def]
    return await run_sync(parts.settings, parts.store, parts.redis, parts.treazure,
                          parts.engage, **kwargs)


def window_of(job: dict) -> tuple[datetime, datetime]:  # type: ignore[type-arg]
    return (datetime.fromisoformat(job["mutatedFrom"]), datetime.fromisoformat(job["mutatedTo"]))


async def test_first_run_covers_last_two_hours_to_now_plus_two(parts: Parts,
                                                                remotes: FakeRemotes) -> None:
    before = datetime.now(UTC)
    summary = await sync(parts)
    start, end = window_of(remotes.jobs[0])
    assert summary.status == "succeeded"
    assert abs(start - (before - timedelta(hours=2))) < timedelta(seconds=5)
    assert abs(end - (before + timedelta(hours=2))) < timedelta(seconds=5)
    assert remotes.jobs[0]["loyaltyPointDefinitionId"] == "points"


async def test_next_window_starts_at_last_success_less_overlap(parts: Parts,
                                                                remotes: FakeRemotes) -> None:
    first = await sync(parts)
    watermark = parts.store.watermark()
    assert watermark is not None
    await sync(parts)
    start, _ = window_of(remotes.jobs[1])
    overlap = timedelta(seconds=parts.settings.SYNC_OVERLAP_SECONDS)
    # The job body carries whole seconds.
    assert abs(start - (watermark - overlap)) < timedelta(seconds=1)
    assert first.run_id is not None and parts.store.get_run(first.run_id)["status"] == "succeeded"


async def test_explicit_window_is_used_and_leaves_the_watermark(parts: Parts,
                                                                 remotes: FakeRemotes) -> None:
    await sync(parts, since="2026-11-01T00:00:00Z", until="2026-11-02T00:00:00+00:00")
    assert remotes.jobs[0]["mutatedFrom"] == "2026-11-01T00:00:00Z"
    assert remotes.jobs[0]["mutatedTo"] == "2026-11-02T00:00:00Z"
    assert parts.store.watermark() is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"since": "yesterday"}, "since: must be an ISO-8601 time"),
        ({"since": "2026-11-01T00:00:00"}, "since: must name its timezone"),
        ({"since": "2026-11-02T00:00:00Z", "until": "2026-11-01T00:00:00Z"},
         "since: must be before until"),
    ],
)
async def test_bad_window_refused_before_any_remote_call(
    parts: Parts, remotes: FakeRemotes, kwargs: dict, message: str  # type: ignore[type-arg]
) -> None:
    with pytest.raises(InvalidArgument, match=message):
        await sync(parts, **kwargs)
    assert remotes.jobs == [] and remotes.pushes == []
    assert parts.store.recent_runs() == []


async def test_newest_entry_per_contact_wins_within_a_page(parts: Parts,
                                                           remotes: FakeRemotes) -> None:
    remotes.add_page((A, 10, T2), (A, 5, T1), (B, 7, T1), (B, 8, T3))
    summary = await sync(parts)
    assert remotes.engage == {A: 10, B: 8}
    assert sorted(remotes.pushed_contacts()) == [A, B]
    assert (summary.counts.fetched, summary.counts.unique_contacts) == (4, 2)


async def test_older_duplicate_in_one_batch_collapses(parts: Parts,
                                                      remotes: FakeRemotes) -> None:
    remotes.add_page((A, 10, T3))
    remotes.add_page((A, 5, T1))
    summary = await sync(parts)
    assert remotes.pushed_contacts() == [A]
    assert (summary.counts.fetched, summary.counts.unique_contacts) == (2, 1)


@pytest.mark.parametrize("flush_rows", [1, 50_000], ids=["written-each-batch", "held-in-run"])
async def test_older_entry_after_the_newer_was_pushed_is_never_sent(
    parts: Parts, remotes: FakeRemotes, monkeypatch: pytest.MonkeyPatch, flush_rows: int
) -> None:
    """The guard holds whether the newer push is already in the store or still pending."""
    monkeypatch.setattr("worker.flows.sync.lanes.FLUSH_EVERY_ROWS", flush_rows)
    parts.settings.ENGAGE_BATCH_SIZE = 1  # every entry is pushed before the next is read
    remotes.add_page((A, 10, T3))
    remotes.add_page((A, 5, T1))
    summary = await sync(parts)
    assert remotes.engage == {A: 10}
    assert remotes.pushed_contacts() == [A]
    assert summary.counts.stale == 1
    assert summary.counts.unique_contacts == 1


async def test_newer_entry_on_a_later_page_overrides(parts: Parts, remotes: FakeRemotes) -> None:
    remotes.add_page((A, 5, T1))
    remotes.add_page((A, 10, T3))
    await sync(parts)
    assert remotes.engage == {A: 10}


async def test_balance_equal_to_last_sent_is_not_sent_again(parts: Parts,
                                                            remotes: FakeRemotes) -> None:
    remotes.add_page((A, 10, T1), (B, 20, T1))
    await sync(parts)
    remotes.pages = []
    remotes.add_page((A, 10, T2), (B, 21, T2))
    remotes.pushes.clear()
    summary = await sync(parts)
    assert remotes.pushed_contacts() == [B]
    assert (summary.counts.unchanged, summary.counts.pushed) == (1, 1)


async def test_an_unchanged_rerun_writes_no_row_and_marks_only_what_moved(
    parts: Parts, remotes: FakeRemotes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reading a balance exactly as Engage was sent writes nothing to the store, and leaves
    the contact out of the run's history refresh: nothing happened to it since."""
    remotes.add_page((A, 10, T1), (B, 20, T1), (C, 30, T1))
    first = await sync(parts)
    saved: list[tuple[object, ...]] = []
    save = parts.store.save_contact_states

    def spy(states, rejections=(), conn=None):  # type: ignore[no-untyped-def]
        states = list(states)
        saved.extend(states)
        save(states, rejections, conn)

    monkeypatch.setattr(parts.store, "save_contact_states", spy)
    again = await sync(parts)
    assert (again.counts.unchanged, again.counts.pushed, again.counts.unique_contacts) == \
        (3, 0, 3)
    assert saved == []
    assert parts.store.contacts_seen_in_run(again.run_id) == []
    # Same balance at a newer time (points earned and spent): recorded, refreshed, not sent.
    remotes.pages = []
    remotes.add_page((A, 10, T2), (B, 20, T1), (C, 31, T2))
    remotes.pushes.clear()
    third = await sync(parts)
    assert remotes.pushed_contacts() == [C]
    assert (third.counts.unchanged, third.counts.pushed) == (2, 1)
    assert parts.store.contacts_seen_in_run(third.run_id) == [A, C]
    assert parts.store.contact_states([B])[B].seen_run_id == first.run_id


async def test_an_unchanged_rerun_is_compared_in_the_store_not_row_by_row(
    parts: Parts, remotes: FakeRemotes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store leaves out the rows read exactly as sent: nothing comes back for them,
    and the per-contact read is not used; the counts are the same as before."""
    remotes.add_page((A, 10, T1), (B, 20, T1), (C, 30, T1))
    await sync(parts)
    returned: list[int] = []
    compare = parts.store.changed_contact_states

    def spy(rows, run_id, conn=None):  # type: ignore[no-untyped-def]
        states = compare(rows, run_id, conn)
        returned.append(len(states))
        return states

    def per_contact_read(ids):  # type: ignore[no-untyped-def]
        raise AssertionError("a sync run read contact states one contact at a time")

    monkeypatch.setattr(parts.store, "changed_contact_states", spy)
    monkeypatch.setattr(parts.store, "contact_states", per_contact_read)
    remotes.pages = []
    remotes.add_page((A, 10, T1), (B, 20, T1))
    remotes.add_page((C, 31, T2))
    remotes.pushes.clear()
    summary = await sync(parts)
    assert remotes.pushed_contacts() == [C]
    assert (summary.counts.unchanged, summary.counts.pushed, summary.counts.unique_contacts) \
        == (2, 1, 3)
    assert sum(returned) == 1  # only C came back to be compared in Python


async def test_same_balance_newer_time_raises_the_guard(parts: Parts,
                                                        remotes: FakeRemotes) -> None:
    """A=10@T1 sent; then A=10@T3 (unchanged) and A=5@T2 (older than T3) must not be sent."""
    parts.settings.ENGAGE_BATCH_SIZE = 1
    remotes.add_page((A, 10, T1))
    await sync(parts)
    remotes.pages = []
    remotes.add_page((A, 10, T3))
    remotes.add_page((A, 5, T2))
    remotes.pushes.clear()
    summary = await sync(parts)
    assert remotes.pushes == []
    assert (summary.counts.unchanged, summary.counts.stale) == (1, 1)


async def test_balance_older_than_one_already_sent_is_never_sent(parts: Parts,
                                                                 remotes: FakeRemotes) -> None:
    remotes.add_page((A, 10, T2))
    await sync(parts)
    remotes.pages = []
    remotes.add_page((A, 99, T1))
    remotes.pushes.clear()
    summary = await sync(parts)
    assert remotes.pushes == []
    assert remotes.engage == {A: 10}
    assert summary.counts.stale == 1


async def test_pushes_are_batched_under_the_configured_size(parts: Parts,
                                                            remotes: FakeRemotes) -> None:
    ids = [f"00000000-0000-0000-0000-{i:012d}" for i in range(20)]
    remotes.add_page(*[(cid, i, T1) for i, cid in enumerate(ids)])
    summary = await sync(parts)
    assert all(len(push) <= 3 for push in remotes.pushes)
    assert sorted(remotes.pushed_contacts()) == ids
    assert summary.counts.pushed == 20


async def test_amounts_and_timestamps_sent_exactly(parts: Parts, remotes: FakeRemotes) -> None:
    remotes.add_page((A, 1250.55, T2))
    await sync(parts)
    (row,) = remotes.pushes[0]
    assert row == {"contactId": A, "amount": 1250.55, "definitionId": 1, "timeStamp": T2}


async def test_run_is_recorded_with_window_counts_and_outcome(parts: Parts,
                                                              remotes: FakeRemotes) -> None:
    parts.settings.ENGAGE_BATCH_SIZE = 1000  # one batch per lane: A's two rows collapse
    remotes.not_found = {C}
    remotes.add_page((A, 1, T1), (B, 2, T1), (C, 3, T1), (A, 4, T2))
    summary = await sync(parts, since="2026-11-21T00:00:00Z")
    run = parts.store.get_run(summary.run_id)
    assert run["status"] == "succeeded"
    assert run["window_from"] == datetime(2026, 11, 21, tzinfo=UTC)
    assert (run["fetched"], run["unique_contacts"], run["pushed"], run["rejected"]) == (4, 3, 2, 1)
    assert run["duration_seconds"] is not None and run["finished_at"] is not None
    (rejection,) = parts.store.rejections(summary.run_id)
    assert (rejection["contact_id"], rejection["reason"]) == (C, "ContactNotFound")


async def test_rejected_rows_are_not_recorded_as_sent(parts: Parts, remotes: FakeRemotes) -> None:
    remotes.not_found = {C}
    remotes.add_page((C, 3, T1))
    await sync(parts)
    remotes.not_found = set()
    remotes.pushes.clear()
    await sync(parts)
    assert remotes.pushed_contacts() == [C]


async def test_malformed_entry_is_rejected_not_dropped(parts: Parts,
                                                       remotes: FakeRemotes) -> None:
    remotes.add_page((A, 1, T1), (B, 1.234, T1))
    summary = await sync(parts)
    assert (summary.counts.fetched, summary.counts.rejected, summary.counts.pushed) == (2, 1, 1)
    (rejection,) = parts.store.rejections(summary.run_id)
    assert rejection["contact_id"] == B and "more than 2 decimals" in rejection["reason"]


async def test_failed_run_keeps_the_watermark_and_the_next_run_redoes_it(
    parts: Parts, remotes: FakeRemotes
) -> None:
    remotes.add_page((A, 1, T1))
    await sync(parts)
    watermark = parts.store.watermark()
    remotes.pages = []
    remotes.add_page((B, 2, T2))
    remotes.engage_fail = 1000
    failed = await sync(parts)
    assert failed.status == "failed" and "503" in (failed.error or "")
    assert parts.store.get_run(failed.run_id)["status"] == "failed"
    assert parts.store.watermark() == watermark
    remotes.engage_fail = 0
    redo = await sync(parts)
    overlap = timedelta(seconds=parts.settings.SYNC_OVERLAP_SECONDS)
    assert abs(window_of(remotes.jobs[-1])[0] - (watermark - overlap)) < timedelta(seconds=1)
    assert redo.status == "succeeded" and remotes.engage[B] == 2


async def test_second_run_skips_while_the_lock_is_held(parts: Parts,
                                                       remotes: FakeRemotes) -> None:
    await parts.redis.set(RUN_LOCK, b"someone-else", ex=60)
    summary = await sync(parts)
    assert summary.status == "skipped"
    assert remotes.jobs == []
    assert parts.store.get_run(summary.run_id)["status"] == "skipped"


async def test_run_left_running_by_a_dead_worker_is_marked_abandoned(
    parts: Parts, remotes: FakeRemotes
) -> None:
    from worker.store.engine import utcnow

    dead = parts.store.start_run(started_at=utcnow(), window_from=None, window_to=None,
                                 explicit_window=False, task_id="dead")
    await sync(parts)
    assert parts.store.get_run(dead)["status"] == "abandoned"
    assert orjson.dumps(parts.store.watermark().isoformat())


async def test_a_redelivered_task_waits_for_its_dead_holders_lock(
    parts: Parts, remotes: FakeRemotes
) -> None:
    """Its worker died mid-run and the broker handed the same task out again."""
    from worker.store.engine import utcnow

    dead = parts.store.start_run(started_at=utcnow(), window_from=None, window_to=None,
                                 explicit_window=False, task_id="task-1")
    await parts.redis.set(RUN_LOCK, b"dead-holder", px=1500)
    remotes.add_page((A, 1, T1))
    summary = await sync(parts, task_id="task-1")
    assert summary.status == "succeeded"
    assert remotes.engage == {A: 1}
    assert parts.store.get_run(dead)["status"] == "abandoned"


async def test_another_task_still_skips_while_the_lock_is_held(
    parts: Parts, remotes: FakeRemotes
) -> None:
    from worker.store.engine import utcnow

    parts.store.start_run(started_at=utcnow(), window_from=None, window_to=None,
                          explicit_window=False, task_id="task-1")
    await parts.redis.set(RUN_LOCK, b"live-holder", ex=60)
    summary = await sync(parts, task_id="task-2")
    assert summary.status == "skipped" and remotes.jobs == []


async def test_a_run_whose_lock_cannot_be_kept_ends_failed_not_succeeded(
    parts: Parts, remotes: FakeRemotes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis refuses every extension of the run lock while the run waits on Treazure."""
    await sync(parts)
    watermark = parts.store.watermark()
    parts.settings.SYNC_LOCK_TTL_SECONDS = 2

    async def unreachable(self: Lock) -> bool:
        raise redis.exceptions.ConnectionError("Connection refused")

    monkeypatch.setattr(Lock, "reacquire", unreachable)

    async def pages_once_the_lock_is_gone(start: datetime, end: datetime):  # type: ignore[no-untyped-def]
        # Treazure's job ends only after the lock would have expired: a run that went on
        # past that point would push without holding the lock.
        async with asyncio.timeout(10):
            while await parts.redis.exists(RUN_LOCK):
                await asyncio.sleep(0.01)
        yield [BalanceEntry(A, 100, utc_micros(datetime.fromisoformat(T1)),
                            datetime.fromisoformat(T1), 1)], []

    monkeypatch.setattr(parts.treazure, "balance_pages", pages_once_the_lock_is_gone)
    summary = await sync(parts)

    assert summary.status == "failed" and "lock" in (summary.error or "")
    run = parts.store.get_run(summary.run_id)
    assert run is not None and run["status"] == "failed" and "lock" in run["error"]
    assert parts.store.watermark() == watermark
    assert remotes.pushes == []


async def test_a_contact_engage_did_not_know_is_pushed_once_it_exists(
    parts: Parts, remotes: FakeRemotes
) -> None:
    remotes.not_found = {C}
    remotes.add_page((C, 3, T1))
    first = await sync(parts)
    assert first.counts.rejected == 1
    remotes.pages = []  # nothing changes in Treazure: the next windows do not hold C
    remotes.pushes.clear()
    still_unknown = await sync(parts)  # refused again: tried again by the next run
    assert remotes.pushed_contacts() == [C] and still_unknown.counts.rejected == 1
    remotes.not_found = set()  # the contact was created in Engage meanwhile
    remotes.pushes.clear()
    second = await sync(parts)
    assert remotes.engage == {C: 3}
    assert (second.counts.pushed, second.counts.rejected) == (1, 0)
    state = parts.store.contact_states([C])[C]
    assert (state.sent_cents, state.sent_mutated_us) == (
        300, utc_micros(datetime.fromisoformat(T1)))
    remotes.pushes.clear()
    await sync(parts)  # accepted: never sent again
    assert remotes.pushes == []


async def test_a_refusal_older_than_the_retry_period_is_not_tried_again(
    parts: Parts, remotes: FakeRemotes
) -> None:
    remotes.not_found = {C}
    remotes.add_page((C, 3, T1))
    first = await sync(parts)
    remotes.pages = []
    await sync(parts)  # refused again, an hour later say
    # The first refusal is now a little more than the period ago.
    period = timedelta(seconds=parts.settings.ENGAGE_NOT_FOUND_RETRY_SECONDS)
    (first_refusal,) = parts.store.rejections(first.run_id)
    with parts.store.engine.begin() as conn:
        conn.execute(update(sync_rejections).where(sync_rejections.c.id == first_refusal["id"])
                     .values(created_at=datetime.now(UTC) - period - timedelta(minutes=1)))
    remotes.not_found = set()
    remotes.pushes.clear()
    later = await sync(parts)
    assert remotes.pushes == [] and later.counts.pushed == 0


async def test_a_lane_compares_while_another_pushes_within_the_push_limit(
    parts: Parts, remotes: FakeRemotes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each push slot has two lanes: while one lane's push is in flight another compares
    its next batch, and pushes in flight never exceed ENGAGE_PUSH_CONCURRENCY."""
    parts.settings.ENGAGE_PUSH_CONCURRENCY = 1
    parts.settings.ENGAGE_BATCH_SIZE = 1
    # Contacts go to lanes by hash: read alternately from each of two lanes, so the
    # queue's bound never fills with the held lane's batches alone.
    candidates = [f"00000000-0000-0000-0000-{i:012d}" for i in range(100)]
    by_lane = [[cid for cid in candidates if hash(cid) % 2 == lane][:6] for lane in (0, 1)]
    ids = [cid for pair in zip(*by_lane, strict=True) for cid in pair]
    remotes.add_page(*[(cid, i + 0.5, T1) for i, cid in enumerate(ids)])
    loop = asyncio.get_running_loop()
    two_compared = asyncio.Event()  # a second batch compared: the first push not yet done
    compare = parts.store.changed_contact_states
    compares: list[int] = []

    def spy_compare(rows, run_id, conn=None):  # type: ignore[no-untyped-def]
        states = compare(rows, run_id, conn)
        compares.append(len(rows))
        if len(compares) >= 2:
            loop.call_soon_threadsafe(two_compared.set)
        return states

    push = parts.engage.push_balances
    in_flight, most, overlapped = 0, 0, []

    async def spy_push(rows, **kwargs):  # type: ignore[no-untyped-def]
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        try:
            if not overlapped:  # hold the first push until another batch is compared
                await asyncio.wait_for(two_compared.wait(), 10)
                overlapped.append(True)
            return await push(rows, **kwargs)
        finally:
            in_flight -= 1

    monkeypatch.setattr(parts.store, "changed_contact_states", spy_compare)
    monkeypatch.setattr(parts.engage, "push_balances", spy_push)
    summary = await sync(parts)
    assert summary.status == "succeeded", summary.error
    assert (summary.counts.pushed, most, overlapped) == (12, 1, [True])


async def test_progress_is_written_off_the_event_loop(
    parts: Parts, remotes: FakeRemotes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run's progress waits for SQLite's write lock, which a flush may hold: it is
    written on the run's write thread, never on the event loop's."""
    monkeypatch.setattr("worker.flows.sync.run.PROGRESS_EVERY_SECONDS", 0.0)
    for page in range(3):
        remotes.add_page((f"00000000-0000-0000-0000-{page:012d}", 1.5, T1))
    threads: list[str] = []
    update = parts.store.update_run

    def spy(run_id, **values):  # type: ignore[no-untyped-def]
        if "fetched" in values and "status" not in values:
            threads.append(threading.current_thread().name)
        return update(run_id, **values)

    monkeypatch.setattr(parts.store, "update_run", spy)
    summary = await sync(parts)
    assert summary.status == "succeeded" and summary.counts.fetched == 3
    assert threads and all(name.startswith("sync-db") for name in threads), threads
    assert parts.store.get_run(summary.run_id)["fetched"] == 3
