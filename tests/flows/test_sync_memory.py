"""Pages are streamed: the memory a run holds does not grow with the size of the job."""

from __future__ import annotations

import tracemalloc

import pytest

from tests.support.flows import FakeRemotes, Parts
from worker.flows.sync.run import run_sync


def fill(remotes: FakeRemotes, pages: int, run: int, per_page: int = 1000) -> None:
    remotes.pages = []
    for p in range(pages):
        remotes.add_page(*[
            (f"00000000-0000-{run:04d}-{p:04d}-{i:012d}", i + 0.25, "2026-11-21T08:00:00Z")
            for i in range(per_page)
        ])


async def peak_bytes_of_a_run(parts: Parts, remotes: FakeRemotes, pages: int, run: int) -> int:
    fill(remotes, pages, run)  # the fake job's own pages are built before measuring
    remotes.pushes.clear()
    tracemalloc.start()
    try:
        summary = await run_sync(parts.settings, parts.store, parts.redis, parts.treazure,
                                 parts.engage)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert summary.counts.pushed == pages * 1000
    return peak


async def test_peak_memory_does_not_grow_with_the_job(
    parts: Parts, remotes: FakeRemotes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("worker.flows.sync.lanes.FLUSH_EVERY_ROWS", 2000)
    parts.settings.ENGAGE_BATCH_SIZE = 500
    remotes.pushes_kept = False
    small = await peak_bytes_of_a_run(parts, remotes, pages=8, run=1)
    large = await peak_bytes_of_a_run(parts, remotes, pages=40, run=2)
    # Five times the rows; what a run holds at once is bounded by pages, batches in
    # flight and the unwritten guard rows, so the peak stays about the same.
    assert large < small * 1.5, (small, large)
