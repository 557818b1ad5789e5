"""Toggle's settings: off when none is set, all-or-none for the API user, the site map."""

from __future__ import annotations

import pytest

from worker.base import settings as settings_module
from worker.base.logs import SECRET_SETTINGS, Redactor, default_redactor
from worker.base.settings import ConfigError, Settings, get_settings

USER = {"TOGGLE_USERNAME": "api-user", "TOGGLE_PASSWORD": "tg-Pa55-9911",
        "TOGGLE_ACCOUNT_ID": "412"}


def load(env: pytest.MonkeyPatch, **variables: str) -> Settings:
    for name, value in variables.items():
        env.setenv(name, value)
    settings_module.clear_cache()
    return get_settings()


def test_a_deployment_without_toggle_settings_loads_as_before(env) -> None:
    settings = load(env)

    assert not settings.toggle_enabled
    assert settings.TOGGLE_SITES == {}


def test_empty_values_count_as_unset(env) -> None:
    settings = load(env, TOGGLE_USERNAME="", TOGGLE_PASSWORD=" ", TOGGLE_ACCOUNT_ID="")

    assert not settings.toggle_enabled


def test_all_three_switch_gift_cards_on_with_the_contract_defaults(env) -> None:
    settings = load(env, **USER)

    assert settings.toggle_enabled
    assert settings.TOGGLE_ACCOUNT_ID == 412
    assert str(settings.TOGGLE_API_URL) == "https://api.mytoggle.io/graphql"
    assert settings.TOGGLE_MERCHANT_ID == 26
    assert settings.TOGGLE_CURRENCY == "GBP"
    assert settings.TOGGLE_PRODUCT_ID is None
    assert settings.TOGGLE_VALIDATE_CARD_NUMBER is True
    assert settings.TOGGLE_PASSWORD is not None
    assert "tg-Pa55-9911" not in repr(settings)


@pytest.mark.parametrize("given", [
    ("TOGGLE_USERNAME",), ("TOGGLE_PASSWORD",), ("TOGGLE_ACCOUNT_ID",),
    ("TOGGLE_USERNAME", "TOGGLE_PASSWORD"), ("TOGGLE_USERNAME", "TOGGLE_ACCOUNT_ID"),
])
def test_some_of_the_api_user_stops_start_up_naming_the_missing_ones(env, given) -> None:
    with pytest.raises(ConfigError) as raised:
        load(env, **{name: USER[name] for name in given})

    message = str(raised.value)
    for name in USER:
        assert (f"{name} is required" in message) is (name not in given), message
    assert "tg-Pa55-9911" not in message


def test_sites_map_names_to_references(env) -> None:
    settings = load(env, **USER, TOGGLE_SITES=" soho = SITE-001,leeds=SITE-002, ")

    assert settings.TOGGLE_SITES == {"soho": "SITE-001", "leeds": "SITE-002"}


@pytest.mark.parametrize("sites", ["soho", "soho=", "=SITE-1", "soho=A,soho=B"])
def test_a_malformed_site_map_is_named(env, sites) -> None:
    with pytest.raises(ConfigError, match="TOGGLE_SITES is malformed"):
        load(env, **USER, TOGGLE_SITES=sites)


def test_switches_and_overrides_are_read(env) -> None:
    settings = load(env, **USER, TOGGLE_VALIDATE_CARD_NUMBER="false", TOGGLE_PRODUCT_ID="9",
                    TOGGLE_CURRENCY="EUR", TOGGLE_MERCHANT_ID="31")

    assert settings.TOGGLE_VALIDATE_CARD_NUMBER is False
    assert (settings.TOGGLE_PRODUCT_ID, settings.TOGGLE_CURRENCY,
            settings.TOGGLE_MERCHANT_ID) == (9, "EUR", 31)


def test_the_password_is_masked_in_every_redacted_text(env) -> None:
    settings = load(env, **USER)

    line = "login as api-user with tg-Pa55-9911 failed"
    assert "TOGGLE_PASSWORD" in SECRET_SETTINGS
    assert Redactor.for_settings(settings)(line) == "login as api-user with *** failed"
    assert "tg-Pa55-9911" not in default_redactor()(line)
