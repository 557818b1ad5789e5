"""Flow 1: the balance sync, Treazure → Engage.

One run: take the run lock, work out the window, stream the Balances/Get job's pages, and
push what changed to Engage in batches of up to 1,000, while the next pages are fetched.

Contacts are spread over `ENGAGE_PUSH_CONCURRENCY` lanes by hash; a lane handles its
batches one after another, so two pushes for one contact are never in flight together and
arrive in the order they were read. Before each push the lane compares every row with what
Engage was last sent (the store's `contact_balances`):
- older than what was sent → `stale`, never sent;
- equal to what was sent → `unchanged`, not sent again;
- anything else is pushed, and recorded as sent only once Engage accepted it.
Duplicates inside a run collapse to the newest `mutatedAt` (`unique` counts contacts).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from worker.engage import BalanceRow, EngageClient
from worker.locks import held_lock
from worker.settings import Settings
from worker.store import Store, utcnow
from worker.treazure import BalanceEntry, MalformedEntry, TreazureClient

log = logging.getLogger("pointsync.sync")

RUN_LOCK = "pointsync:lock:sync_balances"
PROGRESS_EVERY_SECONDS = 2.0


class InvalidArgument(ValueError):
    """A task argument broke a rule; raised before any remote call."""


@dataclass
class Counts:
    fetched: int = 0
    unique_contacts: int = 0
    unchanged: int = 0
    stale: int = 0
    pushed: int = 0
    rejected: int = 0


@dataclass
class SyncSummary:
    status: str
    run_id: int | None
    window_from: str | None = None
    window_to: str | None = None
    duration_seconds: float = 0.0
    counts: Counts = field(default_factory=Counts)
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(data.pop("counts"))
        return data


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime
    explicit: bool


def parse_time_argument(name: str, value: str | None) -> datetime | None:
    if value is None or value == "":
        return None
    try:
        moment = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        raise InvalidArgument(f"{name}: must be an ISO-8601 time, got {value!r}") from None
    if moment.tzinfo is None:
        raise InvalidArgument(f"{name}: must name its timezone (e.g. 2026-11-21T08:00:00Z)")
    return moment


def compute_window(
    settings: Settings,
    now: datetime,
    watermark: datetime | None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Window:
    """No gap: from the last success less an overlap (first run: the last 2 h) to now + 2 h."""
    if watermark is None:
        default_start = now - timedelta(seconds=settings.SYNC_FIRST_WINDOW_SECONDS)
    else:
        default_start = watermark - timedelta(seconds=settings.SYNC_OVERLAP_SECONDS)
    start = since or default_start
    end = until or now + timedelta(seconds=settings.SYNC_LOOKAHEAD_SECONDS)
    if start >= end:
        raise InvalidArgument(f"since: must be before until ({start:%Y-%m-%dT%H:%M:%SZ} "
                              f">= {end:%Y-%m-%dT%H:%M:%SZ})")
    return Window(start, end, explicit=since is not None or until is not None)


class _Lanes:
    """The push side of a run: per-lane buffers, the guard, pushes and bookkeeping."""

    def __init__(self, store: Store, engage: EngageClient, run_id: int, settings: Settings):
        self.store = store
        self.engage = engage
        self.run_id = run_id
        self.batch_size = settings.ENGAGE_BATCH_SIZE
        self.count = settings.ENGAGE_PUSH_CONCURRENCY
        self.counts = Counts()
        self.duplicates_in_buffer = 0
        self.buffers: list[dict[str, BalanceEntry]] = [{} for _ in range(self.count)]
        # Two batches queued per lane bounds memory while keeping every lane busy.
        self.queues: list[asyncio.Queue[dict[str, BalanceEntry] | None]] = [
            asyncio.Queue(maxsize=2) for _ in range(self.count)
        ]

    async def add(self, entries: list[BalanceEntry]) -> None:
        count = self.count
        for entry in entries:
            lane = hash(entry.contact_id) % count
            buffer = self.buffers[lane]
            held = buffer.get(entry.contact_id)
            if held is not None:
                self.duplicates_in_buffer += 1
                if held.mutated_us > entry.mutated_us:
                    continue
            buffer[entry.contact_id] = entry
            if len(buffer) >= self.batch_size:
                self.buffers[lane] = {}
                await self.queues[lane].put(buffer)

    async def close(self) -> None:
        for lane, buffer in enumerate(self.buffers):
            if buffer:
                await self.queues[lane].put(buffer)
            await self.queues[lane].put(None)

    async def run_lane(self, lane: int) -> None:
        queue = self.queues[lane]
        while (batch := await queue.get()) is not None:
            await self._process(batch)

    async def _process(self, batch: dict[str, BalanceEntry]) -> None:
        run_id = self.run_id
        states = self.store.contact_states(list(batch))
        counts = self.counts
        to_push: list[BalanceEntry] = []
        bumped: list[tuple[str, int, int]] = []
        seen: list[str] = []
        for contact_id, entry in batch.items():
            state = states.get(contact_id)
            if state is None or state.seen_run_id != run_id:
                counts.unique_contacts += 1
            if state is None or state.sent_mutated_us is None:
                to_push.append(entry)
            elif entry.mutated_us < state.sent_mutated_us:
                counts.stale += 1
                seen.append(contact_id)
            elif entry.cents == state.sent_cents:
                counts.unchanged += 1
                if entry.mutated_us > state.sent_mutated_us:
                    # Same balance, newer time: raise the guard so an older, different
                    # balance read later in this run is refused.
                    bumped.append((contact_id, entry.cents, entry.mutated_us))
                else:
                    seen.append(contact_id)
            else:
                to_push.append(entry)

        rejected: list[tuple[str, int | None, str | None, str]] = []
        sent = bumped
        if to_push:
            result = await self.engage.push_balances(
                [BalanceRow(e.contact_id, e.cents, e.mutated_at) for e in to_push]
            )
            for entry in to_push:
                reason = result.not_accepted.get(entry.contact_id)
                if reason is None:
                    sent.append((entry.contact_id, entry.cents, entry.mutated_us))
                else:
                    rejected.append((entry.contact_id, entry.cents, entry.mutated_at, reason))
                    seen.append(entry.contact_id)
            counts.pushed += len(to_push) - len(rejected)
            counts.rejected += len(rejected)
        self.store.save_contact_states(sent, seen, run_id, rejected)


async def run_sync(
    settings: Settings,
    store: Store,
    redis: Any,
    treazure: TreazureClient,
    engage: EngageClient,
    *,
    since: str | None = None,
    until: str | None = None,
    task_id: str | None = None,
) -> SyncSummary:
    """One sync run; returns its summary. Raises only for invalid arguments."""
    since_at = parse_time_argument("since", since)
    until_at = parse_time_argument("until", until)
    if since_at and until_at and since_at >= until_at:
        raise InvalidArgument("since: must be before until")

    async with held_lock(redis, RUN_LOCK, settings.SYNC_LOCK_TTL_SECONDS) as acquired:
        if not acquired:
            now = utcnow()
            run_id = store.start_run(
                started_at=now, window_from=since_at, window_to=until_at,
                explicit_window=since is not None or until is not None, task_id=task_id,
                status="skipped",
            )
            store.update_run(run_id, finished_at=now, duration_seconds=0.0,
                             error="another sync run holds the lock")
            log.info("sync skipped: another run is in progress (run %s)", run_id)
            return SyncSummary("skipped", run_id, error="another sync run is in progress")
        return await _locked_run(settings, store, treazure, engage, since_at, until_at, task_id)


async def _locked_run(
    settings: Settings,
    store: Store,
    treazure: TreazureClient,
    engage: EngageClient,
    since: datetime | None,
    until: datetime | None,
    task_id: str | None,
) -> SyncSummary:
    abandoned = store.abandon_running_runs()
    if abandoned:
        log.warning("marked %d run(s) left running by a stopped worker as abandoned", abandoned)
    started_at = utcnow()
    window = compute_window(settings, started_at, store.watermark(), since, until)
    run_id = store.start_run(
        started_at=started_at, window_from=window.start, window_to=window.end,
        explicit_window=window.explicit, task_id=task_id,
    )
    log.info("sync run %s started: window %s → %s", run_id, window.start, window.end)
    clock = time.monotonic()
    lanes = _Lanes(store, engage, run_id, settings)
    summary = SyncSummary("running", run_id, window.start.isoformat(), window.end.isoformat())
    try:
        await _stream(treazure, lanes, window, store, run_id)
        summary.status = "succeeded"
    except asyncio.CancelledError:
        summary.status, summary.error = "failed", "cancelled"
        raise
    except Exception as exc:  # the run records why it failed; the task returns it
        summary.status, summary.error = "failed", f"{type(exc).__name__}: {exc}"[:2000]
        log.error("sync run %s failed: %s", run_id, summary.error)
    finally:
        summary.counts = lanes.counts
        summary.duration_seconds = round(time.monotonic() - clock, 3)
        store.update_run(
            run_id, status=summary.status, finished_at=utcnow(),
            duration_seconds=summary.duration_seconds, error=summary.error,
            **asdict(lanes.counts),
        )
    log.info("sync run %s %s: %s", run_id, summary.status, asdict(summary.counts))
    return summary


async def _stream(
    treazure: TreazureClient, lanes: _Lanes, window: Window, store: Store, run_id: int
) -> None:
    """Read pages and push batches concurrently; the first failure stops both sides."""

    async def produce() -> None:
        last_progress = time.monotonic()
        async for entries, malformed in treazure.balance_pages(window.start, window.end):
            lanes.counts.fetched += len(entries) + len(malformed)
            if malformed:
                _record_malformed(store, run_id, lanes, malformed)
            await lanes.add(entries)
            if time.monotonic() - last_progress > PROGRESS_EVERY_SECONDS:
                store.update_run(run_id, **asdict(lanes.counts))
                last_progress = time.monotonic()
        await lanes.close()

    tasks = [asyncio.create_task(produce())]
    tasks += [asyncio.create_task(lanes.run_lane(i)) for i in range(lanes.count)]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _record_malformed(
    store: Store, run_id: int, lanes: _Lanes, malformed: list[MalformedEntry]
) -> None:
    lanes.counts.rejected += len(malformed)
    store.save_contact_states(
        (), (), run_id, [(m.contact_id, None, None, m.reason) for m in malformed]
    )
