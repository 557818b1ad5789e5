"""Counters the tests and the benchmark read from `/_sim/stats`."""

from collections import Counter
from typing import Any

from sims.ratelimit import SlidingSecond
from sims.targets import is_engage


class Stats:
    def __init__(self) -> None:
        self.requests: Counter[str] = Counter()  # "<target> <status or drop>" → count
        self.arrivals: Counter[str] = Counter()  # target → requests that arrived (answered or not)
        self.token_requests = 0
        self.engage_push_requests = 0
        self.engage_push_items = 0
        self.engage_429 = 0
        self.engage_peak_rps = 0
        self._engage_arrivals = SlidingSecond()

    def arrived(self, target: str, now: float) -> None:
        """Called for every API request before anything else (faults included)."""
        self.arrivals[target] += 1
        if target == "treazure.token":
            self.token_requests += 1
        elif is_engage(target):
            # Every request Engage sees counts towards the peak, refused (429) ones too.
            self.engage_peak_rps = max(self.engage_peak_rps, self._engage_arrivals.count(now) + 1)
            self._engage_arrivals.add(now)

    def answered(self, target: str, outcome: int | str) -> None:
        self.requests[f"{target} {outcome}"] += 1

    def as_json(self, faults_pending: int) -> dict[str, Any]:
        return {
            "requests": dict(self.requests),
            "arrived": dict(self.arrivals),
            "token_requests": self.token_requests,
            "engage_push_requests": self.engage_push_requests,
            "engage_push_items": self.engage_push_items,
            "engage_429": self.engage_429,
            "engage_peak_rps": self.engage_peak_rps,
            "faults_pending": faults_pending,
        }
