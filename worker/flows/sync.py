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

Balances Engage refused with ContactNotFound are pushed again by each sync run for
ENGAGE_NOT_FOUND_RETRY_SECONDS after their first refusal, unless a balance as new was
sent since: a contact created in Engage a little later then comes into step.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from worker.base.arguments import InvalidArgument
from worker.base.locks import LockLost, held_lock
from worker.base.logs import bind_log_context
from worker.base.money import exact_amount, utc_micros
from worker.base.settings import Settings
from worker.store.database import ContactState, Store, utcnow
from worker.store.pushguard import PushGuard
from worker.systems.engage.client import EngageClient
from worker.systems.treazure.client import BalanceEntry, MalformedEntry, TreazureClient

log = logging.getLogger("pointsync.sync")

T = TypeVar("T")
# Builds a ContactState in C (the named tuple's own __new__ is a Python call).
_state = functools.partial(tuple.__new__, ContactState)

RUN_LOCK = "pointsync:lock:sync_balances"
PROGRESS_EVERY_SECONDS = 2.0
# Rows sent are written in transactions of up to this many rows, or this often, so a
# crash makes the next run repeat at most a few seconds of pushes.
FLUSH_EVERY_ROWS = 25_000
FLUSH_EVERY_SECONDS = 2.0
# Memory bound of a run: at most this many batches (of ≤1,000 rows) wait per lane on average.
QUEUED_BATCHES_PER_LANE = 4
# Engage's reason for a contact it does not know (yet): such rows are pushed again later.
NOT_FOUND = "ContactNotFound"
RETRY_READ_CHUNK = 1000


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

    def __init__(
        self, store: Store, engage: EngageClient, guard: PushGuard, run_id: int,
        settings: Settings,
    ):
        self.store = store
        self.engage = engage
        self.guard = guard
        self.run_id = run_id
        self.batch_size = settings.ENGAGE_BATCH_SIZE
        # A heal pushes a balance even when it equals what Engage was last sent: Engage
        # was found to hold something else.
        self.force = False
        # A sync records which contacts it read (the history refresh pages through them);
        # a migration has no refresh, and skips writing a row for each balance Engage
        # already has, which is what makes resuming it cheap.
        self.track_seen = True
        self.count = settings.ENGAGE_PUSH_CONCURRENCY
        self.counts = Counts()
        self.buffers: list[dict[str, BalanceEntry]] = [{} for _ in range(self.count)]
        self.db_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sync-db-read")
        # Flushes write on a connection of their own, so reads never queue behind a large
        # transaction (SQLite's WAL lets readers go on while one writer commits). A store
        # with one shared connection (SQLite in memory) keeps everything on one thread.
        self.write_thread = self.db_thread if store.single_connection else ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="sync-db-write")
        self.flush_lock = asyncio.Lock()
        self.flush_task: asyncio.Task[None] | None = None
        self.queues: list[asyncio.Queue[dict[str, BalanceEntry] | None]] = [
            asyncio.Queue() for _ in range(self.count)
        ]
        # Batches waiting over all lanes are bounded together, not per lane: a lane held up
        # by a 429 must not stop the reader from feeding the other lanes.
        self.waiting = asyncio.Semaphore(QUEUED_BATCHES_PER_LANE * self.count)
        # What this run sent and read, not yet written to the store (see flush).
        self.pending: dict[str, ContactState] = {}
        self.flushing: dict[str, ContactState] = {}
        self.rejections: list[tuple[int, str, int | None, str | None, str]] = []
        self.flushed_at = time.monotonic()
        # Rows whose contact a point transaction was pushing at that moment: tried again
        # once the lane's input ends (the transaction's claim is short-lived).
        self.deferred: list[dict[str, BalanceEntry]] = [{} for _ in range(self.count)]
        # Claims of pushed batches, let go once the flush that records them commits.
        self.pending_tokens: list[str] = []

    async def add(self, entries: list[BalanceEntry]) -> None:
        count = self.count
        for entry in entries:
            lane = hash(entry.contact_id) % count
            buffer = self.buffers[lane]
            held = buffer.get(entry.contact_id)
            if held is not None and held.mutated_us > entry.mutated_us:
                continue
            buffer[entry.contact_id] = entry
            if len(buffer) >= self.batch_size:
                self.buffers[lane] = {}
                await self.waiting.acquire()
                self.queues[lane].put_nowait(buffer)

    async def end_of_input(self) -> None:
        for lane, buffer in enumerate(self.buffers):
            if buffer:
                await self.waiting.acquire()
                self.queues[lane].put_nowait(buffer)
            self.queues[lane].put_nowait(None)

    async def _read_db(self, call: Callable[..., T], *args: Any) -> T:
        # Off the event loop: sqlite3 and psycopg release the GIL while they work, so
        # pages are parsed and pushes sent meanwhile.
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.db_thread, functools.partial(call, *args))

    async def run_lane(self, lane: int) -> None:
        queue = self.queues[lane]
        while (batch := await queue.get()) is not None:
            try:
                await self._process(batch, lane)
            finally:
                self.waiting.release()
        pause = 0.02
        while self.deferred[lane]:
            await asyncio.sleep(pause)
            pause = min(pause * 2, 1.0)
            batch, self.deferred[lane] = self.deferred[lane], {}
            await self._process(batch, lane)

    async def _process(self, batch: dict[str, BalanceEntry], lane: int) -> None:
        run_id = self.run_id
        # A contact lives in one lane and its lane handles one batch at a time, so what
        # this lane left pending for these contacts cannot change during the awaits below.
        # A flush (by any lane) swaps `self.pending` for a new dict, so it is looked up
        # again after every await.
        known = {cid: self.pending[cid] for cid in batch if cid in self.pending}
        if self.flushing:
            flushing = self.flushing
            known.update((cid, flushing[cid]) for cid in batch
                         if cid in flushing and cid not in known)
        unknown = [cid for cid in batch if cid not in known]
        if unknown:
            known.update(await self._read_db(self.store.contact_states, unknown))
        pending = self.pending
        counts = self.counts
        force, track_seen = self.force, self.track_seen
        to_push: list[BalanceEntry] = []
        if not known:  # contacts never sent before, as in a first sync: all go
            counts.unique_contacts += len(batch)
            to_push = list(batch.values())
        for contact_id, entry in batch.items() if known else ():
            state = known.get(contact_id)
            if state is None or state.seen_run_id != run_id:
                counts.unique_contacts += 1
            if state is None or state.sent_mutated_us is None:
                to_push.append(entry)
                continue
            if entry.mutated_us < state.sent_mutated_us:
                counts.stale += 1
            elif entry.cents == state.sent_cents and not force:
                counts.unchanged += 1
                if entry.mutated_us > state.sent_mutated_us:
                    # Same balance, newer time: raise the guard so an older, different
                    # balance read later in this run is refused.
                    pending[contact_id] = _state(
                        (contact_id, entry.cents, entry.mutated_us, run_id))
                    continue
            else:
                to_push.append(entry)
                continue
            if track_seen:
                pending[contact_id] = state._replace(seen_run_id=run_id)

        if to_push:
            to_push, token = await self._claim(to_push, lane)
        if to_push:
            try:
                result = await self.engage.push_balances(to_push)
            except BaseException:
                await self.guard.release_sync([token])
                raise
            # The batch stays claimed until the flush that records it has committed.
            self.pending_tokens.append(token)
            pending = self.pending
            refused = result.not_accepted
            if not refused:
                for entry in to_push:
                    pending[entry.contact_id] = _state(
                        (entry.contact_id, entry.cents, entry.mutated_us, run_id))
            for entry in to_push if refused else ():
                reason = refused.get(entry.contact_id)
                if reason is None:
                    pending[entry.contact_id] = _state(
                        (entry.contact_id, entry.cents, entry.mutated_us, run_id))
                    continue
                state = known.get(entry.contact_id)
                pending[entry.contact_id] = state._replace(seen_run_id=run_id) if state \
                    else _state((entry.contact_id, None, None, run_id))
                self.rejections.append((run_id, entry.contact_id, entry.cents,
                                        entry.mutated_at.isoformat(), reason))
            counts.rejected += len(refused)
            counts.pushed += len(to_push) - len(refused)
        due = (len(self.pending) >= FLUSH_EVERY_ROWS
               or time.monotonic() - self.flushed_at > FLUSH_EVERY_SECONDS)
        if due and (self.flush_task is None or self.flush_task.done()):
            if self.flush_task is not None:
                self.flush_task.result()  # a failed flush fails the run here
            # In the background: the lanes go on pushing while the rows are written.
            self.flush_task = asyncio.create_task(self.flush())

    async def _claim(
        self, rows: list[BalanceEntry], lane: int
    ) -> tuple[list[BalanceEntry], str]:
        """The rows this lane may push now, under one claim token (see pushguard).

        A row whose contact a point transaction is pushing waits in `deferred`; one that
        such a push made stale is counted stale and dropped.
        """
        claim = await self.guard.claim_for_sync([(e.contact_id, e.mutated_us) for e in rows])
        deferred = self.deferred[lane]
        for index in claim.busy:
            entry = rows[index]
            held = deferred.get(entry.contact_id)
            if held is None or held.mutated_us <= entry.mutated_us:
                deferred[entry.contact_id] = entry
        self.counts.stale += len(claim.newer)
        if len(claim.claimed) == len(rows):
            return rows, claim.token
        return [rows[i] for i in claim.claimed], claim.token

    async def flush(self) -> None:
        """Write what was sent and read since the last flush, in one transaction.

        Until the write commits, the rows stay readable in `flushing`. Lost on a crash,
        they only make the next run push the same balances again, which is harmless; few
        large transactions are what keeps SQLite fast with a million random keys.
        """
        async with self.flush_lock:
            if not self.pending and not self.rejections and not self.pending_tokens:
                return
            snapshot, self.pending = self.pending, {}
            rejections, self.rejections = self.rejections, []
            tokens, self.pending_tokens = self.pending_tokens, []
            self.flushing = snapshot
            self.flushed_at = time.monotonic()
            rows = list(snapshot.values())
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self.write_thread, functools.partial(
                self.store.save_contact_states, rows, rejections))
            await self.guard.release_sync(tokens)
            # Only once committed: after a failed write the overlay keeps guarding.
            self.flushing = {}

    async def finish(self) -> None:
        """Wait for a flush under way (raising its error), then write the rest."""
        if self.flush_task is not None:
            await self.flush_task
        await self.flush()

    def stop_threads(self) -> None:
        self.db_thread.shutdown(wait=True)
        self.write_thread.shutdown(wait=True)


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
    guard: PushGuard | None = None,
    kind: str = "sync",
    progress: Callable[[Counts], None] | None = None,
) -> SyncSummary:
    """One sync run; returns its summary. Raises only for invalid arguments.

    `kind="migrate"` is the go-live copy: an explicit window that still moves the
    watermark, so the hourly sync starts where the copy began. `progress` is called with
    the counts after every page read.
    """
    guard = guard or PushGuard.for_settings(redis, settings)
    since_at = parse_time_argument("since", since)
    until_at = parse_time_argument("until", until)
    if since_at and until_at and since_at >= until_at:
        raise InvalidArgument("since: must be before until")

    if task_id is not None and store.has_running_run(task_id):
        # This very task was running when its worker died, and the broker handed it out
        # again: the dead holder's lock is about to expire, so wait for it, not skip.
        await _wait_for_lock_release(redis, settings.SYNC_LOCK_TTL_SECONDS + 5)
    async def locked(summary: SyncSummary) -> None:
        await guard.prune()
        await _locked_run(settings, store, treazure, engage, guard, since_at, until_at,
                          task_id, summary, kind, progress)

    return await under_run_lock(
        settings, store, redis, locked, kind=kind, task_id=task_id,
        window=(since_at, until_at), explicit_window=since is not None or until is not None)


