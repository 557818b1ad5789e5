"""Flow 4a: the go-live copy of every balance, Treazure → Engage.

Two ways, both reading every balance through one Balances/Get job over the whole of time:
- `migrate()` pushes them through the sync's own lanes as a run of kind `migrate`: the
  same claims, guard, batches and rate limit. Resuming after an interruption is running it
  again: a balance Engage was already sent (the guard's `contact_balances`) is skipped
  without a request, so only what is left is pushed.
- `export_import_files()` writes Engage's points import files instead (semicolon-separated
  UTF-8, one current-balance row per contact, at most 20,000 rows per file) for Engage's
  file import at tenant set-up.
"""

from __future__ import annotations

import csv
import shutil
import sqlite3
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from worker.base.money import cents_to_decimal
from worker.base.settings import Settings
from worker.base.times import utc_seconds_text
from worker.flows.parts import Parts
from worker.flows.sync.run import run_sync
from worker.flows.sync.summary import Counts, SyncSummary
from worker.systems.treazure.client import TreazureClient

# Treazure's job is asked for everything mutated since this moment: "every balance".
EPOCH = "1970-01-01T00:00:00+00:00"
MAX_ROWS_PER_FILE = 20_000  # Engage's file import limit (data rows; the header is extra)
IMPORT_COLUMNS = (
    "Key", "KeyType", "PointDefinitionId", "Amount", "TransactionType", "TransactionDate",
    "CreatedOn", "ValidTo", "CreatedBy", "Description", "Source",
    "ExpireAfterMonthsInactive",
)
FILE_PATTERN = "points-import-*.csv"
DESCRIPTION = "Balance migrated from Treazure"


async def migrate(
    parts: Parts, *, since: str = EPOCH, progress: Callable[[Counts], None] | None = None
) -> SyncSummary:
    """Copy every balance to Engage; run again to resume (what was sent is skipped)."""
    return await run_sync(
        parts.settings, parts.store, parts.redis, parts.treazure, parts.engage,
        since=since, guard=parts.guard, kind="migrate", progress=progress,
    )


@dataclass
class ExportSummary:
    directory: str
    files: list[str] = field(default_factory=list)
    rows: int = 0
    fetched: int = 0
    malformed: int = 0
    removed_old_files: int = 0
    read_started_at: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"directory": self.directory, "files": self.files, "rows": self.rows,
                "fetched": self.fetched, "malformed": self.malformed,
                "removed_old_files": self.removed_old_files,
                "read_started_at": self.read_started_at}


async def export_import_files(
    settings: Settings,
    treazure: TreazureClient,
    directory: Path,
    *,
    since: str = EPOCH,
    rows_per_file: int = MAX_ROWS_PER_FILE,
    progress: Callable[[int], None] | None = None,
) -> ExportSummary:
    """Write one import row per contact (its newest balance) into numbered files.

    The files appear all at once, replacing an earlier export's: they are written in a
    scratch folder and moved in only when every one is complete, so an interrupted export
    never leaves a partial set that could be imported.
    """
    if not 1 <= rows_per_file <= MAX_ROWS_PER_FILE:
        raise ValueError(f"rows_per_file: must be 1 to {MAX_ROWS_PER_FILE}, got {rows_per_file}")
    directory.mkdir(parents=True, exist_ok=True)
    started = datetime.now(UTC)
    summary = ExportSummary(str(directory), read_started_at=utc_seconds_text(started))
    scratch = Path(tempfile.mkdtemp(prefix=".pointsync-export-", dir=directory))
    try:
        # Newest balance per contact, on disk: a million contacts would not fit in a
        # worker-sized memory as Python objects, and a contact may appear more than once.
        newest = sqlite3.connect(scratch / "newest.sqlite")
        newest.execute("PRAGMA journal_mode=OFF")
        newest.execute("CREATE TABLE b (contact TEXT PRIMARY KEY, cents INTEGER, us INTEGER,"
                       " at TEXT) WITHOUT ROWID")
        # To a little past now, as the sync's window: a balance stamped by a clock slightly
        # ahead of ours is still read.
        until = started + timedelta(seconds=settings.SYNC_LOOKAHEAD_SECONDS)
        async for entries, malformed in treazure.balance_pages(
                datetime.fromisoformat(since), until):
            summary.fetched += len(entries) + len(malformed)
            summary.malformed += len(malformed)
            newest.executemany(
                "INSERT INTO b VALUES (?, ?, ?, ?) ON CONFLICT (contact) DO UPDATE SET "
                "cents = excluded.cents, us = excluded.us, at = excluded.at "
                "WHERE excluded.us > b.us",
                [(e.contact_id, e.cents, e.mutated_us, utc_seconds_text(e.mutated_at))
                 for e in entries])
            if progress is not None:
                progress(summary.fetched)
        newest.commit()
        written = _write_files(newest, scratch, settings.ENGAGE_DEFINITION_ID, rows_per_file,
                               utc_seconds_text(started))
        newest.close()
        summary.rows = sum(rows for _, rows in written)
        for old in directory.glob(FILE_PATTERN):
            old.unlink()
            summary.removed_old_files += 1
        for path, _rows in written:
            path.replace(directory / path.name)
            summary.files.append(path.name)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return summary


def _write_files(
    newest: sqlite3.Connection, scratch: Path, definition_id: int, rows_per_file: int,
    created_on: str,
) -> list[tuple[Path, int]]:
    written: list[tuple[Path, int]] = []
    rows = newest.execute("SELECT contact, cents, at FROM b ORDER BY contact")
    handle = None
    writer: Any = None
    count = 0
    try:
        for contact, cents, at in rows:
            if handle is None or count == rows_per_file:
                if handle is not None:
                    handle.close()
                    written[-1] = (written[-1][0], count)
                path = scratch / f"points-import-{len(written) + 1:05d}.csv"
                handle = path.open("w", encoding="utf-8", newline="")
                writer = csv.writer(handle, delimiter=";", lineterminator="\r\n")
                writer.writerow(IMPORT_COLUMNS)
                written.append((path, 0))
                count = 0
            writer.writerow((contact, "contactId", definition_id, cents_to_decimal(cents),
                             "adjustment", at, created_on, "", "pointsync", DESCRIPTION,
                             "pointsync", ""))
            count += 1
    finally:
        if handle is not None:
            handle.close()
            written[-1] = (written[-1][0], count)
    return written
