"""What Nector sends us: its webhooks, verified before anything is read
(contract-connectors.md §Nector webhooks).

`x-nector-webhook-hmac` is the lowercase hex HMAC-SHA256 of "{timestamp}.{raw body}" with
the secret's UTF-8 bytes [computation assumed], `x-nector-timestamp` within 5 minutes of
now. `x-nector-webhook-secret` is a fixed value, not proof: it is not relied on. A retry
carries the same `x-nector-delivery-id`: the key a repeat is recognised by. The subject of
an event — what its order is kept within — is the customer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from worker.base.event_body import NotAnObject, event_time, json_object
from worker.base.signatures import BadSignature, check_timestamp, hmac_sha256, same_secret

HMAC_HEADER = "x-nector-webhook-hmac"
TIMESTAMP_HEADER = "x-nector-timestamp"
DELIVERY_HEADER = "x-nector-delivery-id"
TOPIC_HEADER = "x-nector-topic"
TOLERANCE_SECONDS = 300.0


class NectorVerifier:
    """A SignatureVerifier for Nector's HMAC headers."""

    def __init__(self, secret: str, tolerance_seconds: float = TOLERANCE_SECONDS) -> None:
        if not secret:
            raise ValueError("the secret is empty")
        self._key = secret.encode("utf-8")
        self.tolerance = tolerance_seconds

    def sign(self, timestamp: str, body: bytes) -> str:
        return hmac_sha256(self._key, timestamp.encode("ascii") + b"." + body).hex()

    def verify(self, body: bytes, headers: Mapping[str, str]) -> None:
        given, sent = headers.get(HMAC_HEADER, ""), headers.get(TIMESTAMP_HEADER, "")
        if missing := [name for name, value in ((HMAC_HEADER, given), (TIMESTAMP_HEADER, sent))
                       if not value]:
            raise BadSignature(f"signature: missing header {', '.join(missing)}")
        check_timestamp(sent, self.tolerance, header=TIMESTAMP_HEADER)
        if not sent.isascii() or not same_secret(given, self.sign(sent, body)):
            raise BadSignature.mismatch()


class BadNectorEvent(Exception):
    """A genuine delivery that is not a Nector event this receiver can read: answered 400."""


@dataclass(frozen=True)
class NectorEvent:
    delivery_id: str
    topic: str
    created_at: datetime
    subject: str


def read_event(body: bytes, headers: Mapping[str, str], received_at: datetime) -> NectorEvent:
    delivery_id = headers.get(DELIVERY_HEADER, "").strip()
    if not delivery_id or len(delivery_id) > 128:
        raise BadNectorEvent(f"{DELIVERY_HEADER}: missing or longer than 128 characters")
    topic = headers.get(TOPIC_HEADER, "").strip()
    if not topic or len(topic) > 128:
        raise BadNectorEvent(f"{TOPIC_HEADER}: missing or longer than 128 characters")
    try:
        fields = json_object(body)
    except NotAnObject as exc:
        raise BadNectorEvent(str(exc)) from None
    return NectorEvent(delivery_id, topic, event_time(fields.get("created_at"), received_at),
                       subject_of(fields, delivery_id))


def subject_of(fields: Mapping[str, Any], delivery_id: str) -> str:
    """The customer: `customer:<user_customer_id>`, else `email:…`, else `mobile:…`."""
    for name, prefix in (("user_customer_id", "customer"), ("user_email", "email"),
                         ("user_mobile", "mobile")):
        value = fields.get(name)
        if isinstance(value, int | str) and not isinstance(value, bool) and str(value).strip():
            return f"{prefix}:{str(value).strip().lower() if prefix == 'email' else value}"
    return f"delivery:{delivery_id}"

