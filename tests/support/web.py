"""Constants and helpers shared by the web tests (imported by conftest and test modules)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from kombu.exceptions import OperationalError
from svix.webhooks import Webhook

SECRET = "whsec_" + base64.b64encode(b"pointsync-web-test-signing-key-32").decode()
OTHER_SECRET = "whsec_" + base64.b64encode(b"somebody-else-s-signing-key-0032").decode()
API_KEY = "web-K3Y-5ec7e7"
CONTACT = "6c1e2f4a-0b1c-4d2e-9f00-1a2b3c4d5e6f"
REDIS_DB11 = "redis://127.0.0.1:6379/11"
CLOSED_REDIS = "redis://127.0.0.1:6399/0"  # nothing listens there

ENV = {
    "TREAZURE_BASE_URL": "https://acme.posengine.test.cloud",
    "TREAZURE_CLIENT_ID": "pointsync-client",
    "TREAZURE_CLIENT_SECRET": "tz-S3CRET-4f1d9c",
    "TREAZURE_LOYALTY_ID": "points",
    "ENGAGE_BASE_URL": "https://acme.voyado.test",
    "ENGAGE_API_KEY": "eng-K3Y-77ab20",
    "WEBHOOK_SECRET": SECRET,
    "WEB_API_KEY": API_KEY,
    "REDIS_URL": REDIS_DB11,
}


def event(
    event_id: str | None = "evt_1", *, amount: Any = 25, description: Any = "Review bonus",
    contact: Any = CONTACT, event_type: str = "loyalty.addPoints",
) -> bytes:
    """An Engage webhook body shaped like contract §Engage 3."""
    body: dict[str, Any] = {
        "eventType": event_type, "isEncrypted": False, "tenant": "acme",
        "payload": {"amount": amount, "contactId": contact, "pointDefinitionId": 1,
                    "source": "Manual", "description": description, "userId": "u-1",
                    "userName": "Agent", "reason": "bonus", "sourceId": "s-1"},
    }
    if event_id is not None:
        body["id"] = event_id
    return json.dumps(body).encode()


def signed(
    body: bytes, *, msg_id: str = "msg_2a1b3c", secret: str = SECRET,
    age: timedelta = timedelta(0),
) -> dict[str, str]:
    """Real Svix headers for `body`, signed `age` ago."""
    at = datetime.now(UTC) - age
    return {
        "svix-id": msg_id,
        "svix-timestamp": str(int(at.timestamp())),
        "svix-signature": Webhook(secret).sign(msg_id, at, body.decode()),
        "content-type": "application/json",
    }


class EnqueueStub:
    """Stands in for the Celery send: records kwargs, or raises like a broker that is down."""

    def __init__(self) -> None:
        self.calls: list[dict[str, str]] = []
        self.down = False

    def __call__(self, kwargs: dict[str, str]) -> None:
        if self.down:
            raise OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
        self.calls.append(dict(kwargs))
