"""The pages of a balances job's result, written straight to JSON text.

A page holds up to 5,000 items and a million-item job has 200 of them, so the JSON is spliced
from cached parts (ids and times are plain strings needing no escaping, balances exact cents)
instead of building and serialising 5,000 dicts: about 2 ms a page instead of 6.
"""

from array import array

import orjson

from sims.ledger import Ledger
from sims.money import cents_to_json


def render_page(
    ledger: Ledger,
    entries: array,
    page: int,
    page_size: int,
    loyalty_id: str,
    result_href: str,
) -> bytes:
    """Page `page` (1-based) of the log `entries`, with the href of the next page or null."""
    start = (page - 1) * page_size
    more = start + page_size < len(entries)
    next_href = orjson.dumps(f"{result_href}?page={page + 1}" if more else None).decode()
    loyalty = orjson.dumps(loyalty_id).decode()
    ids, accounts, cents, stamps = ledger.ids, ledger.log_account, ledger.log_cents, ledger.log_at
    items = ",".join(
        f'{{"accountNumber":"{ids[accounts[k]]}","loyaltyPointDefinitionId":{loyalty},'
        f'"balance":{cents_to_json(cents[k])},"mutatedAt":"{stamps[k]}"}}'
        for k in entries[start : start + page_size]
    )
    return f'{{"items":[{items}],"next":{next_href}}}'.encode()
