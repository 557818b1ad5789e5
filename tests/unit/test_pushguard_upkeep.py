"""Guard upkeep is cheap and cluster-safe: pruning costs what expired, not what is kept;
every script names every key it touches in KEYS, all in one hash slot; no guard key lives
without a TTL (fakeredis with Lua)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import fakeredis
import pytest
from fakeredis.commands_mixins.scripting_mixin import ScriptingCommandsMixin
from redis.commands.core import AsyncScript
from redis.crc import key_slot

from worker.store.pushguard import LEGACY_PREFIX, PREFIX, PushGuard

A, B = "contact-a", "contact-b"


class KeyRecordingRedis(fakeredis.FakeAsyncRedis):
    """Remembers the KEYS of every script call."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.script_keys: set[bytes] = set()

    async def evalsha(self, sha: str, numkeys: int, *keys_and_args: Any) -> Any:
        self.script_keys.update(_bytes(k) for k in keys_and_args[:numkeys])
        return await super().evalsha(sha, numkeys, *keys_and_args)


@pytest.fixture
def lua_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, list[bytes], Any]]:
    """Every redis.call made inside a script: (command, arguments, reply)."""
    calls: list[tuple[str, list[bytes], Any]] = []
    real = ScriptingCommandsMixin._lua_redis_call

    def spy(self: Any, runtime: Any, expected: Any, op: bytes, *args: Any) -> Any:
        reply = real(self, runtime, expected, op, *args)
        calls.append((_bytes(op).decode().upper(), [_bytes(a) for a in args], reply))
        return reply

    monkeypatch.setattr(ScriptingCommandsMixin, "_lua_redis_call", spy)
    return calls


def _bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def key(name: str) -> str:
    return PREFIX + name


async def mark(guard: PushGuard, contacts: list[str], us: int = 100) -> None:
    """Point transactions pushed `contacts`: claim, then release leaving markers."""
    for start in range(0, len(contacts), 1000):  # as many as one script call may unpack
        chunk = contacts[start:start + 1000]
        claim = await guard.claim_for_points(chunk)
        await guard.release_points(claim.token, chunk, [(c, us) for c in chunk])


async def test_prune_removes_exactly_the_expired_entries() -> None:
    redis = fakeredis.FakeAsyncRedis()
    kept = PushGuard(redis, claim_ttl_seconds=60, marker_ttl_seconds=600)
    gone = PushGuard(redis, claim_ttl_seconds=0, marker_ttl_seconds=0)
    live = [f"live-{i}" for i in range(20)]
    expired = [f"expired-{i}" for i in range(7)]
    # The live entries come first: their keys' TTLs then outlast the expired entries.
    await mark(kept, live)
    held = await kept.claim_for_points(["held"])
    await mark(gone, expired)
    await gone.claim_for_points(["dead-holder-1", "dead-holder-2"])

    assert await kept.prune() == len(expired) + 2
    assert await kept.prune() == 0
    sent = {f.decode() for f in await redis.hkeys(key("sent"))}
    assert sent == set(live)
    assert {m.decode() for m in await redis.zrange(key("sent:exp"), 0, -1)} == set(live)
    assert await redis.hkeys(key("claims")) == [b"held"]
    assert await redis.zrange(key("claims:exp"), 0, -1) == [b"held"]
    # What stayed still guards.
    assert (await kept.claim_for_sync([(live[0], 99)])).newer == [0]
    assert (await kept.claim_for_sync([("held", 1)])).busy == [0]
    await kept.release_points(held.token, ["held"], [])
    assert await redis.zcard(key("claims:exp")) == 0


async def test_prune_touches_only_what_expired(
    lua_calls: list[tuple[str, list[bytes], Any]],
) -> None:
    redis = fakeredis.FakeAsyncRedis()
    kept = PushGuard(redis, claim_ttl_seconds=60, marker_ttl_seconds=600)
    gone = PushGuard(redis, claim_ttl_seconds=0, marker_ttl_seconds=0)
    await mark(kept, [f"live-{i:05d}" for i in range(10_000)])
    await mark(gone, [f"expired-{i}" for i in range(5)])
    lua_calls.clear()

    assert await kept.prune() == 5

    assert await redis.hlen(key("sent")) == 10_000
    commands = {command for command, _, _ in lua_calls}
    assert not commands & {"HGETALL", "HKEYS", "HVALS", "HSCAN", "KEYS", "SCAN"}
    # No reply and no command carries more than the expired entries (and their scores).
    assert max(len(args) for _, args, _ in lua_calls) <= 2 + 5 * 2
    assert max(len(r) if isinstance(r, list) else 1 for _, _, r in lua_calls) <= 5 * 2


