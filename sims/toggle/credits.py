"""The cost-based throttle: one bucket of credits per API user, refilled continuously."""

from collections.abc import Callable


class Credits:
    def __init__(self, maximum: int, refill_per_second: float, clock: Callable[[], float]) -> None:
        self._clock = clock
        self.maximum = maximum
        self.refill_per_second = refill_per_second
        self._available = float(maximum)
        self._at = clock()

    def available(self) -> int:
        """Whole credits available now (what `currentlyAvailable` reports)."""
        self._refill()
        return int(self._available)

    def try_spend(self, cost: int) -> bool:
        """Take `cost` credits if that many are available; otherwise take nothing."""
        self._refill()
        if cost > self._available:
            return False
        self._available -= cost
        return True

    def set_available(self, credits: float) -> None:
        self._refill()
        self._available = min(float(credits), self.maximum)

    def reconfigure(self, maximum: int, refill_per_second: float) -> None:
        self._refill()  # credits earned at the old rate stay earned
        self.maximum, self.refill_per_second = maximum, refill_per_second
        self._available = min(self._available, maximum)

    def _refill(self) -> None:
        now = self._clock()
        elapsed = max(0.0, now - self._at)
        self._at = now
        self._available = min(self.maximum, self._available + elapsed * self.refill_per_second)
