"""The per-contact claims that keep the sync and point transactions from overwriting each
other's newer balance in Engage (fakeredis with Lua)."""

from __future__ import annotations

import fakeredis
import pytest

from worker.store.pushguard import PREFIX, PushGuard

A, B, C = "contact-a", "contact-b", "contact-c"


@pytest.fixture
def guard() -> PushGuard:
    return PushGuard(fakeredis.FakeAsyncRedis(), claim_ttl_seconds=60, marker_ttl_seconds=600)


async def test_a_transaction_claim_makes_the_sync_wait_until_released(guard: PushGuard) -> None:
    points = await guard.claim_for_points([A, B])
    assert points.claimed == [0, 1]
    sync = await guard.claim_for_sync([(B, 20), (C, 20)])
    assert (sync.claimed, sync.busy) == ([1], [0])
    await guard.release_points(points.token, [A, B], [])
    assert (await guard.claim_for_sync([(B, 20)])).claimed == [0]


async def test_a_sync_batch_makes_transactions_wait_until_its_flush(guard: PushGuard) -> None:
    sync = await guard.claim_for_sync([(A, 10), (B, 10)])
    points = await guard.claim_for_points([B, C])
    assert (points.busy, points.claimed) == ([0], [1])
    await guard.release_sync([sync.token])  # the write-behind committed the batch
    assert (await guard.claim_for_points([B], token=points.token)).claimed == [0]


async def test_a_transaction_push_marks_older_sync_rows_as_newer_elsewhere(
    guard: PushGuard,
) -> None:
    points = await guard.claim_for_points([A])
    await guard.release_points(points.token, [A], [(A, 100)])
    sync = await guard.claim_for_sync([(A, 99), (B, 99)])
    assert sync.newer == [0] and sync.claimed == [1]
    # Equal or newer goes through (the sync's own guard then decides unchanged or push).
    assert (await guard.claim_for_sync([(A, 100)])).claimed == [0]


async def test_a_release_by_a_stranger_does_not_free_the_claim(guard: PushGuard) -> None:
    held = await guard.claim_for_points([A])
    await guard.release_points("someone-else", [A], [])
    assert (await guard.claim_for_sync([(A, 1)])).busy == [0]
    assert (await guard.claim_for_points([A])).busy == [0]
    await guard.release_points(held.token, [A], [])
    assert (await guard.claim_for_points([A])).claimed == [0]


async def test_markers_only_move_forward(guard: PushGuard) -> None:
    for us in (300, 100):
        claim = await guard.claim_for_points([A])
        await guard.release_points(claim.token, [A], [(A, us)])
    assert (await guard.claim_for_sync([(A, 299)])).newer == [0]


async def test_expired_claims_batches_and_markers_count_as_absent_and_are_pruned() -> None:
    redis = fakeredis.FakeAsyncRedis()
    guard = PushGuard(redis, claim_ttl_seconds=0, marker_ttl_seconds=0)
    await guard.claim_for_points([A])  # its holder dies: the claim expires at once
    await guard.claim_for_sync([(B, 1)])  # a sync that dies mid-run
    assert (await guard.claim_for_sync([(A, 1)])).claimed == [0]
    assert (await guard.claim_for_points([B])).claimed == [0]
    held = await guard.claim_for_points([C])
    await guard.release_points(held.token, [C], [(C, 500)])  # a marker, expired at once
    assert (await guard.claim_for_sync([(C, 1)])).claimed == [0]
    await guard.prune()  # gone by prune, or with their keys' own TTL
    assert await redis.hlen(PREFIX + "claims") == await redis.hlen(PREFIX + "sent") == 0


async def test_a_full_batch_is_one_call_with_every_status(guard: PushGuard) -> None:
    rows = [(f"contact-{i:04d}", 1000 + i) for i in range(1000)]
    held = await guard.claim_for_points([c for c, _ in rows[:10]])
    await guard.release_points(held.token, [c for c, _ in rows[:5]],
                               [(c, 5000) for c, _ in rows[:5]])
    claim = await guard.claim_for_sync(rows)
    assert claim.newer == list(range(5))
    assert claim.busy == list(range(5, 10))
    assert claim.claimed == list(range(10, 1000))


async def test_a_sync_claim_answers_one_string_of_status_digits() -> None:
    """A reply of a thousand integers cost the client more to parse than the claim itself:
    the script answers one digit per contact (0 claimed, 1 busy, 2 newer sent)."""
    redis = fakeredis.FakeAsyncRedis()
    guard = PushGuard(redis, claim_ttl_seconds=60, marker_ttl_seconds=600)
    held = await guard.claim_for_points([A, B])
    await guard.release_points(held.token, [A], [(A, 50)])
    replies: list[object] = []
    script = guard._claim_sync

    async def spy(**kwargs: object) -> object:
        replies.append(reply := await script(**kwargs))
        return reply

    guard._claim_sync = spy  # type: ignore[assignment]
    claim = await guard.claim_for_sync([(A, 10), (B, 10), (C, 10)])
    assert replies == [b"210"]
    assert (claim.newer, claim.busy, claim.claimed) == ([0], [1], [2])