async def test_prune_works_in_bounded_chunks(
    lua_calls: list[tuple[str, list[bytes], Any]],
) -> None:
    redis = fakeredis.FakeAsyncRedis()
    kept = PushGuard(redis, claim_ttl_seconds=60, marker_ttl_seconds=600)
    gone = PushGuard(redis, claim_ttl_seconds=0, marker_ttl_seconds=0, prune_chunk=100)
    await mark(kept, ["live"])  # keeps the keys alive past the expired entries
    await mark(gone, [f"expired-{i}" for i in range(450)])
    lua_calls.clear()

    assert await gone.prune() == 450
    assert await redis.hkeys(key("sent")) == [b"live"]
    removed = [len(args) - 1 for command, args, _ in lua_calls if command == "HDEL"]
    assert removed == [100, 100, 100, 100, 50]


# -- every key in KEYS, in one slot --------------------------------------------------------


async def exercise(guard: PushGuard) -> None:
    """Every guard operation once, with claims, batches and markers in play."""
    sync = await guard.claim_for_sync([(A, 10), (B, 10)])
    points = await guard.claim_for_points([A, "contact-c"])
    await guard.release_points(points.token, ["contact-c"], [("contact-c", 50)])
    await guard.release_sync([sync.token])
    again = await guard.claim_for_points([A], token=points.token)
    await guard.release_points(again.token, [A], [(A, 70)])
    await guard.claim_for_sync([(A, 60)])
    await guard.prune()


async def test_scripts_touch_only_keys_they_name_all_in_one_slot() -> None:
    redis = KeyRecordingRedis()
    guard = PushGuard(redis, claim_ttl_seconds=60, marker_ttl_seconds=600)
    await exercise(guard)
    assert {key_slot(k) for k in redis.script_keys} == {key_slot(PREFIX.encode())}
    # Every key the guard left in Redis was written by a script that named it.
    assert set(await redis.keys("*")) <= redis.script_keys


def guard_scripts() -> Iterator[tuple[str, str]]:
    guard = PushGuard(fakeredis.FakeAsyncRedis(), claim_ttl_seconds=1, marker_ttl_seconds=1)
    found = [(name, value.script) for name, value in vars(guard).items()
             if isinstance(value, AsyncScript)]
    assert len(found) >= 4
    yield from found


CALL = re.compile(r"redis\.p?call\(\s*'(\w+)'\s*(?:,\s*([^,)]+))?")
FROM_KEYS = re.compile(r"^KEYS\[[^\]]+\]$")
FUNCTION = re.compile(r"local function (\w+)\(([^)]*)\)")


def key_bound_names(source: str) -> set[str]:
    """Names that only ever hold KEYS[...]: locals assigned from KEYS, and function
    parameters that every call of their function fills with KEYS or such a local."""
    names = set()
    for name, value in re.findall(r"local (\w+) = ([^\n]+)", source):
        if FROM_KEYS.match(value.strip()):
            names.add(name)
    assignments = re.findall(r"(?<![\w.])(\w+) = ", source)
    names = {n for n in names if assignments.count(n) == 1}
    functions = FUNCTION.findall(source)
    for _ in functions:  # a parameter may be filled from another function's parameter
        for function, params in functions:
            calls = re.findall(rf"(?<!function )\b{function}\(([^)]*)\)", source)
            for position, param in enumerate(p.strip() for p in params.split(",")):
                passed = [c.split(",")[position].strip() for c in calls if c]
                # A function nobody calls touches nothing.
                if all(FROM_KEYS.match(p) or p in names for p in passed):
                    names.add(param)
    return names


@pytest.mark.parametrize(("name", "source"), list(guard_scripts()))
def test_every_redis_call_takes_its_key_from_KEYS(name: str, source: str) -> None:
    allowed = key_bound_names(source)
    for command, first in CALL.findall(source):
        if command.upper() == "TIME":
            continue
        first = first.strip()
        assert FROM_KEYS.match(first) or first in allowed, \
            f"{name}: redis.call('{command}', {first}, …) names a key not taken from KEYS"


