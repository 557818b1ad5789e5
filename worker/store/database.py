"""The store's handle: one object over one database that the flows pass around.

Its queries live beside their tables (runs.py, contacts.py); the connection in engine.py,
the schema's upgrades in schema.py. The ledger (ledger.py) and the history (history.py)
take this handle too.
"""

from __future__ import annotations

from sqlalchemy import Engine
from sqlalchemy.pool import StaticPool

from worker.store.contacts import ContactQueries
from worker.store.runs import RunQueries


class Store(RunQueries, ContactQueries):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        # SQLite in memory lives in one connection that threads must not use at once.
        self.single_connection = isinstance(engine.pool, StaticPool)
        # The driver's own placeholder: `?` for sqlite3, `%s` for psycopg.
        self._mark = "?" if engine.dialect.paramstyle == "qmark" else "%s"
