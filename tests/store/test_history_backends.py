"""The points-history store on a SQLite file and on a real PostgreSQL: entries are kept as
received, once each, whatever slices of a contact's history are saved and how often."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import func, select

from worker.base.money import utc_micros
from worker.store.database import Store
from worker.store.engine import make_engine
from worker.store.history import (
    HistoryStore,
    MalformedHistory,
    Received,
    history_contacts,
    points_history,
)
from worker.store.schema import upgrade_schema

CONTACT = "6c1e2f4a-0b1c-4d2e-9f00-1a2b3c4d5e6f"
OTHER_CONTACT = "0f0e0d0c-0b0a-4908-8706-050403020100"


@pytest.fixture
def history(database_url: str) -> Iterator[HistoryStore]:
    engine = make_engine(database_url)
    upgrade_schema(engine)
    yield HistoryStore(Store(engine))
    engine.dispose()


def entry(at: str, amount: float = 25, balance: float = 100, **extra: Any) -> dict[str, Any]:
    """One history entry in Treazure's wire shape (contract §3)."""
    return {"dateTime": at, "amount": amount,
            "transactionType": "Load" if amount >= 0 else "Redeem", "expiresAt": None,
            "balance": balance, "comment": "test", "operatorId": "pointsync", "shopId": None,
            "posId": None, "receiptNr": None, "properties": {}, **extra}


def us(text: str) -> int:
    return utc_micros(datetime.fromisoformat(text))


def total(history: HistoryStore, contact_id: str = CONTACT) -> int:
    return history.page(contact_id, 0, 1)[1]


def row_counts(history: HistoryStore) -> tuple[int, int]:
    """(stored entries, contacts with bookkeeping) over every contact."""
    with history.engine.connect() as conn:
        entries = conn.execute(select(func.count()).select_from(points_history)).scalar_one()
        contacts = conn.execute(select(func.count()).select_from(history_contacts)).scalar_one()
    return int(entries), int(contacts)


E1 = entry("2026-11-21T08:00:00Z", 100, 100, comment="opening balance")
E2 = entry("2026-11-21T09:14:03Z", 25, 125, receiptNr="pts-1")
E3 = entry("2026-11-21T10:00:00.250Z", -5, 120, receiptNr="pts-2")
E4 = entry("2026-11-21T11:30:00Z", 10, 130, receiptNr="pts-3")


# -- idempotent storage -----------------------------------------------------------------------


def test_saving_the_same_entries_twice_adds_nothing_the_second_time(
    history: HistoryStore,
) -> None:
    assert history.save(CONTACT, [E1, E2, E3]) == 3
    assert total(history) == 3
    assert history.save(CONTACT, [E1, E2, E3]) == 0
    assert total(history) == 3
    assert row_counts(history) == (3, 1)


def test_the_same_entry_with_its_keys_in_another_order_is_one_entry(
    history: HistoryStore,
) -> None:
    assert history.save(CONTACT, [E2]) == 1
    assert history.save(CONTACT, [dict(reversed(list(E2.items())))]) == 0
    assert total(history) == 1


def test_overlapping_slices_add_only_the_entries_not_stored_yet(history: HistoryStore) -> None:
    assert history.save(CONTACT, [E1, E2]) == 2
    # An incremental fetch from the newest stored time returns that entry again.
    assert history.save(CONTACT, [E2, E3, E4]) == 2
    assert history.save(CONTACT, [E3, E4]) == 0
    entries, count = history.page(CONTACT, 0, 10)
    assert count == 4
    assert entries == [E4, E3, E2, E1]


def test_one_contacts_entries_never_count_for_another(history: HistoryStore) -> None:
    assert history.save(CONTACT, [E1, E2]) == 2
    # The very same entries on another account are that account's own.
    assert history.save(OTHER_CONTACT, [E1, E2]) == 2
    assert total(history) == 2 and total(history, OTHER_CONTACT) == 2
    assert row_counts(history) == (4, 2)


def test_identical_looking_entries_at_different_times_are_kept_apart(
    history: HistoryStore,
) -> None:
    first = entry("2026-11-21T09:00:00Z", 25, 125)
    again = entry("2026-11-21T09:00:01Z", 25, 125)  # same movement, one second later
    assert history.save(CONTACT, [first, again]) == 2
    assert history.save(CONTACT, [again]) == 0
    entries, count = history.page(CONTACT, 0, 10)
    assert count == 2 and entries == [again, first]


def test_entries_are_stored_exactly_as_received(history: HistoryStore) -> None:
    odd = entry("2026-11-21T09:00:00Z", 1275.5, 1300.25, properties={"campaign": "x", "n": 3},
                expiresAt="2027-11-21T00:00:00Z", shopId="shop-7")
    history.save(CONTACT, [odd])
    assert history.page(CONTACT, 0, 1) == ([odd], 1)


