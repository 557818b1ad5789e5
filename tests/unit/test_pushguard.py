"""The per-contact claims that keep the sync and point transactions from overwriting each
other's newer balance in Engage (fakeredis with Lua)."""

from __future__ import annotations

import fakeredis
import pytest

from worker.pushguard import PushGuard

A, B, C = "contact-a", "contact-b", "contact-c"


@pytest.fixture
def guard() -> PushGuard:
    return PushGuard(fakeredis.FakeAsyncRedis(), claim_ttl_seconds=60, marker_ttl_seconds=600)


async def test_a_claimed_contact_is_busy_for_another_holder_until_released(
    guard: PushGuard,
) -> None:
    first = await guard.claim([(A, 10), (B, 10)])
    assert first.claimed == [0, 1]
    second = await guard.claim([(B, 20), (C, 20)])
    assert (second.claimed, second.busy) == ([1], [0])
    await guard.release(first.token, [A, B], [(A, 10), (B, 10)], flow="points")
    again = await guard.claim([(B, 20)], token=second.token)
    assert again.claimed == [0]


async def test_a_points_push_makes_an_older_sync_row_newer_elsewhere(guard: PushGuard) -> None:
    points = await guard.claim([(A, 100)])
    await guard.release(points.token, [A], [(A, 100)], flow="points")
    sync = await guard.claim([(A, 99), (B, 99)])
    assert sync.newer == [0] and sync.claimed == [1]
    # Equal or newer is still allowed through (the flow's own guard decides unchanged).
    later = await guard.claim([(A, 100)])
    assert later.claimed == [0]


async def test_a_sync_push_guards_points_until_flushed_then_is_forgotten(
    guard: PushGuard,
) -> None:
    sync = await guard.claim([(A, 200)])
    await guard.release(sync.token, [A], [(A, 200)], flow="sync")
    assert await guard.unflushed() == {A: 200}
    points = await guard.claim([(A, 150)])
    assert points.newer == [0]
    await guard.forget_flushed([(A, 200)])
    assert await guard.unflushed() == {}


async def test_forget_keeps_a_newer_unflushed_push(guard: PushGuard) -> None:
    first = await guard.claim([(A, 1)])
    await guard.release(first.token, [A], [(A, 1)], flow="sync")
    second = await guard.claim([(A, 2)])
    await guard.release(second.token, [A], [(A, 2)], flow="sync")
    await guard.forget_flushed([(A, 1)])
    assert await guard.unflushed() == {A: 2}


async def test_a_release_by_a_stranger_does_not_free_the_claim(guard: PushGuard) -> None:
    held = await guard.claim([(A, 1)])
    await guard.release("someone-else", [A], (), flow="points")
    assert (await guard.claim([(A, 1)])).busy == [0]
    await guard.release(held.token, [A], (), flow="points")
    assert (await guard.claim([(A, 1)])).claimed == [0]


async def test_an_expired_claim_is_free() -> None:
    guard = PushGuard(fakeredis.FakeAsyncRedis(), claim_ttl_seconds=0, marker_ttl_seconds=60)
    await guard.claim([(A, 1)])
    assert (await guard.claim([(A, 1)])).claimed == [0]


async def test_markers_only_move_forward(guard: PushGuard) -> None:
    for us in (300, 100):
        claim = await guard.claim([(A, us)])
        await guard.release(claim.token, [A], [(A, us)] if claim.claimed else (),
                            flow="points")
    assert (await guard.claim([(A, 299)])).newer == [0]
