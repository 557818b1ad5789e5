"""Treazure's books: accounts, their balances and history, and the mutation log.

Built for a million accounts: columns of machine integers (`array`) indexed by an account's
position instead of one object per account, and no history object for an account until a
transaction touches it (its opening entry is read back from the mutation log).
"""

from array import array
from dataclasses import dataclass
from typing import Any

from orjson import Fragment

from sims.clock import format_us, now_us
from sims.money import cents_to_json


@dataclass(frozen=True, slots=True)
class Movement:
    """One history entry: the opening balance, a transaction, or a random mutation."""

    at_us: int
    amount: int  # cents, negative for a redemption
    balance: int  # cents after the movement
    comment: str | None
    operator_id: str | None
    receipt_nr: str | None

    def as_json(self) -> dict[str, Any]:
        return {
            "dateTime": format_us(self.at_us),
            "amount": Fragment(cents_to_json(self.amount)),
            "transactionType": "Load" if self.amount >= 0 else "Redeem",
            "expiresAt": None,
            "balance": Fragment(cents_to_json(self.balance)),
            "comment": self.comment,
            "operatorId": self.operator_id,
            "shopId": None,
            "posId": None,
            "receiptNr": self.receipt_nr,
            "properties": {},
        }


class Ledger:
    def __init__(self) -> None:
        self.ids: list[str] = []  # account position → accountNumber
        self.index: dict[str, int] = {}  # accountNumber → account position
        self.balance = array("q")  # current balance in cents
        self.last_us = array("q")  # mutatedAt of the account's newest log entry
        self._opening = array("q")  # log position of the entry that opened the account
        self._movements: dict[int, list[Movement]] = {}
        # The mutation log, one column per field; balances jobs select from it.
        self.log_account = array("q")
        self.log_cents = array("q")
        self.log_us = array("q")
        self.log_at: list[str] = []  # format_us(log_us), cached: pages serve thousands at once

    def __len__(self) -> int:
        return len(self.ids)

    def open_accounts(self, ids: list[str], cents: list[int], stamps_us: list[int]) -> None:
        """Add accounts, each with one opening log entry; the log gets them in the given order."""
        # Seeded stamps repeat (a million entries share a few thousand seconds): format each once.
        texts: dict[int, str] = {}
        stamps = [texts.get(us) or texts.setdefault(us, format_us(us)) for us in stamps_us]
        first, position, count = len(self.ids), len(self.log_at), len(ids)
        self.ids.extend(ids)
        self.index.update(zip(ids, range(first, first + count), strict=True))
        self.balance.fromlist(cents)  # fromlist: twice as fast as extend for a million rows
        self.last_us.fromlist(stamps_us)
        self._opening.extend(range(position, position + count))
        self.log_account.extend(range(first, first + count))
        self.log_cents.fromlist(cents)
        self.log_us.fromlist(stamps_us)
        self.log_at.extend(stamps)

    def record(self, account: int, cents: int, at_us: int) -> None:
        """Append a log entry; it becomes the current balance only if it is the newest one."""
        self._log(account, cents, at_us)
        if at_us >= self.last_us[account]:
            self.balance[account] = cents
            self.last_us[account] = at_us

    def book(
        self,
        account: int,
        amount: int,
        comment: str | None = None,
        operator_id: str | None = None,
        receipt_nr: str | None = None,
    ) -> int:
        """Move `amount` cents now (balance, history and log entry); returns the new balance."""
        at_us = now_us()
        balance = self.balance[account] + amount
        self._log(account, balance, at_us)
        # A booking is the latest movement even if a crafted log entry claims a later time.
        self.balance[account] = balance
        self.last_us[account] = max(self.last_us[account], at_us)
        movement = Movement(at_us, amount, balance, comment, operator_id, receipt_nr)
        self._movements.setdefault(account, []).append(movement)
        return balance

    def window(self, from_us: int, to_us: int) -> array:
        """Log positions with from <= mutatedAt < to, in log order (a balances job's snapshot)."""
        return array("q", [k for k, us in enumerate(self.log_us) if from_us <= us < to_us])

    def history(self, account: int, from_us: int | None = None) -> list[dict[str, Any]]:
        """The account's history in Treazure's wire shape, oldest first, optionally from a time."""
        opening = self._opening[account]
        cents = self.log_cents[opening]
        movements = [
            Movement(self.log_us[opening], cents, cents, "opening balance", "sim", None),
            *self._movements.get(account, ()),
        ]
        return [m.as_json() for m in movements if from_us is None or m.at_us >= from_us]

    def history_length(self, account: int) -> int:
        return 1 + len(self._movements.get(account, ()))

    def _log(self, account: int, cents: int, at_us: int) -> None:
        self.log_account.append(account)
        self.log_cents.append(cents)
        self.log_us.append(at_us)
        self.log_at.append(format_us(at_us))
