"""Verifying what an outside system sends us: one protocol every webhook scheme implements
(Svix today; HMAC headers with a timestamp next), and the pieces those schemes share.

A route holds a `SignatureVerifier` and knows nothing of the scheme: `verify` returns for a
genuine request and raises `BadSignature`, whose message is safe to answer with (it never
carries the secret).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping
from typing import Protocol


class BadSignature(Exception):
    """The request is not proven to come from the sender: answered 401, never processed."""

    @classmethod
    def mismatch(cls) -> BadSignature:
        return cls("signature: does not match the body (wrong secret or altered body)")


class SignatureVerifier(Protocol):
    def verify(self, body: bytes, headers: Mapping[str, str]) -> None:
        """Return if `body` with `headers` is signed by the sender; else raise BadSignature."""
        ...


def same_secret(given: str, wanted: str) -> bool:
    """Constant-time equality of two texts; an empty one never matches.

    Bytes: compare_digest refuses non-ASCII str, and a header may carry anything.
    """
    if not (given and wanted):
        return False
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"),
                               wanted.encode("utf-8", "surrogatepass"))


def hmac_sha256(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


def check_timestamp(
    sent: str, tolerance_seconds: float, *, header: str, now: float | None = None
) -> int:
    """The Unix time in a signature's timestamp header, if within `tolerance_seconds` of
    now (either way: a replay is as unwelcome as a clock far ahead); else BadSignature."""
    try:
        stamp = int(sent)
    except ValueError:
        raise BadSignature(f"timestamp: {header} is not a Unix time") from None
    skew = (time.time() if now is None else now) - stamp
    if abs(skew) > tolerance_seconds:
        side = "too old" if skew > 0 else "too new"
        raise BadSignature(
            f"timestamp: more than {tolerance_seconds:g} seconds off ({header} {side})")
    return stamp