# -- bookkeeping: where the next fetch starts -------------------------------------------------


def test_fetched_is_none_before_any_save(history: HistoryStore) -> None:
    assert history.fetched(CONTACT) is None


def test_newest_at_us_is_the_newest_stored_entry_and_never_goes_back(
    history: HistoryStore,
) -> None:
    history.save(CONTACT, [E1, E3, E2])  # not in time order: the newest still wins
    first = history.fetched(CONTACT)
    assert first is not None and first.newest_at_us == us(E3["dateTime"])
    assert first.fetched_at.tzinfo is not None
    history.save(CONTACT, [E1])  # an older slice
    second = history.fetched(CONTACT)
    assert second is not None and second.newest_at_us == us(E3["dateTime"])
    assert second.fetched_at >= first.fetched_at
    history.save(CONTACT, [E3, E4])
    third = history.fetched(CONTACT)
    assert third is not None and third.newest_at_us == us(E4["dateTime"])


def test_an_empty_answer_marks_the_contact_fetched_and_keeps_its_newest(
    history: HistoryStore,
) -> None:
    assert history.save(CONTACT, []) == 0
    empty = history.fetched(CONTACT)
    assert empty is not None and empty.newest_at_us is None
    history.save(CONTACT, [E2])
    assert history.save(CONTACT, []) == 0
    kept = history.fetched(CONTACT)
    assert kept is not None and kept.newest_at_us == us(E2["dateTime"])
    assert kept.fetched_at >= empty.fetched_at
    assert history.fetched(OTHER_CONTACT) is None


# -- reading ----------------------------------------------------------------------------------


def test_page_is_newest_first_with_offset_count_and_total(history: HistoryStore) -> None:
    stamps = [f"2026-11-21T{hour:02d}:00:00Z" for hour in range(10)]
    history.save(CONTACT, [entry(at, 1, 100 + k) for k, at in enumerate(stamps)])
    history.save(OTHER_CONTACT, [entry(stamps[0], 1, 5)])
    newest_first = list(reversed(stamps))
    assert [e["dateTime"] for e in history.page(CONTACT, 0, 3)[0]] == newest_first[:3]
    entries, count = history.page(CONTACT, 3, 4)
    assert count == 10
    assert [e["dateTime"] for e in entries] == newest_first[3:7]
    entries, count = history.page(CONTACT, 8, 5)  # the tail is shorter than a page
    assert count == 10 and [e["dateTime"] for e in entries] == newest_first[8:]
    assert history.page(CONTACT, 10, 5) == ([], 10)
    assert history.page("1f1e1d1c-1b1a-4918-8716-151413121110", 0, 5) == ([], 0)


def test_entries_at_the_same_time_page_in_a_stable_order(history: HistoryStore) -> None:
    same = [entry("2026-11-21T09:00:00Z", k, 100 + k) for k in (1, 2, 3)]
    history.save(CONTACT, same)
    # Equal times: the later-stored entry first, the same way on every read.
    whole = history.page(CONTACT, 0, 3)[0]
    assert sorted(e["amount"] for e in whole) == [1, 2, 3]
    assert history.page(CONTACT, 0, 1)[0] + history.page(CONTACT, 1, 2)[0] == whole
    assert whole == history.page(CONTACT, 0, 3)[0]


# -- retention --------------------------------------------------------------------------------


def test_purge_before_deletes_only_older_entries(history: HistoryStore) -> None:
    history.save(CONTACT, [E1, E2, E3, E4])
    history.save(OTHER_CONTACT, [E1, E4])
    cutoff = datetime.fromisoformat(E3["dateTime"])  # E3 itself is not older than the cutoff
    assert history.purge_before(cutoff) == 3  # E1 and E2 of CONTACT, E1 of OTHER_CONTACT
    assert history.page(CONTACT, 0, 10) == ([E4, E3], 2)
    assert history.page(OTHER_CONTACT, 0, 10) == ([E4], 1)
    assert history.purge_before(cutoff) == 0
    # The bookkeeping stays: the next fetch still starts from the newest entry.
    fetched = history.fetched(CONTACT)
    assert fetched is not None and fetched.newest_at_us == us(E4["dateTime"])


def test_purge_before_everything_leaves_an_empty_history(history: HistoryStore) -> None:
    history.save(CONTACT, [E1, E2])
    assert history.purge_before(datetime(2030, 1, 1, tzinfo=UTC)) == 2
    assert history.page(CONTACT, 0, 10) == ([], 0)


