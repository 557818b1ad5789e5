"""The screen: rows read exactly as Engage was last sent are dropped a page at a time,
before the lanes, and counted as the lanes would count them."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from tests.support.flows import FakeRemotes, Parts
from worker.flows.sync import screen as screen_module
from worker.flows.sync.lanes import Lanes
from worker.flows.sync.readers import StoreReaders
from worker.flows.sync.run import run_sync
from worker.flows.sync.screen import UnchangedScreen
from worker.flows.sync.summary import Counts
from worker.store.contacts import ContactState
from worker.store.database import Store
from worker.systems.treazure.parsing import BalanceEntry, PageRows

T1, T2 = "2026-11-21T08:00:00Z", "2026-11-21T09:00:00Z"


def contact(n: int) -> str:
    return f"00000000-0000-0000-0000-{n:012d}"


async def sync(parts: Parts, **kwargs: str):  # type: ignore[no-untyped-def]
    return await run_sync(parts.settings, parts.store, parts.redis, parts.treazure,
                          parts.engage, **kwargs)


@pytest.fixture
def lanes_input(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The contacts of every row that reached the lanes."""
    reached: list[str] = []
    add = Lanes.add

    async def spy(self: Lanes, entries: list[BalanceEntry]) -> None:
        reached.extend(entry.contact_id for entry in entries)
        await add(self, entries)

    monkeypatch.setattr(Lanes, "add", spy)
    return reached


async def test_rows_read_exactly_as_sent_never_reach_the_lanes(
    parts: Parts, remotes: FakeRemotes, lanes_input: list[str]
) -> None:
    remotes.add_page(*[(contact(n), n + 0.5, T1) for n in range(6)])
    remotes.add_page(*[(contact(n), n + 0.5, T1) for n in range(6, 9)])
    await sync(parts)
    lanes_input.clear()
    remotes.pages[1][0]["balance"] = 99.25  # one balance moved since
    remotes.pushes.clear()

    summary = await sync(parts)

    assert lanes_input == [contact(6)]
    assert remotes.pushed_contacts() == [contact(6)]
    counts = summary.counts
    assert (counts.fetched, counts.unique_contacts, counts.unchanged, counts.pushed) == \
        (9, 9, 8, 1)


async def test_the_screen_steps_aside_while_pages_are_mostly_new(
    parts: Parts, remotes: FakeRemotes, monkeypatch: pytest.MonkeyPatch,
    lanes_input: list[str]
) -> None:
    """A first sync: each screen finds nothing to drop, so it skips 1, then 2, then 4 pages;
    every row still reaches the lanes, and is pushed once."""
    screened: list[int] = []
    not_as_sent = StoreReaders.not_as_sent

    def spy(self: StoreReaders, rows, run_id):  # type: ignore[no-untyped-def]
        screened.append(len(rows))
        return not_as_sent(self, rows, run_id)

    monkeypatch.setattr(StoreReaders, "not_as_sent", spy)
    for page in range(8):
        remotes.add_page((contact(page), 1.5, T1), (contact(100 + page), 2.5, T1))

    summary = await sync(parts)

    assert len(screened) == 3  # pages 1, 3 and 6 of 8
    assert sorted(lanes_input) == sorted(remotes.pushed_contacts())
    assert (summary.counts.pushed, summary.counts.unchanged) == (16, 0)


def _lanes_stub(store: Store, **overrides: object) -> SimpleNamespace:
    fields: dict[str, object] = {
        "force": False, "readers": StoreReaders(store, 1), "run_id": 2, "pending": {},
        "flushing": {}, "counts": Counts()}
    return SimpleNamespace(**(fields | overrides))


def _entry(contact_id: str, cents: int, mutated_us: int) -> BalanceEntry:
    return BalanceEntry(contact_id, cents, mutated_us, None, cents / 100)  # type: ignore[arg-type]


async def test_a_row_of_a_contact_this_run_moved_goes_on_to_the_lanes(store: Store) -> None:
    """Read as the store holds it, but this run already pushed the contact a newer balance
    that is not yet written: only the lanes can count it stale, so it is not dropped."""
    store.save_contact_states([(contact(1), 100, 5, 1), (contact(2), 200, 5, 1),
                               (contact(3), 300, 5, 1)])
    moved = ContactState(contact(2), 250, 9, 2)
    lanes = _lanes_stub(store, pending={contact(2): moved})
    screen = UnchangedScreen(lanes)  # type: ignore[arg-type]
    rows = [_entry(contact(1), 100, 5), _entry(contact(2), 200, 5), _entry(contact(3), 301, 5)]

    assert screen.wants(rows)
    survivors = await screen.survivors(PageRows.of(rows))

    assert survivors == rows[1:]
    assert (lanes.counts.unchanged, lanes.counts.unique_contacts) == (1, 1)
    lanes.readers.close()


async def test_the_rows_dropped_are_never_built(store: Store) -> None:
    """A page read a column at a time: only the survivors become BalanceEntry tuples."""
    store.save_contact_states([(contact(n), 100 * n, 5, 1) for n in range(3)])
    moment = datetime(2026, 11, 21, tzinfo=UTC)
    rows = PageRows([contact(n) for n in range(3)], [0, 100, 201], [5, 5, 5], [moment] * 3,
                    [0, 1, 2.01])
    lanes = _lanes_stub(store)

    survivors = await UnchangedScreen(lanes).survivors(rows)  # type: ignore[arg-type]

    assert survivors == [BalanceEntry(contact(2), 201, 5, moment, 2.01)]
    assert rows._entries is None  # the page's rows were not built
    lanes.readers.close()


async def test_a_heal_is_never_screened_and_an_empty_page_is_not(store: Store) -> None:
    screen = UnchangedScreen(_lanes_stub(store, force=True))  # type: ignore[arg-type]
    assert not screen.wants([_entry(contact(1), 100, 5)])
    assert not UnchangedScreen(_lanes_stub(store)).wants([])  # type: ignore[arg-type]


async def test_a_page_mostly_unchanged_keeps_the_screen_on(store: Store) -> None:
    assert screen_module.WORTH_IT == 0.5
    store.save_contact_states([(contact(n), 100, 5, 1) for n in range(4)])
    lanes = _lanes_stub(store)
    screen = UnchangedScreen(lanes)  # type: ignore[arg-type]
    half = [_entry(contact(0), 100, 5), _entry(contact(1), 100, 5),
            _entry(contact(2), 101, 5), _entry(contact(3), 101, 5)]
    new = [_entry(contact(n), 100, 5) for n in range(10, 14)]

    assert [len(await screen.survivors(PageRows.of(half))) for _ in range(3)] == [2, 2, 2]
    assert [screen.wants(half) for _ in range(2)] == [True, True]
    await screen.survivors(PageRows.of(new))  # nothing dropped: the next page passes unscreened
    assert [screen.wants(half) for _ in range(2)] == [False, True]
    lanes.readers.close()
