"""One pusher at a time per contact, across flows: the no-stale-overwrite rule between the
balance sync and point transactions.

Engage overwrites a balance with whatever arrives last, so the check "is this balance newer
than what Engage was sent?" and the push itself must not interleave with another flow's
check and push for the same contact. Before a push, each flow *claims* its contacts in one
atomic Lua call, which both records its claim and looks for the other flow's:

- a sync batch is one Redis set of contacts (`batch:<token>`, listed with its expiry in the
  sorted set `batches`), kept from its claim until the run's write-behind has committed what
  it pushed to the database, because a point transaction reads its guard state from the
  database. A transaction's contact in such a set is `busy` and waits a moment;
- a point transaction claims contacts in the hash `claims`, and its push leaves a marker in
  the hash `sent` (its mutated time, kept for a task time limit, longer than any sync run),
  because a running sync read its guard state from the database before that push. A sync
  row older than a marker is `newer` elsewhere and is not sent.

Claims expire, so a holder that dies blocks its contacts only until then. An expired claim,
batch or marker counts as absent when it is read, so no answer depends on the cleanup.

Upkeep costs what expired, not what is kept. Each hash has a sorted set of its fields'
expiries beside it (`claims:exp`, `sent:exp`), written in the same script as the field, so
`prune` takes the expired ones off the low end in chunks of `PRUNE_CHUNK` (one short script
call each, other clients are served between them). Every key also carries a TTL at least as
long as its longest-lived entry, so a deployment whose sweeps stop leaves nothing behind.

Redis Cluster: every key lives under the hash tag `{pointsync:guard}`, so in one slot, and
every script is given every key it touches in KEYS. A sync batch stays one SADD (the sync's
hot path: 1,000 claim calls for a million contacts); the cost of reading batches falls on
the point transaction instead, which passes the sets of the batches it knows of and is sent
the live list back, to ask again, when a batch it did not name is live.

The keys of the code before (`pointsync:guard:…`, no hash tag) are not read. `prune` gives
them a day's TTL so they go; while old and new processes run side by side neither sees the
other's claims, so deploy by stopping the old workers before starting the new ones.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from redis.asyncio import Redis

from worker.base.settings import Settings
from worker.store.pushguard_scripts import CLAIM_POINTS, CLAIM_SYNC, PRUNE, RELEASE_POINTS

PREFIX = "{pointsync:guard}:"
LEGACY_PREFIX = "pointsync:guard:"
LEGACY_TTL_SECONDS = 24 * 3600
PRUNE_CHUNK = 1000
# A claim meets an unknown batch only if a sync claimed one between two round trips.
CLAIM_ATTEMPTS = 20
CLAIMED, BUSY, NEWER = 0, 1, 2


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
        prefix: str = PREFIX, prune_chunk: int = PRUNE_CHUNK,
    ) -> None:
        self._prefix = prefix
        self._claims, self._claim_expiries = f"{prefix}claims", f"{prefix}claims:exp"
        self._sent, self._sent_expiries = f"{prefix}sent", f"{prefix}sent:exp"
        self._batches = f"{prefix}batches"
        self._claim_ttl_ms = int(claim_ttl_seconds * 1000)
        self._marker_ttl_ms = int(marker_ttl_seconds * 1000)
        self._prune_chunk = prune_chunk
        self._known_batches: list[str] = []  # the live sync batches, as last seen
        self._legacy_retired = prefix != PREFIX  # only the default prefix had a before
        self._redis = redis
        self._claim_sync = redis.register_script(CLAIM_SYNC)
        self._claim_points = redis.register_script(CLAIM_POINTS)
        self._release_points = redis.register_script(RELEASE_POINTS)
        self._prune = redis.register_script(PRUNE)

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
        return await self.claim_columns_for_sync([c for c, _ in rows], [us for _, us in rows])

    async def claim_columns_for_sync(
        self, contacts: Sequence[str], times: Sequence[int]
    ) -> Claim:
        """`claim_for_sync` for rows given as two columns (contacts, mutated µs), which the
        sync's lanes build in C."""
        claim = Claim(uuid.uuid4().hex)
        if contacts:
            statuses = await self._claim_sync(
                keys=[self._claims, self._sent, self._batches, self._batch(claim.token)],
                args=[claim.token, self._claim_ttl_ms, "\n".join(contacts),
                      "\n".join(map(str, times))])
            _sort_digits(claim, _text(statuses))
        return claim

    async def release_sync(self, tokens: Iterable[str]) -> None:
        names = list(tokens)
        if names:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.delete(*(self._batch(token) for token in names))
                pipe.zrem(self._batches, *names)
                await pipe.execute()

    async def claim_for_points(
        self, contacts: Sequence[str], token: str | None = None
    ) -> Claim:
        """Claim contacts for a point transaction push; pass the token again to retry the
        busy ones under the same claim."""
        claim = Claim(token or uuid.uuid4().hex)
        if contacts:
            _sort(claim, await self._claim_points_naming_batches(claim.token, contacts))
        return claim

    async def _claim_points_naming_batches(
        self, token: str, contacts: Sequence[str]
    ) -> list[int]:
        listed = "\n".join(contacts)
        for _ in range(CLAIM_ATTEMPTS):
            batches = self._known_batches
            reply = await self._claim_points(
                keys=[self._claims, self._claim_expiries, self._batches,
                      *(self._batch(batch) for batch in batches)],
                args=[token, self._claim_ttl_ms, listed, *batches])
            if not reply or isinstance(reply[0], int):
                return reply
            self._known_batches = [_text(batch) for batch in reply[1:]]
        raise RuntimeError(f"sync batches kept changing during {CLAIM_ATTEMPTS} claims")

    async def release_points(
        self, token: str, contacts: Sequence[str], pushed: Iterable[tuple[str, int]]
    ) -> None:
        """Let go of `contacts`, leaving a marker for each (contact, mutated µs) pushed."""
        pushed_contacts, times = _columns(pushed)
        await self._release_points(
            keys=[self._claims, self._claim_expiries, self._sent, self._sent_expiries],
            args=[token, self._marker_ttl_ms, "\n".join(contacts), pushed_contacts, times])

    async def prune(self) -> int:
        """Drop expired claims and markers, a chunk per call; returns how many went."""
        await self._retire_legacy_keys()
        dropped = 0
        while True:
            claims, markers = await self._prune(
                keys=[self._claims, self._claim_expiries, self._sent, self._sent_expiries,
                      self._batches],
                args=[self._prune_chunk])
            dropped += int(claims) + int(markers)
            if max(int(claims), int(markers)) < self._prune_chunk:
                return dropped

    async def _retire_legacy_keys(self) -> None:
        """The hashes of the code before had no TTL: give them one, once, so they go."""
        if self._legacy_retired:
            return
        for name in ("claims", "sent", "batches"):
            await self._redis.expire(LEGACY_PREFIX + name, LEGACY_TTL_SECONDS, nx=True)
        self._legacy_retired = True

    def _batch(self, token: str) -> str:
        return f"{self._prefix}batch:{token}"


def _sort(claim: Claim, statuses: Sequence[int]) -> None:
    buckets = (claim.claimed, claim.busy, claim.newer)
    for index, status in enumerate(statuses):
        buckets[int(status)].append(index)


def _sort_digits(claim: Claim, statuses: str) -> None:
    """`_sort` for statuses given as one digit each; all claimed is the common case."""
    if "1" not in statuses and "2" not in statuses:
        claim.claimed.extend(range(len(statuses)))
        return
    _sort(claim, [int(status) for status in statuses])


def _columns(rows: Iterable[tuple[str, int]]) -> tuple[str, str]:
    """(contacts, times) as newline-separated strings: one script argument each."""
    pairs = list(rows)
    return "\n".join(c for c, _ in pairs), "\n".join(str(us) for _, us in pairs)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