@pytest.mark.parametrize(("name", "source"), list(guard_scripts()))
def test_no_script_reads_a_whole_structure(name: str, source: str) -> None:
    commands = {c.upper() for c, _ in CALL.findall(source)}
    assert not commands & {"HGETALL", "HKEYS", "HVALS", "SMEMBERS", "KEYS", "SCAN", "HSCAN"}
    for line in source.splitlines():
        if "'ZRANGEBYSCORE'" in line:
            assert "'LIMIT'" in line, f"{name}: an unbounded ZRANGEBYSCORE"


# -- no key without a TTL ------------------------------------------------------------------


async def test_every_guard_key_expires() -> None:
    redis = fakeredis.FakeAsyncRedis()
    guard = PushGuard(redis, claim_ttl_seconds=60, marker_ttl_seconds=600)
    await exercise(guard)
    await guard.claim_for_points(["still-held"])
    await guard.claim_for_sync([("in-a-batch", 1)])
    names = await redis.keys("*")
    assert {key("claims"), key("sent"), key("batches")} <= {n.decode() for n in names}
    for name in names:
        assert await redis.pttl(name) > 0, f"{name!r} has no TTL"


async def test_a_key_ttl_never_cuts_a_longer_lived_entry_short() -> None:
    redis = fakeredis.FakeAsyncRedis()
    long_lived = PushGuard(redis, claim_ttl_seconds=60, marker_ttl_seconds=6000)
    short_lived = PushGuard(redis, claim_ttl_seconds=60, marker_ttl_seconds=60)
    await mark(long_lived, [A])
    await mark(short_lived, [B])
    assert await redis.pttl(key("sent")) > 60_000


# -- the keys of the code before -----------------------------------------------------------


async def test_old_format_keys_are_ignored_and_retired() -> None:
    redis = fakeredis.FakeAsyncRedis()
    far = 99_999_999_999_999  # ms: an expiry that never comes
    await redis.hset(LEGACY_PREFIX + "claims", A, f"old-token {far}")
    await redis.hset(LEGACY_PREFIX + "sent", B, f"500 {far}")
    await redis.zadd(LEGACY_PREFIX + "batches", {"old-batch": far})
    await redis.sadd(LEGACY_PREFIX + "batch:old-batch", A)
    guard = PushGuard(redis, claim_ttl_seconds=60, marker_ttl_seconds=600)

    # Not read: the old code's claims, batches and markers do not hold these contacts.
    assert (await guard.claim_for_points([A])).claimed == [0]
    assert (await guard.claim_for_sync([(B, 1)])).claimed == [0]
    await exercise(guard)

    for name in ("claims", "sent", "batches"):
        assert 0 < await redis.pttl(LEGACY_PREFIX + name) <= 24 * 3600 * 1000


# -- what the new structure must not change ------------------------------------------------


async def test_a_transaction_sees_a_sync_batch_claimed_since_its_last_claim() -> None:
    redis = fakeredis.FakeAsyncRedis()
    points = PushGuard(redis, claim_ttl_seconds=60, marker_ttl_seconds=600)
    sync = PushGuard(redis, claim_ttl_seconds=60, marker_ttl_seconds=600)
    assert (await points.claim_for_points([B])).claimed == [0]  # knows of no batch
    batches = [await sync.claim_for_sync([(f"contact-{i}", 1), (A, 1)]) for i in range(3)]
    assert (await points.claim_for_points([A, "contact-1", "contact-9"])).busy == [0, 1]
    await sync.release_sync([b.token for b in batches[:2]])
    assert (await points.claim_for_points([A, "contact-1"])).busy == [0]
    await sync.release_sync([batches[2].token])
    assert (await points.claim_for_points([A])).claimed == [0]


async def test_an_expired_marker_does_not_hold_back_an_older_one() -> None:
    redis = fakeredis.FakeAsyncRedis()
    kept = PushGuard(redis, claim_ttl_seconds=60, marker_ttl_seconds=600)
    gone = PushGuard(redis, claim_ttl_seconds=60, marker_ttl_seconds=0)
    await mark(kept, [B])  # keeps the keys alive past the expired marker
    await mark(gone, [A], us=300)  # expired at once: absent, pruned or not
    await mark(kept, [A], us=100)
    assert (await kept.claim_for_sync([(A, 99)])).newer == [0]
