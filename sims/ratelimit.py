"""Sliding one-second windows: Engage's rate limit and the peak request rate seen."""

from collections import deque


class SlidingSecond:
    """Times of the events within the last second, i.e. in (now - 1, now]."""

    def __init__(self) -> None:
        self._times: deque[float] = deque()

    def count(self, now: float) -> int:
        while self._times and self._times[0] <= now - 1.0:
            self._times.popleft()
        return len(self._times)

    def add(self, now: float) -> None:
        self._times.append(now)


class RateLimiter:
    """Admits at most `limit` requests per sliding second per key (Engage counts per apikey)."""

    def __init__(self) -> None:
        self._windows: dict[str, SlidingSecond] = {}

    def admit(self, key: str, now: float, limit: int) -> bool:
        window = self._windows.setdefault(key, SlidingSecond())
        if window.count(now) >= limit:
            return False  # refused requests do not count: a client that backs off gets through
        window.add(now)
        return True
