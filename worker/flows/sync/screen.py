"""Rows read exactly as Engage was last sent, dropped a page at a time before the lanes.

An hourly sync reads many balances it already sent (its window overlaps the last one, and
a balance read again unchanged is the common row). Sending each such row through the lanes
(a lane's buffer, its batch, its compare) cost more than reading it; here the store tells,
for a whole page in one query on a reader thread, which rows are not exactly as sent, and
only those go on to the lanes, which compare them again as ever.

Dropping is always safe: a row the store holds exactly as sent is no newer than what Engage
has, so nothing would be pushed for it. What the screen must not do is tell the counts
differently from the lanes; so a row whose contact this run already moved and has not yet
written (the lanes' `pending` and `flushing`) is left to the lanes, which count it stale.

A page on which few rows are unchanged (a first sync: none are) makes the screen step aside
for the next 1, 2, 4 … MAX_PAGES_SKIPPED pages: there it would only read each row twice.
"""

from __future__ import annotations

from collections.abc import Sized

from worker.flows.sync.lanes import Lanes
from worker.systems.treazure.parsing import BalanceEntry, PageRows

# A screen pays when at least this share of a page's rows is dropped.
WORTH_IT = 0.5
MAX_PAGES_SKIPPED = 32


class UnchangedScreen:
    """Drops the rows the store holds exactly as sent, counting them as the lanes would."""

    def __init__(self, lanes: Lanes) -> None:
        self.lanes = lanes
        self.pages_to_skip = 0
        self.next_skip = 1

    def wants(self, rows: Sized) -> bool:
        """Whether to screen this page (counted as a page passed by when not)."""
        if not rows or self.lanes.force:  # a heal pushes equal balances too
            return False
        if self.pages_to_skip:
            self.pages_to_skip -= 1
            return False
        return True

    async def survivors(self, rows: PageRows) -> list[BalanceEntry]:
        """The page's rows less those read exactly as Engage was last sent (in their
        order); for a page `wants` took."""
        lanes = self.lanes
        readers = lanes.readers
        kept = await readers.run(readers.not_as_sent, rows.keys(), lanes.run_id)
        dropped = len(rows) - len(kept)
        self._pace(dropped, len(rows))
        if not dropped:
            return rows.entries()
        if lanes.pending or lanes.flushing:
            kept = self._with_rows_this_run_moved(rows, kept)
        survivors = rows.at(kept)
        counted = len(rows) - len(survivors)
        lanes.counts.unchanged += counted
        lanes.counts.unique_contacts += counted  # not yet seen by this run: the store says so
        return survivors

    def _pace(self, dropped: int, rows: int) -> None:
        if dropped >= WORTH_IT * rows:
            self.next_skip = 1
            return
        self.pages_to_skip = self.next_skip
        self.next_skip = min(2 * self.next_skip, MAX_PAGES_SKIPPED)

    def _with_rows_this_run_moved(self, rows: PageRows, kept: list[int]) -> list[int]:
        """`kept` and the dropped rows whose contact this run moved and has not yet
        written, in page order: only the lanes know to count such a row stale."""
        pending, flushing = self.lanes.pending, self.lanes.flushing
        keep = set(kept)
        held = [index for index, contact_id in enumerate(rows.contact_ids) if index not in keep
                and (contact_id in pending or contact_id in flushing)]
        return sorted(keep.union(held)) if held else kept
