"""What Toggle sends us: its webhooks, signed with `Toggle-Signature` (lowercase hex
HMAC-SHA256 of the raw body with TOGGLE_WEBHOOK_SECRET; contract-connectors.md §Toggle
webhooks), verified before anything is read, then read as Toggle's event envelope.

No timestamp is signed, so there is no replay window: the event `id` is what makes a
repeat recognisable. The subject of an event — what its order is kept within — is the card
or the order it is about, read from `data.object` per the contract's [assumed] shapes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from worker.base.event_body import NotAnObject, event_time, json_object
from worker.base.signatures import BadSignature, hmac_sha256, same_secret

SIGNATURE_HEADER = "Toggle-Signature"
# The five events that make Atreemo send an email Toggle may be sending already.
EMAIL_TRIGGERS = frozenset({
    "order.send_receipt_email", "card.send_recipient_email", "card.resend_recipient_email",
    "card.expiry_reminder", "order.send_cancellation_email"})
# The ten types of the CRM integration; others are recorded, never forwarded.
CRM_TYPES = EMAIL_TRIGGERS | {
    "order.created", "fulfilment.dispatched", "card.balance_adjusted", "card.registered",
    "order.cancelled"}


class ToggleVerifier:
    """A SignatureVerifier for Toggle's `Toggle-Signature` header."""

    def __init__(self, secret: str) -> None:
        if not secret:
            raise ValueError("the signing secret is empty")
        self._key = secret.encode("utf-8")

    def sign(self, body: bytes) -> str:
        return hmac_sha256(self._key, body).hex()

    def verify(self, body: bytes, headers: Mapping[str, str]) -> None:
        given = headers.get(SIGNATURE_HEADER, "")
        if not given:
            raise BadSignature(f"signature: missing header {SIGNATURE_HEADER}")
        if not same_secret(given, self.sign(body)):
            raise BadSignature.mismatch()


class BadToggleEvent(Exception):
    """A genuine delivery whose body is not a Toggle event: answered 400."""


@dataclass(frozen=True)
class ToggleEvent:
    event_id: str
    type: str
    created_at: datetime
    subject: str


def read_event(body: bytes, received_at: datetime) -> ToggleEvent:
    """The envelope's id, type, creation time and subject; BadToggleEvent naming the field.
    An event without a usable `created_at` is placed at `received_at`."""
    try:
        envelope = json_object(body)
    except NotAnObject as exc:
        raise BadToggleEvent(str(exc)) from None
    event_id = envelope.get("id")
    if isinstance(event_id, bool) or not isinstance(event_id, int | str) or event_id == "":
        raise BadToggleEvent("id: missing or not a number or text")
    event_id = str(event_id)
    if len(event_id) > 128:
        raise BadToggleEvent("id: longer than 128 characters")
    kind = envelope.get("type")
    if not isinstance(kind, str) or not kind or len(kind) > 128:
        raise BadToggleEvent("type: missing or not a text")
    data = envelope.get("data")
    obj = data.get("object") if isinstance(data, dict) else None
    return ToggleEvent(event_id, kind.lower(), event_time(envelope.get("created_at"), received_at),
                       subject_of(obj, event_id))


def subject_of(obj: Any, event_id: str) -> str:
    """`card:<id>` or `order:<id>`: the card or order the event is about."""
    if isinstance(obj, dict):
        kind, own = obj.get("object"), obj.get("id")
        if kind in ("order", "card") and _id(own):
            return f"{kind}:{own}"
        card = obj.get("card")
        if isinstance(card, dict) and _id(card.get("id")):
            return f"card:{card['id']}"
        items = obj.get("line_items")
        if isinstance(items, list) and items and isinstance(items[0], dict):
            card = items[0].get("card")
            if isinstance(card, dict) and _id(card.get("id")):
                return f"card:{card['id']}"
        if isinstance(kind, str) and _id(own):
            return f"{kind}:{own}"
    return f"event:{event_id}"  # nothing to order it with: a subject of its own


def _id(value: Any) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool)) or (
        isinstance(value, str) and 0 < len(value) <= 64)

