"""Counters the tests and the benchmark read from the Toggle simulator's `/_sim/stats`."""

from collections import Counter
from typing import Any


class ToggleStats:
    def __init__(self) -> None:
        self.arrived: Counter[str] = Counter()  # operation → requests (faulted ones too)
        self.answers: Counter[str] = Counter()  # "<operation> <outcome>" → count
        self.throttled = 0
        self.unauthorized = 0
        self.logins = 0
        self.credits_spent = 0

    def answered(self, operation: str, outcome: int | str) -> None:
        self.answers[f"{operation} {outcome}"] += 1

    def as_json(self, credits: int, faults_pending: int) -> dict[str, Any]:
        return {
            "requests": dict(self.arrived),
            "answers": dict(self.answers),
            "throttled": self.throttled,
            "unauthorized": self.unauthorized,
            "logins": self.logins,
            "credits_spent": self.credits_spent,
            "credits_available": credits,
            "faults_pending": faults_pending,
        }
