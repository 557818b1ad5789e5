"""Treazure's OAuth2 access tokens: opaque random strings with an expiry."""

import secrets
import time


class Tokens:
    def __init__(self) -> None:
        self._expiry: dict[str, float] = {}  # token → time.monotonic() when it stops working

    def issue(self, ttl: float) -> str:
        now = time.monotonic()
        # Forget dead tokens here so a worker that re-authenticates often cannot grow the dict.
        self._expiry = {token: end for token, end in self._expiry.items() if end > now}
        token = secrets.token_urlsafe(32)
        self._expiry[token] = now + ttl
        return token

    def valid(self, token: str) -> bool:
        return self._expiry.get(token, float("-inf")) > time.monotonic()

    def revoke_all(self) -> None:
        self._expiry.clear()
