"""Engage's point accounts, column-wise and aligned with the ledger's account positions.

Every Engage contact is also a Treazure account (the sim creates them together), so the two
share the ledger's accountNumber → position index; `known` marks the ones Engage has.
"""

from array import array
from collections.abc import Mapping
from typing import Any

from sims.clock import now_us, parse_us
from sims.errors import bad_request
from sims.money import json_to_cents


class Follower:
    def __init__(self) -> None:
        self.known = bytearray()  # 1 where Engage has the contact
        self.balance = array("q")  # cents
        self.set_count = array("q")  # balance pushes applied to the contact
        self.set_at_us = array("q")  # wall clock of the last applied push, µs; 0 = never

    def add(self, known: bytes, cents: list[int]) -> None:
        """Append contacts for the accounts the ledger just opened, in the same order."""
        self.known += known
        self.balance.fromlist(cents)
        # Zeros straight from memory: no Python int per row.
        zeros = bytes(self.set_count.itemsize * len(known))
        self.set_count.frombytes(zeros)
        self.set_at_us.frombytes(zeros)

    def set_balances(
        self, rows: list[Any], index: Mapping[str, int], definition_id: int
    ) -> list[dict[str, str]]:
        """Apply a balance push in order; returns the rows not accepted, with their reason.

        Validates every row before applying any, so a malformed row (not an object) refuses
        the whole request instead of leaving it half applied.
        """
        accepted: list[tuple[int, int]] = []
        refused: list[dict[str, str]] = []
        for row in rows:
            if not isinstance(row, dict):
                raise bad_request("every balance must be a JSON object")
            outcome = self._check(row, index, definition_id)
            if isinstance(outcome, str):
                refused.append({"contactId": row.get("contactId"), "reason": outcome})
            else:
                accepted.append(outcome)
        at_us = now_us()  # one stamp per request: its rows arrive together
        for account, cents in accepted:
            self.balance[account] = cents
            self.set_count[account] += 1
            self.set_at_us[account] = at_us
        return refused

    def _check(
        self, row: dict[str, Any], index: Mapping[str, int], definition_id: int
    ) -> tuple[int, int] | str:
        """(account, cents) of a row that can be applied, else the reason it is not accepted."""
        definition = row.get("definitionId")
        if type(definition) is not int or definition != definition_id:
            return "UnknownDefinition"
        contact = row.get("contactId")
        account = index.get(contact, -1) if isinstance(contact, str) else -1
        if account < 0 or not self.known[account]:
            return "ContactNotFound"
        cents = json_to_cents(row.get("amount"))
        if cents is None or cents < 0:
            return "InvalidAmount"
        try:
            parse_us(row.get("timeStamp"))
        except ValueError:
            return "InvalidTimeStamp"
        return account, cents
