"""The go-live copy and the heal on the real flow, with respx answering HTTP: what the
migrate run asks Treazure for, how it sets the watermark and resumes, and how a heal pushes
through the sync's guard."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from tests.support.flows import TREAZURE, FakeRemotes, Parts
from worker.base.money import from_utc_micros, utc_micros
from worker.flows import parts as worker_parts
from worker.flows import reconcile
from worker.flows.sync.locking import RUN_LOCK
from worker.flows.sync.push import push_entries
from worker.flows.sync.run import run_sync
from worker.flows.sync.summary import Counts
from worker.store.pushguard import PushGuard
from worker.systems.treazure.parsing import BalanceEntry

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
    # A sync records the contacts whose balance moved (the history refresh pages through
    # them): not one read exactly as Engage was sent, nor one older than that.
    remotes.pages = []
    remotes.add_page((A, 10, T1), (B, 25, T1), (C, 30, T1))
    synced = await run_sync(parts.settings, parts.store, parts.redis, parts.treazure,
                            parts.engage, since=EPOCH, until="2027-01-01T00:00:00Z")
    assert (synced.counts.unchanged, synced.counts.pushed) == (1, 2)
    seen = {cid: s.seen_run_id for cid, s in parts.store.contact_states([A, B, C]).items()}
    assert seen == {A: first.run_id, B: synced.run_id, C: synced.run_id}
    assert parts.store.contacts_seen_in_run(synced.run_id) == [B, C]


# -- heal under the run lock, stamped with Treazure's time -------------------------------

NEVER = 10  # bound on waits that must end long before it


def serve_history(remotes: FakeRemotes, history: dict[str, list[dict[str, Any]]]) -> None:
    """Answer Treazure's account history from `history` (contact → entries, oldest first)."""
    router = remotes.forget[0]  # the flow fixtures' respx router
    router.get(url__regex=rf"{TREAZURE}/api/v1.0/LoyaltyVault/Account/(?P<cid>[^/]+)/"
                          r"LoyaltyPrograms/points/History").mock(
        side_effect=lambda request, cid: httpx.Response(200, json=history.get(cid, [])))


def movement(at: str, balance: float) -> dict[str, Any]:
    return {"dateTime": at, "amount": 1, "transactionType": "Load", "expiresAt": None,
            "balance": balance, "comment": None, "operatorId": None, "shopId": None,
            "posId": None, "receiptNr": None, "properties": {}}


def drift_of(*contacts: tuple[str, str]) -> reconcile.ReconcileReport:
    """A report in which Treazure holds `treazure` and Engage something else."""
    return reconcile.ReconcileReport(checked=len(contacts), drift=[
        reconcile.Reading(cid, Decimal(treazure), Decimal("0.01")) for cid, treazure in contacts])


def with_guard(parts: Parts) -> worker_parts.Parts:
    return worker_parts.Parts(parts.settings, parts.store, parts.redis, parts.treazure,
                              parts.engage, PushGuard.for_settings(parts.redis, parts.settings))


async def test_heal_stamps_balances_with_treazures_time(
    parts: Parts, remotes: FakeRemotes
) -> None:
    serve_history(remotes, {A: [movement(T1, 5), movement(T2, 12.5)]})
    summary = await reconcile.heal(with_guard(parts), drift_of((A, "12.5")))
    assert (summary.status, summary.counts.pushed) == ("succeeded", 1)
    (row,) = remotes.pushes[0]
    assert (row["amount"], datetime.fromisoformat(row["timeStamp"])) == (
        12.5, datetime.fromisoformat(T2))
    state = parts.store.contact_states([A])[A]
    assert (state.sent_cents, state.sent_mutated_us) == (
        1250, utc_micros(datetime.fromisoformat(T2)))


async def test_heal_waits_for_a_sync_holding_the_run_lock(
    parts: Parts, remotes: FakeRemotes, monkeypatch: pytest.MonkeyPatch
) -> None:
    serve_history(remotes, {A: [movement(T2, 7)]})
    await parts.redis.set(RUN_LOCK, b"a-running-sync", px=300)
    holders_at_push: list[bytes | None] = []
    push = parts.engage.push_balances

    async def recording_push(rows: Any, **kwargs: Any) -> Any:
        holders_at_push.append(await parts.redis.get(RUN_LOCK))
        return await push(rows, **kwargs)

    monkeypatch.setattr(parts.engage, "push_balances", recording_push)
    summary = await reconcile.heal(with_guard(parts), drift_of((A, "7")), wait_seconds=NEVER)
    assert (summary.status, summary.counts.pushed) == ("succeeded", 1)
    # Pushed only once the sync's lock was gone, holding the lock itself.
    assert len(holders_at_push) == 1
    assert holders_at_push[0] not in (None, b"a-running-sync")


async def test_heal_is_refused_while_a_sync_keeps_the_run_lock(
    parts: Parts, remotes: FakeRemotes
) -> None:
    serve_history(remotes, {A: [movement(T2, 7)]})
    await parts.redis.set(RUN_LOCK, b"a-running-sync", ex=60)
    summary = await reconcile.heal(with_guard(parts), drift_of((A, "7")), wait_seconds=0.2)
    assert summary.status == "skipped" and remotes.pushes == []
    run = parts.store.get_run(summary.run_id)
    assert run is not None and (run["kind"], run["status"]) == ("heal", "skipped")


async def test_a_sync_starting_during_a_heal_leaves_the_heal_run_alone(
    parts: Parts, remotes: FakeRemotes, monkeypatch: pytest.MonkeyPatch
) -> None:
    serve_history(remotes, {A: [movement(T2, 7)]})
    pushing, go_on = asyncio.Event(), asyncio.Event()
    push = parts.engage.push_balances

    async def held_push(rows: Any, **kwargs: Any) -> Any:
        pushing.set()
        await go_on.wait()
        return await push(rows, **kwargs)

    monkeypatch.setattr(parts.engage, "push_balances", held_push)
    healing = asyncio.create_task(reconcile.heal(with_guard(parts), drift_of((A, "7"))))
    await asyncio.wait_for(pushing.wait(), NEVER)
    (heal_run,) = parts.store.recent_runs(1, kind="heal")

    synced = await run_sync(parts.settings, parts.store, parts.redis, parts.treazure,
                            parts.engage)
    assert synced.status == "skipped" and remotes.jobs == []
    assert parts.store.get_run(heal_run["id"])["status"] == "running"
    go_on.set()
    healed = await asyncio.wait_for(healing, NEVER)
    assert healed.status == "succeeded"
    assert parts.store.get_run(heal_run["id"])["status"] == "succeeded"
