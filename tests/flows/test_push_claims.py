"""The sync and point transactions never overwrite each other's newer balance in Engage:
the per-contact claims of pushguard, on the real flows (respx for HTTP, fakeredis)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import pytest

from tests.support.flows import FakeRemotes, Parts
from worker.base.money import utc_micros
from worker.base.point_request import validate_request
from worker.flows.parts import Parts as FlowParts
from worker.flows.points.drain import BUSY_RETRY_SECONDS, drain, seconds_until_due
from worker.flows.sync.run import run_sync
from worker.store.ledger import Ledger
from worker.store.pushguard import Claim, PushGuard

A, B = "00000000-0000-0000-0000-00000000000a", "00000000-0000-0000-0000-00000000000b"
T1, T2, T3 = "2026-11-21T08:00:00Z", "2026-11-21T09:00:00Z", "2026-11-21T10:00:00Z"


def us(text: str) -> int:
    return utc_micros(datetime.fromisoformat(text))


class WatchedGuard(PushGuard):
    """The real guard; `met_busy` is set once a claim met a contact held by the other flow."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.met_busy = asyncio.Event()

    async def claim_columns_for_sync(
        self, contacts: Sequence[str], times: Sequence[int]
    ) -> Claim:  # claim_for_sync calls it too
        return self._watch(await super().claim_columns_for_sync(contacts, times))

    async def claim_for_points(
        self, contacts: Sequence[str], token: str | None = None
    ) -> Claim:
        return self._watch(await super().claim_for_points(contacts, token))

    def _watch(self, claim: Claim) -> Claim:
        if claim.busy:
            self.met_busy.set()
        return claim


@pytest.fixture
def guard(parts: Parts) -> WatchedGuard:
    return WatchedGuard(parts.redis, claim_ttl_seconds=60, marker_ttl_seconds=600)


async def until_pushed(remotes: FakeRemotes, contact: str) -> None:
    async with asyncio.timeout(10):
        while contact not in remotes.pushed_contacts():
            await asyncio.sleep(0.01)


async def test_sync_waits_for_a_transaction_push_then_drops_its_older_balance(
    parts: Parts, remotes: FakeRemotes, guard: WatchedGuard
) -> None:
    remotes.add_page((A, 10.0, T2), (B, 20.0, T2))
    held = await guard.claim_for_points([A])  # a point transaction is pushing A right now
    run = asyncio.create_task(run_sync(parts.settings, parts.store, parts.redis,
                                       parts.treazure, parts.engage, guard=guard))
    await until_pushed(remotes, B)
    assert A not in remotes.pushed_contacts()  # waiting for the transaction's claim
    await guard.release_points(held.token, [A], [(A, us(T3))])
    summary = await run
    assert summary.status == "succeeded"
    assert A not in remotes.pushed_contacts()  # its balance (T2) is older than T3's
    assert (summary.counts.stale, summary.counts.pushed) == (1, 1)


async def test_sync_pushes_after_an_older_transaction_push(
    parts: Parts, remotes: FakeRemotes, guard: WatchedGuard
) -> None:
    remotes.add_page((A, 10.0, T2))
    held = await guard.claim_for_points([A])
    run = asyncio.create_task(run_sync(parts.settings, parts.store, parts.redis,
                                       parts.treazure, parts.engage, guard=guard))
    await asyncio.wait_for(guard.met_busy.wait(), 10)
    assert remotes.pushed_contacts() == []
    await guard.release_points(held.token, [A], [(A, us(T1))])
    summary = await run
    assert remotes.pushed_contacts() == [A] and summary.counts.pushed == 1


async def test_a_transaction_never_overwrites_a_newer_sync_push(
    parts: Parts, remotes: FakeRemotes, guard: WatchedGuard
) -> None:
    # The sync pushed A's balance as of T3, and its write-behind has just recorded it.
    sync_claim = await guard.claim_for_sync([(A, us(T3))])
    parts.store.save_contact_states([(A, 2000, us(T3), 1)])
    await guard.release_sync([sync_claim.token])
    ledger = Ledger(parts.store)
    older = validate_request(A, 5, "bonus", "ref-older")
    newer = validate_request(B, 5, "bonus", "ref-newer")
    for request, at in ((older, T2), (newer, T2)):
        ledger.record(request, "task")
        ledger.booked(request.reference, 1500, us(at))
    flow = FlowParts(parts.settings, parts.store, parts.redis, parts.treazure, parts.engage,
                     guard)
    assert await drain(flow) == 2
    assert remotes.pushed_contacts() == [B]  # A's T2 balance is older than the sync's T3
    assert ledger.get("ref-older").state == "applied"  # covered by the newer balance
    assert "newer balance" in (ledger.get("ref-older").reason or "")
    assert ledger.get("ref-newer").state == "applied"
    # What the transaction sent is now guarded against an older sync row.
    assert (await guard.claim_for_sync([(B, us(T1))])).newer == [0]


async def test_a_transaction_waits_while_the_sync_pushes_its_contact(
    parts: Parts, remotes: FakeRemotes, guard: WatchedGuard
) -> None:
    ledger = Ledger(parts.store)
    request = validate_request(A, 5, "bonus", "ref-wait")
    ledger.record(request, "task")
    ledger.booked(request.reference, 1500, us(T3))
    # The sync is pushing A (older) right now.
    sync_claim = await guard.claim_for_sync([(A, us(T2))])
    flow = FlowParts(parts.settings, parts.store, parts.redis, parts.treazure, parts.engage,
                     guard)
    assert await drain(flow) == 0
    assert guard.met_busy.is_set()
    assert remotes.pushed_contacts() == []  # not while the sync's push is out
    # The row waits a moment; pointsync.push_points schedules itself for then.
    wait = seconds_until_due(parts.store)
    assert wait is not None and wait <= BUSY_RETRY_SECONDS
    parts.store.save_contact_states([(A, 900, us(T2), 1)])  # its write-behind, then the flush
    await guard.release_sync([sync_claim.token])
    await asyncio.sleep(wait)  # the pause push_points takes (its countdown), not a sync point
    assert await drain(flow) == 1
    assert remotes.pushed_contacts() == [A]
    assert ledger.get("ref-wait").state == "applied"