# -- malformed answers ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        {k: v for k, v in E2.items() if k != "dateTime"},  # no dateTime
        {**E2, "dateTime": None},
        {**E2, "dateTime": "yesterday"},
        {**E2, "dateTime": "2026-11-21T09:14:03"},  # no timezone
        {**E2, "dateTime": 1763716443},
    ],
    ids=["missing", "null", "text", "naive", "number"],
)
def test_a_malformed_entry_raises_and_stores_nothing_of_that_call(
    history: HistoryStore, bad: dict[str, Any]
) -> None:
    history.save(OTHER_CONTACT, [E1])
    with pytest.raises(MalformedHistory):
        history.save(CONTACT, [E1, bad, E3])
    assert history.page(CONTACT, 0, 10) == ([], 0)
    assert history.fetched(CONTACT) is None  # not marked fetched either
    assert row_counts(history) == (1, 1)
    # A contact with entries stored keeps exactly those.
    history.save(CONTACT, [E1])
    with pytest.raises(MalformedHistory):
        history.save(CONTACT, [E4, bad])
    assert history.page(CONTACT, 0, 10) == ([E1], 1)
    fetched = history.fetched(CONTACT)
    assert fetched is not None and fetched.newest_at_us == us(E1["dateTime"])


# -- identical entries ------------------------------------------------------------------------

# Two separate bookings Treazure reports alike: same second, amount, balance, no receiptNr.
TWIN = entry("2026-11-21T10:30:00Z", 5, 125, comment="kiosk bonus")


def test_two_identical_entries_in_one_answer_are_both_kept(history: HistoryStore) -> None:
    assert history.save(CONTACT, [E1, TWIN, TWIN]) == 3

    items, count = history.page(CONTACT, 0, 10)
    assert count == 3
    assert items == [TWIN, TWIN, E1]


def test_refetching_a_slice_with_identical_entries_adds_nothing(history: HistoryStore) -> None:
    history.save(CONTACT, [E1, TWIN, TWIN])

    # The next incremental fetch starts at the newest stored second: the pair comes again.
    assert history.save(CONTACT, [TWIN, TWIN, E4]) == 1
    assert history.save(CONTACT, [E1, TWIN, TWIN, E4]) == 0
    assert total(history) == 4


def test_the_second_of_two_identical_entries_is_added_when_a_later_slice_has_it(
    history: HistoryStore,
) -> None:
    history.save(CONTACT, [E1, TWIN])  # fetched between the two bookings

    assert history.save(CONTACT, [TWIN, TWIN]) == 1
    assert total(history) == 3


# -- a refresh chunk: many contacts in one transaction ----------------------------------------


def test_save_many_stores_each_contacts_new_entries_and_counts_them_apart(
    history: HistoryStore,
) -> None:
    history.save(CONTACT, [E1, E2])
    added = history.save_many({CONTACT: Received.of([E1, E2, E3]),
                               OTHER_CONTACT: Received.of([E1, TWIN, TWIN])})
    assert added == {CONTACT: 1, OTHER_CONTACT: 3}
    assert history.page(CONTACT, 0, 10) == ([E3, E2, E1], 3)
    assert history.page(OTHER_CONTACT, 0, 10) == ([TWIN, TWIN, E1], 3)
    assert history.save_many({CONTACT: Received.of([E3]), OTHER_CONTACT: Received.of([])}) \
        == {CONTACT: 0, OTHER_CONTACT: 0}
    assert row_counts(history) == (6, 2)
    assert history.save_many({}) == {}


def test_save_many_never_moves_a_newest_time_back(history: HistoryStore) -> None:
    """Another writer (a booking's history read, an on-demand fetch) stored newer entries
    after the chunk read the contact's state: the chunk's older answer keeps them."""
    history.save(CONTACT, [E4])
    history.save_many({CONTACT: Received.of([E1, E2]), OTHER_CONTACT: Received.of([])})
    assert history.newest_times([CONTACT, OTHER_CONTACT]) == \
        {CONTACT: us(E4["dateTime"]), OTHER_CONTACT: None}
    history.save_many({OTHER_CONTACT: Received.of([E2])})
    history.save_many({OTHER_CONTACT: Received.of([])})
    assert history.newest_times([OTHER_CONTACT]) == {OTHER_CONTACT: us(E2["dateTime"])}


def test_newest_times_of_more_ids_than_one_query_takes(history: HistoryStore) -> None:
    ids = [f"00000000-0000-4000-8000-{k:012d}" for k in range(2000)]
    fetched = {ids[0]: [E1], ids[950]: [], ids[1999]: [E2, E3]}
    history.save_many({c: Received.of(e) for c, e in fetched.items()})
    assert history.newest_times(ids) == {ids[0]: us(E1["dateTime"]), ids[950]: None,
                                         ids[1999]: us(E3["dateTime"])}
    assert history.newest_times([]) == {}


def test_a_malformed_entry_is_refused_before_anything_is_written(history: HistoryStore) -> None:
    with pytest.raises(MalformedHistory):
        Received.of([E1, {**E2, "dateTime": 17}])
    assert row_counts(history) == (0, 0)
