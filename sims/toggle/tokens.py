"""JWT-like login tokens: a lifetime, and a sliding refresh that hands out a successor."""

import base64
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class Token:
    issued: float
    expires: float
    successor: str | None = None  # set once replaced: the token the answers hand out instead
    rotate: bool = False  # replace at its next use (a control switch)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Tokens:
    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._tokens: dict[str, Token] = {}

    def issue(self, user_id: int, ttl: float) -> str:
        now = self._clock()
        self._tokens = {text: t for text, t in self._tokens.items() if t.expires > now}
        header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        claims = {"sub": user_id, "iat": int(now), "exp": int(now + ttl),
                  "jti": secrets.token_hex(8)}
        token = f"{header}.{_b64(json.dumps(claims).encode())}.{_b64(secrets.token_bytes(32))}"
        self._tokens[token] = Token(now, now + ttl)
        return token

    def valid(self, token: str) -> bool:
        found = self._tokens.get(token)
        return found is not None and found.expires > self._clock()

    def refreshed(self, token: str, user_id: int, ttl: float, refresh_after: float,
                  grace: float) -> str | None:
        """The new token to announce for a request made with valid `token`, if it is time."""
        found = self._tokens[token]
        if found.successor is not None and self.valid(found.successor):
            return found.successor  # requests in flight with the old token learn the same new one
        now = self._clock()
        if not found.rotate and now - found.issued < refresh_after * (found.expires - found.issued):
            return None
        found.successor = self.issue(user_id, ttl)
        found.rotate = False
        found.expires = min(found.expires, now + grace)
        return found.successor

    def expire_all(self) -> None:
        self._tokens.clear()

    def rotate_all(self) -> None:
        for token in self._tokens.values():
            token.rotate = True
