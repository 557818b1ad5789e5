"""One pusher at a time per contact, across flows: the no-stale-overwrite rule between the
balance sync and point transactions.

Engage overwrites a balance with whatever arrives last, so the check "is this balance newer
than what Engage was sent?" and the push itself must not interleave with another flow's
check and push for the same contact. Before a push, a flow *claims* its contacts in Redis
(one Lua call per batch); a contact claimed by the other flow is
`busy` and waits. The claim also answers `newer` when the other flow already sent a newer
balance that the caller could not know of yet:

- a point transaction's push leaves a marker `sent:{contact}` (its mutated time, kept for a
  task time limit, longer than any sync run), because a running sync read its guard state
  from the database before that push;
- a sync's push stays in the hash `unflushed` until its write-behind has committed the row to
  the database, because a transaction reads its guard state from the database.

Claims expire, so a holder that dies blocks its contacts only until then.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from redis.asyncio import Redis

from worker.settings import Settings

PREFIX = "pointsync:guard:"
CLAIMED, BUSY, NEWER = 0, 1, 2

# Claims live in one hash (contact → "token expiry-ms"), so a batch of a thousand costs a
# handful of Redis calls, not thousands; an expired claim counts as free. Times come from
# Redis's own clock, so workers with skewed clocks agree.
# ARGV: prefix, token, ttl ms, then contact, mutated µs pairs. Returns one status per pair.
_CLAIM = """
local prefix, token, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local n = (#ARGV - 3) / 2
local cids, sents = {}, {}
for i = 1, n do
  cids[i] = ARGV[2 + 2 * i]
  sents[i] = prefix .. 'sent:' .. cids[i]
end
local holders = redis.call('HMGET', prefix .. 'claims', unpack(cids))
local sent = redis.call('MGET', unpack(sents))
local pending = redis.call('HMGET', prefix .. 'unflushed', unpack(cids))
local out, taken, dropped = {}, {}, {}
local mine = token .. ' ' .. (now + ttl)
for i = 1, n do
  local us = tonumber(ARGV[3 + 2 * i])
  local holder, expiry = nil, 0
  if holders[i] then
    holder, expiry = string.match(holders[i], '^(%S+) (%d+)$')
    expiry = tonumber(expiry)
  end
  if holder and holder ~= token and expiry > now then
    out[i] = 1
  elseif tonumber(sent[i] or '-1') > us or tonumber(pending[i] or '-1') > us then
    if holder == token then dropped[#dropped + 1] = cids[i] end
    out[i] = 2
  else
    taken[#taken + 1] = cids[i]
    taken[#taken + 1] = mine
    out[i] = 0
  end
end
if #taken > 0 then redis.call('HSET', prefix .. 'claims', unpack(taken)) end
if #dropped > 0 then redis.call('HDEL', prefix .. 'claims', unpack(dropped)) end
return out
"""

# ARGV: prefix, token, flow ('sync' | 'points'), marker ttl ms, n released, their contacts,
# then contact, mutated µs pairs of what was pushed. What was pushed is remembered for the
# other flow before the claims go, so no other push can slip in between.
_RELEASE = """
local prefix, token, flow, ttl, n = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
local unflushed = prefix .. 'unflushed'
local pushed, times = {}, {}
for i = 6 + n, #ARGV, 2 do
  pushed[#pushed + 1] = ARGV[i]
  times[#times + 1] = ARGV[i + 1]
end
if #pushed > 0 and flow == 'sync' then
  local known = redis.call('HMGET', unflushed, unpack(pushed))
  local fields = {}
  for i = 1, #pushed do
    if tonumber(known[i] or '-1') < tonumber(times[i]) then
      fields[#fields + 1] = pushed[i]
      fields[#fields + 1] = times[i]
    end
  end
  if #fields > 0 then redis.call('HSET', unflushed, unpack(fields)) end
elseif #pushed > 0 then
  for i = 1, #pushed do
    local key = prefix .. 'sent:' .. pushed[i]
    if tonumber(redis.call('GET', key) or '-1') < tonumber(times[i]) then
      redis.call('SET', key, times[i], 'PX', ttl)
    end
  end
end
if n > 0 then
  local cids = {}
  for i = 1, n do cids[i] = ARGV[5 + i] end
  local holders = redis.call('HMGET', prefix .. 'claims', unpack(cids))
  local mine = {}
  for i = 1, n do
    if holders[i] and string.match(holders[i], '^(%S+) ') == token then
      mine[#mine + 1] = cids[i]
    end
  end
  if #mine > 0 then redis.call('HDEL', prefix .. 'claims', unpack(mine)) end
end
return 0
"""

# ARGV: prefix, then contact, mutated µs pairs now in the database: drop them from
# `unflushed` unless a newer push replaced them meanwhile.
_FORGET = """
local unflushed = ARGV[1] .. 'unflushed'
local cids = {}
for i = 2, #ARGV, 2 do cids[#cids + 1] = ARGV[i] end
local known = redis.call('HMGET', unflushed, unpack(cids))
local gone = {}
for i = 1, #cids do
  if known[i] == ARGV[2 * i + 1] then gone[#gone + 1] = cids[i] end
end
if #gone > 0 then redis.call('HDEL', unflushed, unpack(gone)) end
return 0
"""

# Lua's unpack() takes a few thousand values at most.
_FORGET_CHUNK = 3000


@dataclass
class Claim:
    """The outcome of one claim call: indexes into the rows passed in, by status."""

    token: str
    claimed: list[int] = field(default_factory=list)
    busy: list[int] = field(default_factory=list)
    newer: list[int] = field(default_factory=list)


class PushGuard:
    def __init__(
        self, redis: Redis, *, claim_ttl_seconds: float, marker_ttl_seconds: float,
        prefix: str = PREFIX,
    ) -> None:
        self._prefix = prefix
        self._claim_ttl_ms = int(claim_ttl_seconds * 1000)
        self._marker_ttl_ms = int(marker_ttl_seconds * 1000)
        self._redis = redis
        self._claim = redis.register_script(_CLAIM)
        self._release = redis.register_script(_RELEASE)
        self._forget = redis.register_script(_FORGET)

    @classmethod
    def for_settings(cls, redis: Redis, settings: Settings) -> PushGuard:
        """Claims outlive the longest push with all its retries; markers outlive any run."""
        longest_push = settings.HTTP_MAX_ATTEMPTS * (
            settings.HTTP_TIMEOUT_SECONDS + settings.HTTP_MAX_BACKOFF_SECONDS) + 60
        return cls(redis, claim_ttl_seconds=longest_push,
                   marker_ttl_seconds=settings.TASK_TIME_LIMIT_SECONDS + 600)

    async def claim(
        self, rows: Sequence[tuple[str, int]], token: str | None = None
    ) -> Claim:
        """Claim (contact, mutated µs) rows for a push; pass the token again to retry
        the busy ones under the same claim."""
        claim = Claim(token or uuid.uuid4().hex)
        if not rows:
            return claim
        args: list[str | int] = [self._prefix, claim.token, self._claim_ttl_ms]
        for contact_id, mutated_us in rows:
            args += (contact_id, mutated_us)
        statuses = await self._claim(keys=[], args=args)
        buckets = (claim.claimed, claim.busy, claim.newer)
        for index, status in enumerate(statuses):
            buckets[int(status)].append(index)
        return claim

    async def release(
        self, token: str, contacts: Sequence[str], pushed: Iterable[tuple[str, int]],
        *, flow: str,
    ) -> None:
        """Let go of `contacts`, remembering what was `pushed` (contact, mutated µs) for
        the other flow; `flow` is 'sync' or 'points'."""
        args: list[str | int] = [self._prefix, token, flow, self._marker_ttl_ms, len(contacts),
                                 *contacts]
        for contact_id, mutated_us in pushed:
            args += (contact_id, mutated_us)
        await self._release(keys=[], args=args)

    async def forget_flushed(self, rows: Iterable[tuple[str, int | None]]) -> None:
        """Sync pushes now committed to the database need no Redis entry any more."""
        args: list[str | int] = [self._prefix]
        for contact_id, mutated_us in rows:
            if mutated_us is None:
                continue
            args += (contact_id, mutated_us)
            if len(args) > 2 * _FORGET_CHUNK:
                await self._forget(keys=[], args=args)
                args = [self._prefix]
        if len(args) > 1:
            await self._forget(keys=[], args=args)

    async def unflushed(self) -> dict[str, int]:
        """Sync pushes a stopped run never committed (folded in by the next run)."""
        raw = await self._redis.hgetall(f"{self._prefix}unflushed")
        return {_text(k): int(v) for k, v in raw.items()}


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
