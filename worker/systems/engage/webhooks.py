"""What Engage sends us: its webhooks, signed by Svix, verified before anything is read,
then read as Engage's event envelope (`id`, `eventType`, `payload`).

The answers name what failed (a missing header, a timestamp out of Svix's 5-minute window,
a signature that does not match) so whoever configures the endpoint can fix it; none
ever echoes the secret.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, NoReturn

from svix.webhooks import Webhook, WebhookVerificationError

from worker.base.arguments import InvalidArgument
from worker.base.point_request import validate_reference
from worker.base.signatures import BadSignature

ADD_POINTS = "loyalty.addPoints"
MESSAGE_ID = "svix-id"
SIGNATURE_HEADERS = (MESSAGE_ID, "svix-timestamp", "svix-signature")


class SvixVerifier:
    """A SignatureVerifier for Svix's scheme (`whsec_…` secret, svix-* headers)."""

    def __init__(self, secret: str) -> None:
        # ValueError, never chained or echoed: the library's message could carry the secret.
        try:
            self._hook = Webhook(secret)
        except Exception:
            raise ValueError("the part after whsec_ must be non-empty base64") from None

    def verify(self, body: bytes, headers: Mapping[str, str]) -> None:
        wanted = {name: headers.get(name, "") for name in SIGNATURE_HEADERS}
        if missing := [name for name, value in wanted.items() if not value]:
            raise BadSignature(f"signature: missing header {', '.join(missing)}")
        try:
            self._hook.verify(body, wanted)
        except WebhookVerificationError as exc:
            why = str(exc)
            if "too old" in why or "too new" in why:
                raise BadSignature(f"timestamp: more than 5 minutes off ({why.lower()})") \
                    from None
            if "Invalid Signature Headers" in why:
                raise BadSignature("timestamp: svix-timestamp is not a Unix time") from None
            raise BadSignature.mismatch() from None
        except UnicodeDecodeError:
            raise BadSignature("signature: cannot be checked, the body is not UTF-8") from None
        except ValueError:  # svix splits and base64-decodes the header unguarded
            raise BadSignature("signature: malformed svix-signature header") from None


class BadEvent(Exception):
    """A genuine delivery whose body is not an event this receiver can read: answered 400."""


def parse_event(body: bytes) -> dict[str, Any]:
    """The event envelope, with amounts as Decimal: an amount keeps the exact text the
    JSON number carried."""

    def no_constants(name: str) -> NoReturn:
        raise ValueError(f"{name} is not JSON")

    try:
        event = json.loads(body, parse_float=Decimal, parse_constant=no_constants)
    except (ValueError, RecursionError):
        raise BadEvent("body: not valid JSON") from None
    if not isinstance(event, dict):
        raise BadEvent("body: must be a JSON object")
    if not isinstance(event.get("eventType"), str):
        raise BadEvent("eventType: missing or not a string")
    return event


def event_payload(event: dict[str, Any]) -> dict[str, Any]:
    if event.get("isEncrypted") is True:
        raise BadEvent("payload: encrypted, which this receiver does not support "
                       "(turn payload encryption off for the endpoint)")
    payload = event.get("payload")
    if not isinstance(payload, dict):
        raise BadEvent("payload: missing or not an object")
    return payload


def event_reference(event: dict[str, Any], headers: Mapping[str, str]) -> str:
    """The event's id, or Svix's message id when it has none: what makes a redelivery
    recognisable."""
    value = event.get("id")
    if value is None or value == "":
        value = headers.get(MESSAGE_ID)  # never empty here: verify demands it
    try:
        return validate_reference(value)
    except InvalidArgument as exc:
        raise BadEvent(str(exc)) from None
