"""The relays' settings: off when none is set, all or none per relay, the defaults of
interface.md, CONTLO_EVENT_NAMES, and the secrets kept out of sight."""

from __future__ import annotations

import pytest

from worker.base import settings as settings_module
from worker.base.logs import SECRET_SETTINGS, Redactor, default_redactor
from worker.base.settings import ConfigError, Settings, get_settings

TOGGLE_RELAY = {"TOGGLE_WEBHOOK_SECRET": "tg-hook-Secret-1",
                "ATREEMO_WEBHOOK_URL": "https://ingest.atreemo.test/toggle",
                "ATREEMO_WEBHOOK_SECRET": "atr-Secret-22"}
NECTOR_RELAY = {"NECTOR_WEBHOOK_SECRET": "nec-Secret-333", "CONTLO_API_KEY": "ctl-Key-4444"}
SECRETS = ("tg-hook-Secret-1", "atr-Secret-22", "nec-Secret-333", "ctl-Key-4444")


def load(env: pytest.MonkeyPatch, **variables: str) -> Settings:
    for name, value in variables.items():
        env.setenv(name, value)
    settings_module.clear_cache()
    return get_settings()


def test_without_relay_settings_both_are_off_with_the_defaults(env) -> None:
    settings = load(env)

    assert not settings.toggle_relay_enabled and not settings.nector_relay_enabled
    assert settings.ATREEMO_RATE_LIMIT == 20
    assert settings.ATREEMO_SENDS_EMAILS is False
    assert str(settings.CONTLO_BASE_URL).rstrip("/") == "https://api.contlo.com"
    assert settings.CONTLO_RATE_LIMIT == 10
    assert settings.CONTLO_EVENT_NAMES == {}
    assert settings.RELAY_MAX_AGE_SECONDS == 259200


def test_empty_values_count_as_unset(env) -> None:
    settings = load(env, **{name: "" for name in {**TOGGLE_RELAY, **NECTOR_RELAY}})

    assert not settings.toggle_relay_enabled and not settings.nector_relay_enabled


def test_each_relay_switches_on_alone(env) -> None:
    toggle_only = load(env, **TOGGLE_RELAY)
    assert toggle_only.toggle_relay_enabled and not toggle_only.nector_relay_enabled

    for name in TOGGLE_RELAY:
        env.delenv(name)
    nector_only = load(env, **NECTOR_RELAY)
    assert nector_only.nector_relay_enabled and not nector_only.toggle_relay_enabled


def test_both_relays_with_every_setting(env) -> None:
    settings = load(env, **TOGGLE_RELAY, **NECTOR_RELAY, ATREEMO_SENDS_EMAILS="true",
                    CONTLO_EVENT_NAMES="coupon_create=Coupon Ready, review_create=Review",
                    RELAY_MAX_AGE_SECONDS="3600", ATREEMO_RATE_LIMIT="5")

    assert settings.toggle_relay_enabled and settings.nector_relay_enabled
    assert settings.ATREEMO_SENDS_EMAILS is True
    assert settings.CONTLO_EVENT_NAMES == {"coupon_create": "Coupon Ready",
                                           "review_create": "Review"}
    assert settings.RELAY_MAX_AGE_SECONDS == 3600
    assert settings.ATREEMO_RATE_LIMIT == 5
    for secret in SECRETS:
        assert secret not in repr(settings)


@pytest.mark.parametrize(("relay", "given"), [
    (TOGGLE_RELAY, ("TOGGLE_WEBHOOK_SECRET",)),
    (TOGGLE_RELAY, ("ATREEMO_WEBHOOK_URL", "ATREEMO_WEBHOOK_SECRET")),
    (TOGGLE_RELAY, ("ATREEMO_WEBHOOK_SECRET",)),
    (NECTOR_RELAY, ("NECTOR_WEBHOOK_SECRET",)),
    (NECTOR_RELAY, ("CONTLO_API_KEY",)),
])
def test_some_of_a_relay_stops_start_up_naming_the_missing_ones(env, relay, given) -> None:
    with pytest.raises(ConfigError) as raised:
        load(env, **{name: relay[name] for name in given})

    message = str(raised.value)
    for name in relay:
        assert (f"{name} is required" in message) is (name not in given), message
    for secret in SECRETS:
        assert secret not in message


def test_a_complete_relay_does_not_excuse_a_partial_one(env) -> None:
    with pytest.raises(ConfigError, match="CONTLO_API_KEY is required") as raised:
        load(env, **TOGGLE_RELAY, NECTOR_WEBHOOK_SECRET="nec-Secret-333")

    assert "ATREEMO" not in str(raised.value)


def test_contlo_base_url_alone_switches_nothing_on(env) -> None:
    settings = load(env, CONTLO_BASE_URL="https://eu.contlo.test", ATREEMO_RATE_LIMIT="50")

    assert not settings.nector_relay_enabled and not settings.toggle_relay_enabled


@pytest.mark.parametrize(("variable", "value"), [
    ("CONTLO_EVENT_NAMES", "coupon_create"),
    ("CONTLO_EVENT_NAMES", "coupon_create=A,coupon_create=B"),
    ("ATREEMO_RATE_LIMIT", "0"),
    ("RELAY_MAX_AGE_SECONDS", "-1"),
])
def test_malformed_values_are_named(env, variable, value) -> None:
    with pytest.raises(ConfigError, match=f"{variable} is malformed"):
        load(env, **{variable: value})


def test_the_new_secrets_are_redacted_from_logs(env) -> None:
    settings = load(env, **TOGGLE_RELAY, **NECTOR_RELAY)
    line = "sent with " + " and ".join(SECRETS)

    assert Redactor.for_settings(settings)(line) == "sent with *** and *** and *** and ***"
    for secret in SECRETS:
        assert secret not in default_redactor()(line)
    assert {"TOGGLE_WEBHOOK_SECRET", "ATREEMO_WEBHOOK_SECRET", "NECTOR_WEBHOOK_SECRET",
            "CONTLO_API_KEY"} <= set(SECRET_SETTINGS)