async def under_run_lock(
    settings: Settings,
    store: Store,
    redis: Any,
    work: Callable[[SyncSummary], Awaitable[None]],
    *,
    kind: str,
    task_id: str | None = None,
    wait_seconds: float = 0.0,
    window: tuple[datetime | None, datetime | None] = (None, None),
    explicit_window: bool = True,
) -> SyncSummary:
    """Do `work` holding the run lock: one sync, migration or heal at a time.

    `work` fills in the summary it is given as it goes. Without the lock (still held by
    another run after `wait_seconds`) a `skipped` run is recorded instead. A run whose lock
    was lost is cancelled and ends `failed`, never `succeeded`.
    """
    summary = SyncSummary("running", None)
    try:
        async with held_lock(redis, RUN_LOCK, settings.SYNC_LOCK_TTL_SECONDS,
                             wait_seconds=wait_seconds) as acquired:
            if not acquired:
                return _record_skipped(store, kind, task_id, window, explicit_window)
            await work(summary)
    except LockLost as exc:
        summary.status, summary.error = "failed", f"LockLost: {exc}"[:2000]
        if summary.run_id is not None:
            store.update_run(summary.run_id, status="failed", error=summary.error)
        log.error("%s run %s stopped: %s", kind, summary.run_id, exc)
    return summary


