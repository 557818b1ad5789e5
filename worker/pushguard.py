"""One pusher at a time per contact, across flows: the no-stale-overwrite rule between the
balance sync and point transactions.

Engage overwrites a balance with whatever arrives last, so the check "is this balance newer
than what Engage was sent?" and the push itself must not interleave with another flow's
check and push for the same contact. Before a push, each flow *claims* its contacts in one
atomic Lua call, which both records its claim and looks for the other flow's:

- a sync batch is one Redis set of contacts (`batch:{token}`), kept from its claim until
  the run's write-behind has committed what it pushed to the database, because a point
  transaction reads its guard state from the database. A transaction's contact in such a
  set is `busy` and waits a moment;
- a point transaction claims contacts in the hash `claims`, and its push leaves a marker in
  the hash `sent` (its mutated time, kept for a task time limit, longer than any sync run),
  because a running sync read its guard state from the database before that push. A sync
  row older than a marker is `newer` elsewhere and is not sent.

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

# A sync batch costs a set (C-level SADD) and two hash lookups, not a write per contact.
# Contacts and times travel as one newline-separated string each: thousands of separate
# arguments cost more to encode than the work itself. Expired claims and markers count as
# absent. Times come from Redis's own clock, so workers with skewed clocks agree.

_HELPERS = """
local function split(text, numbers)
  local out = {}
  for item in string.gmatch(text, '[^\\n]+') do
    out[#out + 1] = numbers and tonumber(item) or item
  end
  return out
end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- "first second" → first, tonumber(second).
local function pair(value)
  local gap = string.find(value, ' ', 1, true)
  return string.sub(value, 1, gap - 1), tonumber(string.sub(value, gap + 1))
end
"""

# ARGV: prefix, token, ttl ms, contacts, mutated µs. One status per contact.
_CLAIM_SYNC = _HELPERS + """
local prefix, token, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
local cids, times = split(ARGV[4], false), split(ARGV[5], true)
local now = now_ms()
local holders = redis.call('HMGET', prefix .. 'claims', unpack(cids))
local markers = redis.call('HMGET', prefix .. 'sent', unpack(cids))
local out, taken = {}, {}
for i = 1, #cids do
  local status = 0
  if holders[i] then
    local _, expiry = pair(holders[i])
    if expiry > now then status = 1 end
  end
  if status == 0 and markers[i] then
    local us, expiry = pair(markers[i])
    if expiry > now and tonumber(us) > times[i] then status = 2 end
  end
  if status == 0 then taken[#taken + 1] = cids[i] end
  out[i] = status
end
if #taken > 0 then
  local batch = prefix .. 'batch:' .. token
  redis.call('SADD', batch, unpack(taken))
  redis.call('PEXPIRE', batch, ttl)
  redis.call('ZADD', prefix .. 'batches', now + ttl, token)
end
return out
"""

# ARGV: prefix, token, ttl ms, contacts. A contact in a live sync batch, or claimed by
# another transaction, is busy.
_CLAIM_POINTS = _HELPERS + """
local prefix, token, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
local cids = split(ARGV[4], false)
local now = now_ms()
redis.call('ZREMRANGEBYSCORE', prefix .. 'batches', '-inf', now)
local batches = redis.call('ZRANGE', prefix .. 'batches', 0, -1)
local holders = redis.call('HMGET', prefix .. 'claims', unpack(cids))
local out, taken = {}, {}
local busy = {}
for _, batch in ipairs(batches) do
  local member = redis.call('SMISMEMBER', prefix .. 'batch:' .. batch, unpack(cids))
  for i = 1, #cids do
    if member[i] == 1 then busy[i] = true end
  end
end
for i = 1, #cids do
  if not busy[i] and holders[i] then
    local holder, expiry = pair(holders[i])
    busy[i] = holder ~= token and expiry > now
  end
  if busy[i] then
    out[i] = 1
  else
    taken[#taken + 1] = cids[i]
    taken[#taken + 1] = token .. ' ' .. (now + ttl)
    out[i] = 0
  end
end
if #taken > 0 then redis.call('HSET', prefix .. 'claims', unpack(taken)) end
return out
"""

# ARGV: prefix, token, marker ttl ms, released contacts, pushed contacts, their µs. The
# markers are set before the claims go, so no sync push can slip in between; a marker
# only ever moves forward.
_RELEASE_POINTS = _HELPERS + """
local prefix, token, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
local released, pushed, times = split(ARGV[4], false), split(ARGV[5], false), split(ARGV[6], true)
local now = now_ms()
if #pushed > 0 then
  local known = redis.call('HMGET', prefix .. 'sent', unpack(pushed))
  local fields = {}
  for i = 1, #pushed do
    local us = -1
    if known[i] then us = tonumber((pair(known[i]))) end
    if us < times[i] then
      fields[#fields + 1] = pushed[i]
      fields[#fields + 1] = string.format('%d', times[i]) .. ' ' .. (now + ttl)
    end
  end
  if #fields > 0 then redis.call('HSET', prefix .. 'sent', unpack(fields)) end
end
if #released > 0 then
  local holders = redis.call('HMGET', prefix .. 'claims', unpack(released))
  local mine = {}
  for i = 1, #released do
    if holders[i] and (pair(holders[i])) == token then mine[#mine + 1] = released[i] end
  end
  if #mine > 0 then redis.call('HDEL', prefix .. 'claims', unpack(mine)) end
end
return 0
"""

# ARGV: prefix. Drops expired claims and markers (a dead holder's, old pushes').
_PRUNE = _HELPERS + """
local now, dropped = now_ms(), 0
for _, name in ipairs({'claims', 'sent'}) do
  local key = ARGV[1] .. name
  local entries = redis.call('HGETALL', key)
  local gone = {}
  for i = 1, #entries, 2 do
    local _, expiry = pair(entries[i + 1])
    if expiry <= now then gone[#gone + 1] = entries[i] end
    if #gone >= 3000 then
      redis.call('HDEL', key, unpack(gone))
      dropped = dropped + #gone
      gone = {}
    end
  end
  if #gone > 0 then
    redis.call('HDEL', key, unpack(gone))
    dropped = dropped + #gone
  end
end
redis.call('ZREMRANGEBYSCORE', ARGV[1] .. 'batches', '-inf', now)
return dropped
"""


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
        self._claim_sync = redis.register_script(_CLAIM_SYNC)
        self._claim_points = redis.register_script(_CLAIM_POINTS)
        self._release_points = redis.register_script(_RELEASE_POINTS)
        self._prune = redis.register_script(_PRUNE)

    @classmethod
    def for_settings(cls, redis: Redis, settings: Settings) -> PushGuard:
        """Claims outlive the longest push with all its retries and the write-behind after
        it; markers outlive any sync run."""
        longest_push = settings.HTTP_MAX_ATTEMPTS * (
            settings.HTTP_TIMEOUT_SECONDS + settings.HTTP_MAX_BACKOFF_SECONDS) + 60
        return cls(redis, claim_ttl_seconds=longest_push,
                   marker_ttl_seconds=settings.TASK_TIME_LIMIT_SECONDS + 600)

    async def claim_for_sync(self, rows: Sequence[tuple[str, int]]) -> Claim:
        """Claim a sync batch of (contact, mutated µs) rows. The claim lasts until
        `release_sync` (after the write-behind committed the batch, or when nothing was
        pushed): until then a point transaction for these contacts waits."""
        claim = Claim(uuid.uuid4().hex)
        if rows:
            contacts, times = _columns(rows)
            statuses = await self._claim_sync(keys=[], args=[
                self._prefix, claim.token, self._claim_ttl_ms, contacts, times])
            _sort(claim, statuses)
        return claim

    async def release_sync(self, tokens: Iterable[str]) -> None:
        names = list(tokens)
        if names:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.delete(*(f"{self._prefix}batch:{token}" for token in names))
                pipe.zrem(f"{self._prefix}batches", *names)
                await pipe.execute()

    async def claim_for_points(
        self, contacts: Sequence[str], token: str | None = None
    ) -> Claim:
        """Claim contacts for a point transaction push; pass the token again to retry the
        busy ones under the same claim."""
        claim = Claim(token or uuid.uuid4().hex)
        if contacts:
            statuses = await self._claim_points(keys=[], args=[
                self._prefix, claim.token, self._claim_ttl_ms, "\n".join(contacts)])
            _sort(claim, statuses)
        return claim

    async def release_points(
        self, token: str, contacts: Sequence[str], pushed: Iterable[tuple[str, int]]
    ) -> None:
        """Let go of `contacts`, leaving a marker for each (contact, mutated µs) pushed."""
        pushed_contacts, times = _columns(pushed)
        await self._release_points(keys=[], args=[
            self._prefix, token, self._marker_ttl_ms, "\n".join(contacts),
            pushed_contacts, times])

    async def prune(self) -> int:
        """Drop expired claims and markers; returns how many went."""
        return int(await self._prune(keys=[], args=[self._prefix]))


def _sort(claim: Claim, statuses: Sequence[int]) -> None:
    buckets = (claim.claimed, claim.busy, claim.newer)
    for index, status in enumerate(statuses):
        buckets[int(status)].append(index)


def _columns(rows: Iterable[tuple[str, int]]) -> tuple[str, str]:
    """(contacts, times) as newline-separated strings: one script argument each."""
    pairs = list(rows)
    return "\n".join(c for c, _ in pairs), "\n".join(str(us) for _, us in pairs)
