"""The lease a worker holds on one outbox row (a ledger row it books, a relay delivery it
sends) while it works on it: short, renewed while the work runs, the work cut short before
the lease could run out unrenewed."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Protocol

from worker.base.aio import cancel_and_wait
from worker.store.engine import utcnow
from worker.store.outbox import LeaseLost

log = logging.getLogger("pointsync.lease")


class Holder(Protocol):
    """The table a lease is held on (the points ledger, an outbox)."""

    def renew(self, key: str, lease: datetime, lease_seconds: float, /) -> datetime: ...

    def renew_sending(self, key: str, lease: datetime, lease_seconds: float, /) -> datetime: ...


class Lease:
    """A worker's hold on one row: short, and renewed while the work runs.

    A dead worker's row is free again one lease after its last renewal (not after the
    longest the work could take). Every move gives `until`, the row's lease_until as last
    renewed; the keeper (see `kept`) renews it every third of the lease and cuts the work
    short before the lease could run out unrenewed, so no request of ours is still out
    when a second worker may take the row.
    """

    def __init__(self, key: str, until: datetime, seconds: float) -> None:
        self.key, self.until, self.seconds = key, until, seconds
        self._deadline: asyncio.Timeout | None = None  # set while `kept` guards the work

    def renew(self, holder: Holder, *, sending: bool = False) -> None:
        """Extend the lease to a full one from now (and the work's deadline), or LeaseLost
        (and the guarded work is cancelled at once). `sending`: the row is also marked
        uncertain, its attempt counted, as a request is about to leave."""
        try:
            if sending:
                self.until = holder.renew_sending(self.key, self.until, self.seconds)
            else:
                self.until = holder.renew(self.key, self.until, self.seconds)
        except LeaseLost:
            self._cut(at_once=True)
            raise
        self._cut(at_once=False)

    @contextlib.asynccontextmanager
    async def kept(self, holder: Holder) -> AsyncIterator[None]:
        """Keep the lease while the block runs; the block is cancelled (TimeoutError) a
        margin before the lease would run out unrenewed, or at once when it is lost."""
        async with asyncio.timeout(None) as deadline:
            self._deadline = deadline
            self._cut(at_once=False)
            keeper = asyncio.ensure_future(self._keep(holder))
            try:
                yield
            finally:
                self._deadline = None
                await cancel_and_wait(keeper)

    async def _keep(self, holder: Holder) -> None:
        while True:
            await asyncio.sleep(self.seconds / 3)
            try:
                self.renew(holder)
            except LeaseLost:
                log.warning("%s: lease lost to another worker; stopping", self.key)
                return
            except Exception as exc:  # the database, for a moment: the deadline stands
                log.warning("%s: lease not renewed (%s)", self.key, exc)

    def _cut(self, *, at_once: bool) -> None:
        """Move the guarded work's deadline: now, or a margin before the lease runs out
        (the margin leaves the cancelled work time to let go before anyone may claim)."""
        if self._deadline is None:
            return
        now = asyncio.get_running_loop().time()
        left = (self.until - utcnow()).total_seconds() - min(2.0, self.seconds / 6)
        self._deadline.reschedule(now if at_once else now + left)
