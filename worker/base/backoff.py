"""One backoff formula for every retry: a pause that doubles with each attempt up to a
cap, with jitter where many callers may fail together, or the remote's Retry-After."""

from __future__ import annotations

import random

# Doublings beyond this change nothing under any cap in use; the bound keeps the pause a
# finite float however many attempts were made.
MAX_DOUBLINGS = 16


def doubled(first: float, doublings: int, cap: float) -> float:
    """`first` doubled `doublings` times (none for a negative count), at most `cap`."""
    return min(cap, first * 2 ** min(max(doublings, 0), MAX_DOUBLINGS))


def jittered(
    first: float,
    doublings: int,
    cap: float,
    *,
    retry_after: float | None = None,
    retry_after_cap: float | None = None,
) -> float:
    """The pause before a retry: the remote's Retry-After when it gave one (at most
    `retry_after_cap`, or `cap`), else `doubled` drawn between half and all of it, so
    callers that failed together do not all come back together."""
    if retry_after is not None:
        return min(retry_after, cap if retry_after_cap is None else retry_after_cap)
    ceiling = doubled(first, doublings, cap)
    return random.uniform(ceiling / 2, ceiling)
