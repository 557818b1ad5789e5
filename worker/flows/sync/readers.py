"""A sync run's reads of the store: a few threads, each with a connection of its own."""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from sqlalchemy import Connection

from worker.store.contacts import READER_CACHE_KIB, ContactState
from worker.store.database import Store

T = TypeVar("T")


class StoreReaders:
    """Threads that read the store for a run's lanes, off the event loop (sqlite3 and
    psycopg release the GIL while they work, so pages are parsed and pushes sent meanwhile).

    At a million contacts each batch's compare is about 4 ms of random-key lookups, and one
    thread was the limit of an unchanged re-run; each thread reads on a connection of its
    own (`Store.open_connection`), opened on first use and dropped by `close`.
    """

    def __init__(self, store: Store, threads: int) -> None:
        self.store = store
        # A store on one shared connection (SQLite in memory) is read on one thread only.
        self.pool = ThreadPoolExecutor(
            max_workers=1 if store.single_connection else threads,
            thread_name_prefix="sync-db-read")
        self._local = threading.local()
        self._opened: list[Connection] = []
        self._lock = threading.Lock()

    async def run(self, call: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, functools.partial(call, *args))

    def connection(self) -> Connection | None:
        """This thread's reading connection; None for a store on one shared connection."""
        if not hasattr(self._local, "conn"):
            opened = self.store.open_connection(READER_CACHE_KIB)
            if opened is not None:
                with self._lock:
                    self._opened.append(opened)
            self._local.conn = opened
        conn: Connection | None = self._local.conn
        return conn

    def compare(self, rows: Sequence[Sequence[Any]], run_id: int) -> list[ContactState]:
        """`Store.changed_contact_states` on this thread's connection (call it through
        `run`)."""
        return self.store.changed_contact_states(rows, run_id, self.connection())

    def not_as_sent(self, rows: Sequence[Sequence[Any]], run_id: int) -> list[int]:
        """`Store.rows_not_as_sent` on this thread's connection (call it through `run`)."""
        return self.store.rows_not_as_sent(rows, run_id, self.connection())

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        for conn in self._opened:
            self.store.close_connection(conn)
        self._opened.clear()
