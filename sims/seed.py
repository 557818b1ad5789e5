"""Bulk creation of accounts: a million in under two seconds, the same ones every run."""

from dataclasses import dataclass
from typing import Any

from sims.clock import DAY_US, HOUR_US, now_us
from sims.errors import SimError, bad_request
from sims.guids import seeded_ids
from sims.inputs import integer, time_us
from sims.state import SimState

_MAX_CENTS = 10_000_000  # seeded balances run from 0 to 99,999.99 points


@dataclass(frozen=True)
class SeedPlan:
    contacts: int
    changed: int  # the first `changed` accounts mutated within [changed_from, changed_to)
    changed_from_us: int
    changed_to_us: int
    old_at_us: int  # when the other accounts last mutated
    engage_unknown: int  # the last `engage_unknown` accounts are missing from Engage
    start_index: int  # seed index of the first account (its id encodes it)


def plan_from_json(body: dict[str, Any]) -> SeedPlan:
    """A SeedPlan from a `/_sim/seed` body, with the documented defaults."""
    now = now_us()
    contacts = integer(body, "contacts")
    plan = SeedPlan(
        contacts=contacts,
        changed=integer(body, "changed", contacts),
        changed_from_us=time_us(body, "changed_from", now - HOUR_US),
        changed_to_us=time_us(body, "changed_to", now),
        old_at_us=time_us(body, "old_at", now - 30 * DAY_US),
        engage_unknown=integer(body, "engage_unknown", 0),
        start_index=integer(body, "start_index", 0),
    )
    if plan.changed > contacts or plan.engage_unknown > contacts:
        raise bad_request("changed and engage_unknown cannot exceed contacts")
    if plan.changed and plan.changed_from_us >= plan.changed_to_us:
        raise bad_request("changed_from must be before changed_to")
    return plan


def seed(state: SimState, plan: SeedPlan) -> list[str]:
    """Create the plan's accounts in Treazure and Engage; returns their ids.

    Each account gets a pseudo-random balance and one log entry. The changed ones come first,
    spread evenly over the window in whole seconds and in time order, then the old ones.
    Engage knows all but the last `engage_unknown`, each with balance 0.
    """
    count, changed = plan.contacts, plan.changed
    ids = seeded_ids(plan.start_index, count)
    if not state.ledger.index.keys().isdisjoint(ids):
        raise SimError(409, "AlreadySeeded", "these ids exist; seed with another start_index")
    first = plan.start_index + 1  # + 1: index 0 would always get balance 0
    # Knuth's multiplicative hash: varied, reproducible balances without a random generator.
    cents = [index * 2654435761 % _MAX_CENTS for index in range(first, first + count)]
    span = plan.changed_to_us - plan.changed_from_us
    stamps_us = [
        plan.changed_from_us + span * k // changed // 1_000_000 * 1_000_000 for k in range(changed)
    ]
    stamps_us += [plan.old_at_us] * (count - changed)
    known = bytes([1]) * (count - plan.engage_unknown) + bytes(plan.engage_unknown)
    state.open_accounts(ids, cents, stamps_us, known, [0] * count)
    return ids
