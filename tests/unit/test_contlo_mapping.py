"""Nector's body → Contlo's track call: event names and overrides, properties, profile
properties, email and phone, and the event with no contact at all."""

from __future__ import annotations

import orjson
import pytest

from sims.senders import nector_event
from worker.systems.contlo.mapping import (
    ContloCall,
    NoContact,
    contlo_call_for,
    event_name,
)


def body(topic: str, **fields: object) -> dict:
    return orjson.loads(nector_event(topic, **fields))


@pytest.mark.parametrize(("topic", "name"), [
    ("walletreward_create", "Wallet Coins Rewarded"),
    ("coupon_create", "Coupon Is Created"),
    ("coinexpirynotify_create", "coinexpirynotify_create"),
    ("review_create", "review_create"),
])
def test_the_contract_names(topic, name) -> None:
    assert event_name(topic) == name


def test_overrides_come_first_and_leave_the_rest() -> None:
    names = {"coupon_create": "Coupon Ready", "review_create": "Review Posted"}

    assert event_name("coupon_create", names) == "Coupon Ready"
    assert event_name("review_create", names) == "Review Posted"
    assert event_name("walletreward_create", names) == "Wallet Coins Rewarded"


def test_a_wallet_reward_becomes_the_contract_call() -> None:
    call = contlo_call_for(body("walletreward_create"), "walletreward_create", {})

    assert call == ContloCall(
        event="Wallet Coins Rewarded", email="asha@example.in", phone="+919800000000",
        properties={"wallet_coin_amount": 50, "wallet_coin_balance": 450,
                    "reward_title": "Order reward", "reward_type": "order"},
        profile_properties={"name": "Asha Rao", "tier": "Gold", "referral_code": "ASHA10",
                            "customer_id": "cust-1001"})


def test_properties_are_the_topic_own_fields_whatever_they_are() -> None:
    nector = body("review_create", rating=5, review_text="Great", product_id="p-9")

    call = contlo_call_for(nector, "review_create", {"review_create": "Review Posted"})

    assert isinstance(call, ContloCall)
    assert call.event == "Review Posted"
    assert call.properties == {"rating": 5, "review_text": "Great", "product_id": "p-9"}
    for common in ("business_name", "user_email", "user_type", "created_at"):
        assert common not in call.properties


def test_a_coupon_keeps_every_coupon_field() -> None:
    call = contlo_call_for(body("coupon_create"), "coupon_create")

    assert isinstance(call, ContloCall)
    assert call.event == "Coupon Is Created"
    assert set(call.properties) == {"coupon_code", "coupon_title", "coupon_value",
                                    "coupon_expire", "coins_used"}


@pytest.mark.parametrize(("email", "mobile", "want"), [
    ("asha@example.in", "", ("asha@example.in", None)),
    ("", "+919800000000", (None, "+919800000000")),
    (None, " +919800000000 ", (None, "+919800000000")),
])
def test_either_contact_is_enough(email, mobile, want) -> None:
    call = contlo_call_for(body("coupon_create", user_email=email, user_mobile=mobile),
                           "coupon_create")

    assert isinstance(call, ContloCall)
    assert (call.email, call.phone) == want


@pytest.mark.parametrize("missing", [{"user_email": "", "user_mobile": ""},
                                     {"user_email": None, "user_mobile": "  "}])
def test_no_email_and_no_phone_is_no_contact(missing) -> None:
    call = contlo_call_for(body("walletreward_create", **missing), "walletreward_create")

    assert isinstance(call, NoContact)
    assert "neither user_email nor user_mobile" in call.reason


def test_absent_profile_fields_are_left_out() -> None:
    nector = body("coupon_create", user_tier=None)
    del nector["user_referral_code"]

    call = contlo_call_for(nector, "coupon_create")

    assert isinstance(call, ContloCall)
    assert call.profile_properties == {"name": "Asha Rao", "customer_id": "cust-1001"}
