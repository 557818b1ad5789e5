"""The go-live copy and the heal on the real flow, with respx answering HTTP: what the
migrate run asks Treazure for, how it sets the watermark and resumes, and how a heal pushes
through the sync's guard."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.support.flows import FakeRemotes, Parts
from worker.money import from_utc_micros, utc_micros
from worker.pushguard import PushGuard
from worker.sync import Counts, push_entries, run_sync
from worker.treazure import BalanceEntry

A, B, C = (f"00000000-0000-0000-0000-00000000000{i}" for i in (1, 2, 3))
T1, T2 = "2026-11-21T08:00:00Z", "2026-11-21T09:00:00Z"
EPOCH = "1970-01-01T00:00:00+00:00"


async def migrate(parts: Parts, **kwargs: object):  # type: ignore[no-untyped-def]
    return await run_sync(parts.settings, parts.store, parts.redis, parts.treazure,
                          parts.engage, since=EPOCH, kind="migrate", **kwargs)  # type: ignore[arg-type]


def entry(contact_id: str, cents: int, at: datetime) -> BalanceEntry:
    return BalanceEntry(contact_id, cents, utc_micros(at), at, cents / 100)


async def heal(parts: Parts, entries: list[BalanceEntry]):  # type: ignore[no-untyped-def]
    guard = PushGuard.for_settings(parts.redis, parts.settings)
    return await push_entries(parts.settings, parts.store, parts.engage, guard, entries)


async def test_migrate_reads_all_of_time_and_moves_the_watermark(
    parts: Parts, remotes: FakeRemotes
) -> None:
    remotes.add_page((A, 10, T1), (B, 20, T2))
    seen: list[Counts] = []
    summary = await migrate(parts, progress=lambda c: seen.append(Counts(**vars(c))))
    assert (summary.status, summary.counts.pushed) == ("succeeded", 2)
    assert remotes.jobs[0]["mutatedFrom"] == "1970-01-01T00:00:00Z"
    assert seen and seen[-1].fetched == 2
    run = parts.store.get_run(summary.run_id)
    assert run is not None and run["kind"] == "migrate" and not run["explicit_window"]
    assert parts.store.watermark() == run["started_at"]
    # The next scheduled sync starts where the copy began (less the overlap): no gap.
    await run_sync(parts.settings, parts.store, parts.redis, parts.treazure, parts.engage)
    start = datetime.fromisoformat(remotes.jobs[1]["mutatedFrom"])
    overlap = timedelta(seconds=parts.settings.SYNC_OVERLAP_SECONDS)
    assert abs(start - (run["started_at"] - overlap)) < timedelta(seconds=1)


async def test_a_second_migrate_pushes_only_what_the_first_did_not(
    parts: Parts, remotes: FakeRemotes
) -> None:
    remotes.add_page((A, 10, T1), (B, 20, T1), (C, 30, T1))
    remotes.engage_fail = 100  # Engage is down: nothing goes through, the run fails
    first = await migrate(parts)
    assert first.status == "failed" and first.counts.pushed == 0
    remotes.engage_fail = 0
    remotes.pushes.clear()
    partial = await migrate(parts)
    assert partial.counts.pushed == 3
    remotes.pushes.clear()
    remotes.pages.clear()
    remotes.add_page((A, 10, T1), (B, 25, T2), (C, 30, T1))  # B changed meanwhile
    again = await migrate(parts)
    assert (again.counts.pushed, again.counts.unchanged) == (1, 2)
    assert remotes.pushed_contacts() == [B]


async def test_heal_pushes_a_balance_equal_to_what_was_last_sent(
    parts: Parts, remotes: FakeRemotes
) -> None:
    remotes.add_page((A, 10, T1))
    await migrate(parts)
    remotes.pushes.clear()
    # Someone set A to 99 in Engage; the worker's record still says 10 was sent. A sync
    # counts 10 as unchanged; a heal must send it.
    now = datetime.now(UTC)
    summary = await heal(parts, [entry(A, 1000, now)])
    assert (summary.status, summary.counts.pushed) == ("succeeded", 1)
    assert remotes.pushed_contacts() == [A]
    run = parts.store.get_run(summary.run_id)
    assert run is not None and (run["kind"], run["pushed"]) == ("heal", 1)
    state = parts.store.contact_states([A])[A]
    assert (state.sent_cents, state.sent_mutated_us) == (1000, utc_micros(now))


async def test_heal_never_overwrites_a_newer_balance(parts: Parts, remotes: FakeRemotes) -> None:
    remotes.add_page((A, 10, T2))
    await migrate(parts)
    remotes.pushes.clear()
    read_before = datetime.fromisoformat(T1)  # the heal's read is older than what was sent
    summary = await heal(parts, [entry(A, 500, read_before)])
    assert (summary.counts.pushed, summary.counts.stale) == (0, 1)
    assert remotes.pushes == []
    assert parts.store.contact_states([A])[A].sent_cents == 1000


async def test_heal_records_what_engage_refused(parts: Parts, remotes: FakeRemotes) -> None:
    remotes.not_found = {B}
    now = datetime.now(UTC)
    summary = await heal(parts, [entry(A, 100, now), entry(B, 200, now)])
    assert (summary.counts.pushed, summary.counts.rejected) == (1, 1)
    assert [r["contact_id"] for r in parts.store.rejections(summary.run_id)] == [B]
    assert from_utc_micros(parts.store.contact_states([A])[A].sent_mutated_us or 0) == \
        now


async def test_a_migration_writes_nothing_for_balances_it_skips(
    parts: Parts, remotes: FakeRemotes
) -> None:
    remotes.add_page((A, 10, T1), (B, 20, T1))
    first = await migrate(parts)
    again = await migrate(parts)
    assert again.counts.unchanged == 2
    # Resuming a large copy is reading and comparing, not rewriting a row per contact.
    assert {s.seen_run_id for s in parts.store.contact_states([A, B]).values()} == {
        first.run_id}
    # A sync still records the contacts it read (the history refresh pages through them).
    synced = await run_sync(parts.settings, parts.store, parts.redis, parts.treazure,
                            parts.engage, since=EPOCH, until="2027-01-01T00:00:00Z")
    assert {s.seen_run_id for s in parts.store.contact_states([A, B]).values()} == {
        synced.run_id}
