"""The schema upgraded at a process's start without loading the store into that process.

Apart from runtime.py, which builds the store and the clients: the Celery worker's main
process upgrades the schema before forking its pool but never runs a task, so it imports
neither SQLAlchemy nor Alembic (those come in the forked child that upgrades)."""

from __future__ import annotations

import os


class SchemaUpgradeFailed(RuntimeError):
    """The schema upgrade run in a child process (prepare_schema_apart) failed."""


def prepare_schema_apart(url: str) -> None:
    """Upgrade the schema in a forked child that exits afterwards, so this process never
    loads Alembic and its migrations (about 7 MB, which a Celery worker's pool children
    would each inherit), SQLAlchemy, nor opens a connection. An in-memory SQLite database
    lives in the process that opens it, so it is upgraded here, as before."""
    if url in ("sqlite://", "sqlite:///:memory:"):
        from worker.faces.runtime import prepare_store

        prepare_store(url)
        return
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: upgrade, say why on failure, and leave without clean-up
        status = 1
        try:
            os.close(read_end)
            from worker.store.engine import make_engine
            from worker.store.schema import upgrade_schema

            engine = make_engine(url)
            upgrade_schema(engine)
            engine.dispose()
            status = 0
        except BaseException as exc:
            os.write(write_end, f"{type(exc).__name__}: {exc}".encode(errors="replace")[:4000])
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as reader:
        reason = reader.read().decode(errors="replace")
    _, status = os.waitpid(pid, 0)
    if status != 0:
        raise SchemaUpgradeFailed(
            f"the schema upgrade failed ({reason or f'wait status {status}'})")
