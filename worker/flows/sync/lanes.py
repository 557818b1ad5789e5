"""The push side of a run: contacts spread over lanes, compared, claimed, pushed, recorded.

Contacts are spread over `ENGAGE_PUSH_CONCURRENCY` lanes by hash; a lane handles its
batches one after another, so two pushes for one contact are never in flight together and
arrive in the order they were read. Before each push the lane compares every row with what
Engage was last sent (the store's `contact_balances`):
- older than what was sent → `stale`, never sent;
- equal to what was sent → `unchanged`, not sent again;
- anything else is pushed, and recorded as sent only once Engage accepted it.
Stale and unchanged rows write nothing to the store (only the same balance at a newer time
is recorded, to raise the guard), so a re-run with nothing changed reads and compares.
Duplicates inside a run collapse to the newest `mutatedAt` (`unique` counts contacts).
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import operator
import time
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict

from worker.base.backoff import doubled
from worker.base.settings import Settings
from worker.flows.sync.readers import StoreReaders
from worker.flows.sync.summary import Counts
from worker.store.contacts import WRITER_CACHE_KIB, ContactState
from worker.store.database import Store
from worker.store.pushguard import PushGuard
from worker.systems.engage.client import EngageClient
from worker.systems.treazure.parsing import BalanceEntry

log = logging.getLogger("pointsync.sync")
# Builds a ContactState in C (the named tuple's own __new__ is a Python call).
_state = functools.partial(tuple.__new__, ContactState)
# A BalanceEntry's fields, read in C: (contact, cents, mutated µs, …).
_contact_of = operator.itemgetter(0)
_mutated_us_of = operator.itemgetter(2)
_first_three = operator.itemgetter(slice(0, 3))

# Rows sent are written in transactions of up to this many rows, or this often, so a
# crash makes the next run repeat at most a few seconds of pushes. What waits to be written
# (and what is being written) is the largest thing a run holds: at 25,000 rows a first sync
# of 400k peaked 16 MB higher than at 5,000 (in one process), at the same speed (a commit
# on SQLite's WAL does not wait for the disk).
FLUSH_EVERY_ROWS = 5_000
FLUSH_EVERY_SECONDS = 2.0
# Memory bound of a run: at most this many batches (of ≤1,000 rows) wait per push slot on
# average.
QUEUED_BATCHES_PER_LANE = 4
# Lanes per push slot (ENGAGE_PUSH_CONCURRENCY): a lane's compare and claim wait on the
# database and Redis, so with one lane per slot a slot stood idle meanwhile and a million
# rows took 1.4-2 times a bare transfer's pushes; a second lane fills it. Pushes in flight
# stay at ENGAGE_PUSH_CONCURRENCY.
LANES_PER_PUSH = 2
# Threads reading the store for the lanes (see StoreReaders).
READ_THREADS = 2


class Lanes:
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
        self.count = settings.ENGAGE_PUSH_CONCURRENCY * LANES_PER_PUSH
        self.pushing = asyncio.Semaphore(settings.ENGAGE_PUSH_CONCURRENCY)
        self.counts = Counts()
        self.buffers: list[dict[str, BalanceEntry]] = [{} for _ in range(self.count)]
        self.readers = StoreReaders(store, READ_THREADS)
        # Flushes write on a connection of their own, so reads never queue behind a large
        # transaction (SQLite's WAL lets readers go on while one writer commits). A store
        # with one shared connection (SQLite in memory) keeps everything on one thread.
        self.write_thread = self.readers.pool if store.single_connection else \
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="sync-db-write")
        self.writer = store.open_connection(WRITER_CACHE_KIB)
        self.flush_lock = asyncio.Lock()
        self.flush_task: asyncio.Task[None] | None = None
        self.queues: list[asyncio.Queue[dict[str, BalanceEntry] | None]] = [
            asyncio.Queue() for _ in range(self.count)
        ]
        # Batches waiting over all lanes are bounded together, not per lane: a lane held up
        # by a 429 must not stop the reader from feeding the other lanes.
        self.waiting = asyncio.Semaphore(
            QUEUED_BATCHES_PER_LANE * settings.ENGAGE_PUSH_CONCURRENCY)
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

    async def add(self, entries: Iterable[BalanceEntry]) -> None:
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

    def record_progress(self) -> None:
        """Write the run's counts so far, on the write thread, not waited for. On the event
        loop the write waited for SQLite's write lock while a flush held it, stalling every
        lane; and a store on one connection must not be used from two threads at once."""
        future = self.write_thread.submit(
            functools.partial(self.store.update_run, self.run_id, **asdict(self.counts)))
        future.add_done_callback(_log_failed_progress)

    async def run_lane(self, lane: int) -> None:
        queue = self.queues[lane]
        while (batch := await queue.get()) is not None:
            try:
                await self._process(batch, lane)
            finally:
                self.waiting.release()
        waits = 0
        while self.deferred[lane]:
            await asyncio.sleep(doubled(0.02, waits, 1.0))
            waits += 1
            batch, self.deferred[lane] = self.deferred[lane], {}
            await self._process(batch, lane)

    async def _process(self, batch: dict[str, BalanceEntry], lane: int) -> None:
        run_id = self.run_id
        # A contact lives in one lane and its lane handles one batch at a time, so what
        # this lane left pending for these contacts cannot change during the awaits below.
        # A flush (by any lane) swaps `self.pending` for a new dict, so it is looked up
        # again after every await.
        # Set intersections in C: in a first sync nearly every contact is in neither.
        pending = self.pending
        known = {cid: pending[cid] for cid in batch.keys() & pending.keys()}
        if self.flushing:
            flushing = self.flushing
            known.update((cid, flushing[cid]) for cid in batch.keys() & flushing.keys()
                         if cid not in known)
        unknown = [cid for cid in batch if cid not in known] if known else list(batch)
        counts = self.counts
        force = self.force
        if unknown and force:
            known.update(await self.readers.run(self.store.contact_states, unknown))
        elif unknown:
            batch = await self._compare_in_store(batch, unknown, known)
        pending = self.pending
        to_push: list[BalanceEntry] = []
        if not known:  # contacts never sent before, as in a first sync: all go
            counts.unique_contacts += len(batch)
            to_push = list(batch.values())
        # A row read exactly as Engage was last sent, or older than that, writes nothing:
        # an unchanged re-run costs reading and comparing, not a store row per contact.
        stale = unchanged = unique = 0
        for contact_id, entry in batch.items() if known else ():
            state = known.get(contact_id)
            if state is None or state[3] != run_id:  # seen_run_id
                unique += 1
            sent_us = None if state is None else state[2]  # sent_mutated_us
            if state is None or sent_us is None:
                to_push.append(entry)
            elif entry[2] < sent_us:  # mutated_us
                stale += 1
            elif entry[1] != state[1] or force:  # cents, sent_cents
                to_push.append(entry)
            else:
                unchanged += 1
                if entry[2] > sent_us:
                    # Same balance, newer time: raise the guard so an older, different
                    # balance read later in this run is refused.
                    pending[contact_id] = _state((contact_id, entry[1], entry[2], run_id))
        counts.stale += stale
        counts.unchanged += unchanged
        counts.unique_contacts += unique

        if to_push:
            to_push, token = await self._claim(to_push, lane)
        if to_push:
            try:
                async with self.pushing:
                    result = await self.engage.push_balances(to_push)
            except BaseException:
                await self.guard.release_sync([token])
                raise
            # The batch stays claimed until the flush that records it has committed.
            self.pending_tokens.append(token)
            pending = self.pending
            refused = result.not_accepted
            if not refused:
                # (contact, cents, mutated µs) + (run,) for each row, built in C.
                pending.update(zip(
                    map(_contact_of, to_push),
                    map(_state, map(operator.add, map(_first_three, to_push),
                                    itertools.repeat((run_id,)))), strict=True))
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

    async def _compare_in_store(
        self, batch: dict[str, BalanceEntry], unknown: list[str],
        known: dict[str, ContactState],
    ) -> dict[str, BalanceEntry]:
        """Compare the `unknown` rows with the store: rows read exactly as Engage was last
        sent are counted unchanged here (the store leaves them out); the states of the
        others go into `known` (a contact never sent stays out of it). Returns the rows
        still to compare: `batch` less the unchanged ones."""
        values = batch.values() if len(unknown) == len(batch) else map(batch.__getitem__,
                                                                       unknown)
        states = await self.readers.run(
            self.readers.compare, list(map(_first_three, values)), self.run_id)
        same = len(unknown) - len(states)
        self.counts.unchanged += same
        self.counts.unique_contacts += same  # not yet seen by this run: the store says so
        known.update((state[0], state) for state in states
                     if state[1] is not None or state[2] is not None or state[3] is not None)
        if not same:
            return batch
        return {cid: batch[cid] for cid in itertools.chain(known, map(_contact_of, states))}

    async def _claim(
        self, rows: list[BalanceEntry], lane: int
    ) -> tuple[list[BalanceEntry], str]:
        """The rows this lane may push now, under one claim token (see pushguard).

        A row whose contact a point transaction is pushing waits in `deferred`; one that
        such a push made stale is counted stale and dropped.
        """
        claim = await self.guard.claim_columns_for_sync(
            list(map(_contact_of, rows)), list(map(_mutated_us_of, rows)))
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
                self.store.save_contact_states, rows, rejections, self.writer))
            await self.guard.release_sync(tokens)
            # Only once committed: after a failed write the overlay keeps guarding.
            self.flushing = {}

    async def finish(self) -> None:
        """Wait for a flush under way (raising its error), then write the rest."""
        if self.flush_task is not None:
            await self.flush_task
        await self.flush()

    def stop_threads(self) -> None:
        self.write_thread.shutdown(wait=True)
        self.readers.close()
        self.store.close_connection(self.writer)


def _log_failed_progress(future: Future[None]) -> None:
    # Progress is for watching a run; its end is written after the threads stop.
    if not future.cancelled() and future.exception() is not None:
        log.warning("the run's progress was not written: %s", future.exception())
