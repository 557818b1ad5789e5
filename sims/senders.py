"""Signed Toggle and Nector webhook deliveries, built as the contract says the sources send
them: for the tests, the demo and the benchmark (and nothing in the worker)."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import time
import uuid
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any

import orjson

# The source-side secrets the simulators' environment gives the worker (harness env()).
TOGGLE_WEBHOOK_SECRET = "sim-toggle-webhook-secret"
NECTOR_WEBHOOK_SECRET = "sim-nector-webhook-secret"

# Unique across runs as well as within one: event ids are the receiver's dedup key.
_ids = itertools.count(time.time_ns() // 1000)


def toggle_time(when: datetime | None = None) -> str:
    """Toggle's timestamp format: `2026-11-21T16:01:27.000000Z`."""
    return (when or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def toggle_event(type: str, data_object: dict[str, Any], id: int | None = None,
                 created_at: str | datetime | None = None) -> bytes:
    """Toggle's envelope around `data_object`, as raw JSON bytes."""
    if not isinstance(created_at, str):
        created_at = toggle_time(created_at)
    return orjson.dumps({
        "id": next(_ids) if id is None else id,
        "object": "event",
        "api_version": "3.2",
        "webhook_version": "1.0",
        "created_at": created_at,
        "type": type,
        "data": {"object": data_object},
    })


def toggle_signature(body: bytes, secret: str) -> str:
    return hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def sign_toggle(body: bytes, secret: str = TOGGLE_WEBHOOK_SECRET) -> dict[str, str]:
    """The headers Toggle sends with `body`."""
    return {"Content-Type": "application/json",
            "Toggle-Signature": toggle_signature(body, secret)}


_COMMON = {
    "business_name": "Acme Store", "business_uri": "acme-store.myshopify.com",
    "business_coin_name": "Acme Coins", "business_currency_code": "INR",
    "user_customer_id": "cust-1001", "user_name": "Asha Rao", "user_email": "asha@example.in",
    "user_mobile": "+919800000000", "user_tier": "Gold", "user_type": "member",
    "user_referral_code": "ASHA10",
}
_TOPIC_FIELDS: dict[str, dict[str, Any]] = {
    "walletreward_create": {"wallet_coin_amount": 50, "wallet_coin_balance": 450,
                            "reward_title": "Order reward", "reward_type": "order"},
    "coupon_create": {"coupon_code": "ACME-7Q2X", "coupon_title": "Rs 100 off",
                      "coupon_value": 100, "coupon_expire": "2026-12-31T23:59:59Z",
                      "coins_used": 200},
    "coinexpirynotify_create": {"expiring_coin_amount": 120,
                                "expire_at": "2026-12-01T00:00:00Z"},
}
# body → topic of the bodies nector_event built lately, so sign_nector can name the topic.
_TOPICS: OrderedDict[bytes, str] = OrderedDict()
_TOPICS_KEPT = 10_000


def nector_event(topic: str, **fields: Any) -> bytes:
    """A Nector webhook body for `topic`: the common fields and the topic's own ones with
    sample values, `fields` overriding (user_email="" for a customer without email)."""
    body = {**_COMMON, **_TOPIC_FIELDS.get(topic, {}),
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"), **fields}
    raw = orjson.dumps(body)
    _TOPICS[raw] = topic
    while len(_TOPICS) > _TOPICS_KEPT:
        _TOPICS.popitem(last=False)
    return raw


def nector_hmac(body: bytes, secret: str, timestamp: int) -> str:
    """hex HMAC-SHA256(secret's UTF-8 bytes, "{timestamp}.{raw body}")."""
    return hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode() + body,
                    hashlib.sha256).hexdigest()


def sign_nector(body: bytes, secret: str = NECTOR_WEBHOOK_SECRET,
                delivery_id: str | None = None, timestamp: int | None = None, *,
                topic: str | None = None) -> dict[str, str]:
    """The headers Nector sends with `body`. A retry is the same body and delivery id with a
    fresh timestamp. `topic` defaults to the one nector_event built `body` for."""
    topic = topic or _TOPICS.get(body)
    if topic is None:
        raise ValueError("topic: not given and body was not built by nector_event")
    stamp = int(time.time()) if timestamp is None else timestamp
    return {
        "content-type": "application/json",
        "x-source": "unix",
        "x-nector-topic": topic,
        "x-nector-delivery-id": delivery_id or str(uuid.uuid4()),
        "x-nector-timestamp": str(stamp),
        "x-nector-webhook-secret-algo": "sha256",
        "x-nector-webhook-secret": hashlib.sha256(secret.encode("utf-8")).hexdigest(),
        "x-nector-webhook-hmac-algo": "sha256",
        "x-nector-webhook-hmac": nector_hmac(body, secret, stamp),
    }
