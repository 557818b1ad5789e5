"""Nector's webhook body → one Contlo track call, as the contract words it.

- event name: the topic's dashboard label (`walletreward_create` → `Wallet Coins Rewarded`,
  `coupon_create` → `Coupon Is Created`), any other topic its own name; CONTLO_EVENT_NAMES
  overrides;
- email and phone from `user_email` / `user_mobile` (either may be empty; neither: no call);
- `properties`: the topic's own fields, i.e. everything but Nector's common fields;
- `profile_properties`: name, tier, referral_code, customer_id from the `user_*` fields.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

DEFAULT_EVENT_NAMES: Mapping[str, str] = {
    "walletreward_create": "Wallet Coins Rewarded",
    "coupon_create": "Coupon Is Created",
}

# Nector's fields common to every topic (contract: "Common fields").
COMMON_FIELDS = frozenset({
    "business_name", "business_uri", "business_coin_name", "business_currency_code",
    "user_customer_id", "user_name", "user_email", "user_mobile", "user_tier", "user_type",
    "user_referral_code", "created_at",
})

# profile property → the user_* field it is taken from.
PROFILE_FIELDS: Mapping[str, str] = {
    "name": "user_name",
    "tier": "user_tier",
    "referral_code": "user_referral_code",
    "customer_id": "user_customer_id",
}

NO_CONTACT = "no contact: the event has neither user_email nor user_mobile"


@dataclass(frozen=True)
class ContloCall:
    """The arguments of ContloClient.track for one event."""

    event: str
    email: str | None
    phone: str | None
    properties: dict[str, Any] = field(default_factory=dict)
    profile_properties: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class NoContact:
    """Contlo would refuse the call (email or phone is mandatory): fail it, call nothing."""

    reason: str = NO_CONTACT


def event_name(topic: str, names: Mapping[str, str] | None = None) -> str:
    """Contlo's event name for a Nector topic; `names` (CONTLO_EVENT_NAMES) come first."""
    if names and topic in names:
        return names[topic]
    return DEFAULT_EVENT_NAMES.get(topic, topic)


def _contact(value: Any) -> str | None:
    """A usable email or phone, or None for a missing, null or blank one."""
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def contlo_call_for(
    nector_body: Mapping[str, Any], topic: str, names: Mapping[str, str] | None = None
) -> ContloCall | NoContact:
    email = _contact(nector_body.get("user_email"))
    phone = _contact(nector_body.get("user_mobile"))
    if email is None and phone is None:
        return NoContact()
    properties = {key: value for key, value in nector_body.items() if key not in COMMON_FIELDS}
    profile = {name: nector_body[source] for name, source in PROFILE_FIELDS.items()
               if nector_body.get(source) is not None}
    return ContloCall(event_name(topic, names), email, phone, properties, profile)