def _record_skipped(
    store: Store, kind: str, task_id: str | None,
    window: tuple[datetime | None, datetime | None], explicit_window: bool,
) -> SyncSummary:
    now = utcnow()
    run_id = store.start_run(
        started_at=now, window_from=window[0], window_to=window[1],
        explicit_window=explicit_window, task_id=task_id, status="skipped", kind=kind,
    )
    store.update_run(run_id, finished_at=now, duration_seconds=0.0,
                     error="another run holds the run lock")
    log.info("%s skipped: another run is in progress (run %s)", kind, run_id)
    return SyncSummary("skipped", run_id, error="another sync run is in progress")


async def _wait_for_lock_release(redis: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while await redis.exists(RUN_LOCK) and time.monotonic() < deadline:
        await asyncio.sleep(0.5)


async def _locked_run(
    settings: Settings,
    store: Store,
    treazure: TreazureClient,
    engage: EngageClient,
    guard: PushGuard,
    since: datetime | None,
    until: datetime | None,
    task_id: str | None,
    summary: SyncSummary,
    kind: str = "sync",
    progress: Callable[[Counts], None] | None = None,
) -> None:
    """One run under the lock; fills in `summary` (its status last)."""
    abandoned = store.abandon_running_runs()
    if abandoned:
        log.warning("marked %d run(s) left running by a stopped worker as abandoned", abandoned)
    started_at = utcnow()
    window = compute_window(settings, started_at, store.watermark(), since, until)
    run_id = store.start_run(
        started_at=started_at, window_from=window.start, window_to=window.end,
        explicit_window=window.explicit and kind != "migrate", task_id=task_id, kind=kind,
    )
    bind_log_context(run_id=run_id)
    log.info("sync run %s started: window %s → %s", run_id, window.start, window.end)
    clock = time.monotonic()
    lanes = _Lanes(store, engage, guard, run_id, settings)
    lanes.track_seen = kind != "migrate"
    summary.run_id = run_id
    summary.window_from, summary.window_to = window.start.isoformat(), window.end.isoformat()
    try:
        retries = refused_to_retry(store, settings) if kind == "sync" else []
        await _stream(treazure, lanes, window, store, run_id, progress, retries)
        await lanes.finish()
        summary.status = "succeeded"
    except asyncio.CancelledError as exc:
        summary.status, summary.error = "failed", _cancel_reason(exc)
        # Interrupted (Ctrl-C in `pointsync migrate`, say): what Engage accepted is
        # recorded, so the next run does not send it again.
        with contextlib.suppress(Exception):
            await lanes.finish()
        raise
    except Exception as exc:  # the run records why it failed; the task returns it
        summary.status, summary.error = "failed", f"{type(exc).__name__}: {exc}"[:2000]
        log.error("sync run %s failed: %s", run_id, summary.error)
        # What was pushed before the failure is still worth remembering.
        with contextlib.suppress(Exception):
            await lanes.finish()
    finally:
        _record_end(store, lanes, summary, clock)
    log.info("sync run %s %s: %s", run_id, summary.status, asdict(summary.counts))


def _cancel_reason(exc: asyncio.CancelledError) -> str:
    """Why a run was cancelled: the lock keeper says so in the cancel's message."""
    return f"cancelled: {exc.args[0]}"[:2000] if exc.args else "cancelled"


def refused_to_retry(store: Store, settings: Settings) -> list[BalanceEntry]:
    """Balances Engage refused with ContactNotFound within the retry period and not sent
    since (no balance as new was accepted for the contact): a sync pushes them again."""
    period = timedelta(seconds=settings.ENGAGE_NOT_FOUND_RETRY_SECONDS)
    if not period:
        return []
    newest: dict[str, BalanceEntry] = {}
    for contact_id, cents, mutated_at in store.refusals_to_retry(NOT_FOUND, period, utcnow()):
        at = datetime.fromisoformat(mutated_at)
        entry = BalanceEntry(contact_id, cents, utc_micros(at), at, exact_amount(cents))
        held = newest.get(contact_id)
        if held is None or held.mutated_us < entry.mutated_us:
            newest[contact_id] = entry
    ids = list(newest)
    for start in range(0, len(ids), RETRY_READ_CHUNK):
        states = store.contact_states(ids[start:start + RETRY_READ_CHUNK])
        for contact_id, state in states.items():
            if state.sent_mutated_us is not None and \
                    state.sent_mutated_us >= newest[contact_id].mutated_us:
                del newest[contact_id]
    if newest:
        log.info("pushing again %d balance(s) Engage refused with %s", len(newest), NOT_FOUND)
    return list(newest.values())


async def _stream(
    treazure: TreazureClient, lanes: _Lanes, window: Window, store: Store, run_id: int,
    progress: Callable[[Counts], None] | None = None,
    retries: list[BalanceEntry] | None = None,
) -> None:
    """Read pages and push batches concurrently; the first failure stops both sides.

    `retries` go into the lanes first: a newer balance read from the window then wins.
    """

    async def produce() -> None:
        if retries:
            await lanes.add(retries)
        last_progress = time.monotonic()
        async for entries, malformed in treazure.balance_pages(window.start, window.end):
            lanes.counts.fetched += len(entries) + len(malformed)
            if malformed:
                _record_malformed(run_id, lanes, malformed)
            await lanes.add(entries)
            if progress is not None:
                progress(lanes.counts)
            if time.monotonic() - last_progress > PROGRESS_EVERY_SECONDS:
                store.update_run(run_id, **asdict(lanes.counts))
                last_progress = time.monotonic()
        await lanes.end_of_input()

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


def _record_malformed(run_id: int, lanes: _Lanes, malformed: list[MalformedEntry]) -> None:
    lanes.counts.rejected += len(malformed)
    lanes.rejections.extend((run_id, m.contact_id, None, None, m.reason) for m in malformed)


async def push_entries(
    settings: Settings,
    store: Store,
    engage: EngageClient,
    guard: PushGuard,
    entries: list[BalanceEntry],
    *,
    kind: str = "heal",
    summary: SyncSummary | None = None,
) -> SyncSummary:
    """Push given balances through a sync run's lanes: the same claims, guard, batches,
    rate limit and bookkeeping as a sync, recorded as a run of its own `kind`.

    Every entry is pushed unless Engage was sent a newer balance meanwhile (it is then
    counted stale), even one equal to what Engage was last sent: the caller found Engage
    holding something else. Call it under the run lock (`under_run_lock`, which passes
    the `summary` to fill in), so no sync pushes the same contacts meanwhile.
    """
    started_at = utcnow()
    run_id = store.start_run(started_at=started_at, window_from=None, window_to=None,
                             explicit_window=True, task_id=None, kind=kind)
    clock = time.monotonic()
    lanes = _Lanes(store, engage, guard, run_id, settings)
    lanes.force = True
    summary = summary or SyncSummary("running", None)
    summary.run_id = run_id
    try:
        lanes.counts.fetched = len(entries)
        tasks = [asyncio.create_task(lanes.run_lane(i)) for i in range(lanes.count)]
        try:
            await lanes.add(entries)
            await lanes.end_of_input()
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        await lanes.finish()
        summary.status = "succeeded"
    except asyncio.CancelledError as exc:
        summary.status, summary.error = "failed", _cancel_reason(exc)
        with contextlib.suppress(Exception):
            await lanes.finish()
        raise
    except Exception as exc:
        summary.status, summary.error = "failed", f"{type(exc).__name__}: {exc}"[:2000]
        with contextlib.suppress(Exception):
            await lanes.finish()
    finally:
        _record_end(store, lanes, summary, clock)
    return summary


def _record_end(store: Store, lanes: _Lanes, summary: SyncSummary, clock: float) -> None:
    """Stop the run's threads and write its outcome, counts and duration to its row."""
    lanes.stop_threads()
    summary.counts = lanes.counts
    summary.duration_seconds = round(time.monotonic() - clock, 3)
    store.update_run(
        lanes.run_id, status=summary.status, finished_at=utcnow(),
        duration_seconds=summary.duration_seconds, error=summary.error,
        **asdict(lanes.counts),
    )
