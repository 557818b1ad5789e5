"""The signed sender: Toggle's envelope and signature, Nector's headers as the contract
words them (checked against an independent computation)."""

from __future__ import annotations

import hashlib
import hmac

import orjson
import pytest

from sims.senders import nector_event, sign_nector, sign_toggle, toggle_event


def test_toggle_event_is_the_contract_envelope() -> None:
    body = orjson.loads(toggle_event("card.registered", {"object": "card", "id": 7}, id=570,
                                     created_at="2026-11-21T16:01:27.000000Z"))

    assert body == {"id": 570, "object": "event", "api_version": "3.2",
                    "webhook_version": "1.0", "created_at": "2026-11-21T16:01:27.000000Z",
                    "type": "card.registered", "data": {"object": {"object": "card", "id": 7}}}


def test_toggle_events_get_distinct_ids_and_toggle_timestamps() -> None:
    first, second = (orjson.loads(toggle_event("order.created", {})) for _ in range(2))

    assert first["id"] != second["id"]
    assert first["created_at"].endswith("Z") and len(first["created_at"]) == 27


def test_sign_toggle_is_lowercase_hex_hmac_of_the_raw_body() -> None:
    body = toggle_event("order.created", {"object": "order"})

    headers = sign_toggle(body, "s3cret")

    assert headers["Toggle-Signature"] == hmac.new(b"s3cret", body, "sha256").hexdigest()
    assert headers["Content-Type"] == "application/json"


def test_sign_nector_sets_every_contract_header() -> None:
    body = nector_event("walletreward_create", user_email="")

    headers = sign_nector(body, "nec-s3cret", "dlv-1", 1_750_000_000)

    assert orjson.loads(body)["user_email"] == ""
    assert headers["x-nector-topic"] == "walletreward_create"
    assert headers["x-nector-delivery-id"] == "dlv-1"
    assert headers["x-nector-timestamp"] == "1750000000"
    assert headers["x-source"] == "unix" and headers["content-type"] == "application/json"
    assert headers["x-nector-webhook-secret-algo"] == "sha256"
    assert headers["x-nector-webhook-secret"] == hashlib.sha256(b"nec-s3cret").hexdigest()
    assert headers["x-nector-webhook-hmac-algo"] == "sha256"
    assert headers["x-nector-webhook-hmac"] == hmac.new(
        b"nec-s3cret", b"1750000000." + body, "sha256").hexdigest()


def test_a_retry_keeps_the_delivery_id_with_a_fresh_signature() -> None:
    body = nector_event("coupon_create")

    first = sign_nector(body, "k", "dlv-9", 100)
    retry = sign_nector(body, "k", "dlv-9", 160)

    assert first["x-nector-delivery-id"] == retry["x-nector-delivery-id"]
    assert first["x-nector-webhook-hmac"] != retry["x-nector-webhook-hmac"]


def test_a_body_from_elsewhere_needs_its_topic() -> None:
    with pytest.raises(ValueError, match="topic"):
        sign_nector(b'{"x": 1}', "k", "d", 1)

    assert sign_nector(b'{"x": 1}', "k", "d", 1, topic="lead_create")["x-nector-topic"] == (
        "lead_create")
