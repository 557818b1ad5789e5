"""The record of runs (sync, migrate, heal): one row per run, its window, counts and end."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Engine,
    Float,
    Index,
    Integer,
    String,
    Table,
    Text,
    func,
    insert,
    select,
    update,
)

from worker.store.engine import as_utc, metadata, utcnow

sync_runs = Table(
    "sync_runs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("status", String(16), nullable=False),  # running|succeeded|failed|skipped|abandoned
    Column("explicit_window", Boolean, nullable=False, default=False),
    Column("window_from", DateTime(timezone=True)),
    Column("window_to", DateTime(timezone=True)),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True)),
    Column("duration_seconds", Float),
    Column("fetched", BigInteger, nullable=False, default=0),
    Column("unique_contacts", BigInteger, nullable=False, default=0),
    Column("unchanged", BigInteger, nullable=False, default=0),
    Column("stale", BigInteger, nullable=False, default=0),
    Column("pushed", BigInteger, nullable=False, default=0),
    Column("rejected", BigInteger, nullable=False, default=0),
    Column("error", Text),
    Column("task_id", String(64)),
    # sync (scheduled or manual), migrate (the go-live copy) or heal (reconcile --heal)
    Column("kind", String(16), nullable=False, default="sync", server_default="sync"),
    Index("ix_sync_runs_status", "status", "started_at"),
    Index("ix_sync_runs_kind", "kind", "id"),
    Index("ix_sync_runs_task", "task_id"),
)

RUN_COUNTS = ("fetched", "unique_contacts", "unchanged", "stale", "pushed", "rejected")


class RunQueries:
    """The queries on sync_runs; part of `worker.store.database.Store`."""

    engine: Engine

    def abandon_running_runs(self) -> int:
        """Runs left 'running' by a holder that died; called while holding the run lock.

        Every kind of run (sync, migrate, heal) creates its row only while holding the
        run lock, so a row still `running` when the lock is taken has no live holder.
        """
        with self.engine.begin() as conn:
            result = conn.execute(
                update(sync_runs)
                .where(sync_runs.c.status == "running")
                .values(status="abandoned", finished_at=utcnow(),
                        error="the worker running it stopped before it finished")
            )
            return result.rowcount or 0

    def has_running_run(self, task_id: str) -> bool:
        """Whether a run of this Celery task is recorded as still running."""
        with self.engine.connect() as conn:
            found = conn.execute(
                select(sync_runs.c.id).where(
                    sync_runs.c.task_id == task_id, sync_runs.c.status == "running"
                ).limit(1)
            ).first()
        return found is not None

    def watermark(self) -> datetime | None:
        """Start time of the newest successful scheduled-window run."""
        with self.engine.connect() as conn:
            value = conn.execute(
                select(func.max(sync_runs.c.started_at)).where(
                    sync_runs.c.status == "succeeded", sync_runs.c.explicit_window.is_(False)
                )
            ).scalar()
        return as_utc(value)

    def start_run(
        self,
        *,
        started_at: datetime,
        window_from: datetime | None,
        window_to: datetime | None,
        explicit_window: bool,
        task_id: str | None,
        status: str = "running",
        kind: str = "sync",
    ) -> int:
        with self.engine.begin() as conn:
            result = conn.execute(
                insert(sync_runs).values(
                    status=status, started_at=started_at, window_from=window_from,
                    window_to=window_to, explicit_window=explicit_window, task_id=task_id,
                    kind=kind, **dict.fromkeys(RUN_COUNTS, 0),
                )
            )
            key = result.inserted_primary_key
            assert key is not None  # an INSERT into a table with a primary key
            return int(key[0])

    def update_run(self, run_id: int, **values: Any) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(sync_runs).where(sync_runs.c.id == run_id).values(**values))

    def get_run(self, run_id: int) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(sync_runs).where(sync_runs.c.id == run_id)).mappings()
            found = row.first()
        return _run_dict(found) if found else None

    def recent_runs(self, limit: int = 10, kind: str | None = None) -> list[dict[str, Any]]:
        query = select(sync_runs).order_by(sync_runs.c.id.desc()).limit(limit)
        if kind is not None:
            query = query.where(sync_runs.c.kind == kind)
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [_run_dict(row) for row in rows]

    def last_success_finished(self, kind: str = "sync") -> datetime | None:
        """When the newest successful run of this kind ended."""
        t = sync_runs.c
        with self.engine.connect() as conn:
            value = conn.execute(
                select(func.max(t.finished_at)).where(t.status == "succeeded", t.kind == kind)
            ).scalar()
        return as_utc(value)

    def run_for_task(self, task_id: str) -> dict[str, Any] | None:
        """The newest run recorded by this Celery task, if it has started one."""
        with self.engine.connect() as conn:
            found = conn.execute(
                select(sync_runs).where(sync_runs.c.task_id == task_id)
                .order_by(sync_runs.c.id.desc()).limit(1)
            ).mappings().first()
        return _run_dict(found) if found else None


def _run_dict(row: Any) -> dict[str, Any]:
    data = dict(row)
    for key in ("window_from", "window_to", "started_at", "finished_at"):
        data[key] = as_utc(data[key])
    return data
