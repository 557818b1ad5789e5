"""The end-to-end check: does Engage hold Treazure's current balance for every contact?"""

from typing import Any

from orjson import Fragment

from sims.follower import Follower
from sims.ledger import Ledger
from sims.money import cents_to_json

_SHOWN = 20  # mismatches listed in full; the rest are only counted


def compare_balances(ledger: Ledger, follower: Follower, since_us: int | None) -> dict[str, Any]:
    """Checks accounts whose newest mutation is at or after `since_us` (all if None) and that
    Engage knows. One pass over the columns: about 0.2 s for a million accounts."""
    since = since_us if since_us is not None else -(2**63)
    checked = 0
    mismatched: list[int] = []
    for account, (known, last_us, treazure, engage) in enumerate(
        zip(follower.known, ledger.last_us, ledger.balance, follower.balance, strict=True)
    ):
        if known and last_us >= since:
            checked += 1
            if treazure != engage:
                mismatched.append(account)
    return {
        "checked": checked,
        "mismatch_count": len(mismatched),
        "mismatches": [
            {
                "contactId": ledger.ids[account],
                "treazure": Fragment(cents_to_json(ledger.balance[account])),
                "engage": Fragment(cents_to_json(follower.balance[account])),
            }
            for account in mismatched[:_SHOWN]
        ],
    }
