"""Settings: one-line errors naming each variable, secrets never echoed, documented defaults."""

from __future__ import annotations

import pytest

from tests.support.unit import API_KEY, BASE_ENV, CLIENT_SECRET
from worker.base import settings as settings_module
from worker.base.settings import ConfigError, clear_cache, exit_on_config_error, get_settings

REQUIRED = [
    "TREAZURE_BASE_URL",
    "TREAZURE_CLIENT_ID",
    "TREAZURE_CLIENT_SECRET",
    "TREAZURE_LOYALTY_ID",
    "ENGAGE_BASE_URL",
    "ENGAGE_API_KEY",
]


def _load_error() -> ConfigError:
    clear_cache()
    with pytest.raises(ConfigError) as caught:
        get_settings()
    return caught.value


def _part_about(message: str, name: str) -> str:
    """The `; `-separated part of the message that names `name`."""
    parts = [p for p in message.split("; ") if name in p]
    assert len(parts) == 1, f"{name} should be named exactly once in {message!r}"
    return parts[0]


def test_every_missing_variable_is_named_on_one_line(clean_env: pytest.MonkeyPatch) -> None:
    message = str(_load_error())

    assert "\n" not in message
    for name in REQUIRED:
        assert f"{name} is required but not set" in _part_about(message, name)


def test_only_the_missing_variables_are_named(env: pytest.MonkeyPatch) -> None:
    env.delenv("TREAZURE_LOYALTY_ID")
    env.delenv("ENGAGE_API_KEY")

    message = str(_load_error())

    assert "TREAZURE_LOYALTY_ID is required but not set" in message
    assert "ENGAGE_API_KEY is required but not set" in message
    for name in set(REQUIRED) - {"TREAZURE_LOYALTY_ID", "ENGAGE_API_KEY"}:
        assert name not in message


@pytest.mark.parametrize(
    ("name", "value", "rule"),
    [
        ("TREAZURE_BASE_URL", "not a url", "URL"),
        ("ENGAGE_BASE_URL", "ftp://acme.voyado.test", "scheme"),
        ("ENGAGE_RATE_LIMIT", "abc", "number"),
        ("ENGAGE_RATE_LIMIT", "0", "greater than 0"),
        ("ENGAGE_API_VERSION", "v9", "'v2' or 'v3'"),
        ("ENGAGE_BATCH_SIZE", "1001", "less than or equal to 1000"),
        ("SYNC_INTERVAL_SECONDS", "5", "greater than or equal to 10"),
        ("REDIS_URL", "http://localhost:6379", "redis://"),
    ],
)
def test_malformed_variable_is_named_with_its_rule(
    env: pytest.MonkeyPatch, name: str, value: str, rule: str
) -> None:
    env.setenv(name, value)

    message = str(_load_error())

    assert "\n" not in message
    part = _part_about(message, name)
    assert f"{name} is malformed" in part
    assert rule in part


def test_several_problems_are_all_reported_at_once(env: pytest.MonkeyPatch) -> None:
    env.setenv("ENGAGE_API_VERSION", "v9")
    env.setenv("ENGAGE_BATCH_SIZE", "1001")
    env.delenv("TREAZURE_CLIENT_ID")

    message = str(_load_error())

    assert "\n" not in message
    assert "ENGAGE_API_VERSION is malformed" in message
    assert "ENGAGE_BATCH_SIZE is malformed" in message
    assert "TREAZURE_CLIENT_ID is required but not set" in message


def test_values_and_secrets_are_never_echoed(env: pytest.MonkeyPatch) -> None:
    # Secrets are set (and valid) while other variables are malformed, and a malformed URL
    # carries a password of its own: none of these values may reach the message.
    env.setenv("ENGAGE_BASE_URL", "ftp://ops:hunter2-URLPASS@acme.voyado.test")
    env.setenv("ENGAGE_RATE_LIMIT", "fifty-VALUE")

    error = _load_error()
    message = str(error)

    for secret in (CLIENT_SECRET, API_KEY, "hunter2-URLPASS", "fifty-VALUE"):
        assert secret not in message
        assert secret not in repr(error)
    # The pydantic error (whose text includes input values) is not chained for a traceback.
    assert error.__cause__ is None
    assert error.__suppress_context__ is True


def test_malformed_web_secret_is_named_but_not_echoed(env: pytest.MonkeyPatch) -> None:
    env.setenv("WEBHOOK_SECRET", "notwhsec-WEBHOOK-SECRET-VALUE")
    env.setenv("WEB_API_KEY", "web-key")
    clear_cache()

    with pytest.raises(ConfigError) as caught:
        settings_module.get_web_settings()

    message = str(caught.value)
    assert "WEBHOOK_SECRET is malformed" in message
    assert "whsec_" in message
    assert "WEBHOOK-SECRET-VALUE" not in message


def test_secrets_are_hidden_in_the_settings_repr(env: pytest.MonkeyPatch) -> None:
    loaded = get_settings()

    assert loaded.TREAZURE_CLIENT_SECRET.get_secret_value() == CLIENT_SECRET
    assert loaded.ENGAGE_API_KEY.get_secret_value() == API_KEY
    assert CLIENT_SECRET not in repr(loaded)
    assert API_KEY not in repr(loaded)


def test_defaults(clean_env: pytest.MonkeyPatch) -> None:
    for name in REQUIRED:
        clean_env.setenv(name, BASE_ENV[name])

    loaded = get_settings()

    assert loaded.ENGAGE_DEFINITION_ID == 1
    assert loaded.ENGAGE_API_VERSION == "v3"
    assert loaded.ENGAGE_RATE_LIMIT == 50
    assert loaded.ENGAGE_BATCH_SIZE == 1000
    assert loaded.REDIS_URL == "redis://localhost:6379/0"
    assert loaded.DATABASE_URL == "sqlite:///pointsync.db"
    assert loaded.SYNC_INTERVAL_SECONDS == 3600
    assert loaded.TREAZURE_SCOPE == "api_loyaltyvault"


def test_values_are_read_from_the_environment(env: pytest.MonkeyPatch) -> None:
    env.setenv("ENGAGE_DEFINITION_ID", "7")
    env.setenv("ENGAGE_API_VERSION", "v2")
    env.setenv("ENGAGE_RATE_LIMIT", "12.5")

    loaded = get_settings()

    assert (loaded.ENGAGE_DEFINITION_ID, loaded.ENGAGE_API_VERSION) == (7, "v2")
    assert loaded.ENGAGE_RATE_LIMIT == 12.5


def test_settings_are_cached_until_clear_cache(env: pytest.MonkeyPatch) -> None:
    first = get_settings()
    env.setenv("ENGAGE_DEFINITION_ID", "9")

    assert get_settings() is first
    clear_cache()
    assert get_settings().ENGAGE_DEFINITION_ID == 9


def test_exit_on_config_error_exits_78_with_one_line_on_stderr(
    clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    error = _load_error()

    with pytest.raises(SystemExit) as caught:
        exit_on_config_error(error)

    assert caught.value.code == 78
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1
    assert "TREAZURE_BASE_URL is required but not set" in lines[0]
    assert "ENGAGE_API_KEY is required but not set" in lines[0]


DATABASE_URLS = [
    "sqlite:///pointsync.db",
    "sqlite://",
    "sqlite:////var/lib/pointsync/p.db",
    "postgresql+psycopg://pointsync:db-pw-%40K8s@db:5432/pointsync",
    "postgresql://u@[::1]:5432/db?sslmode=require&x=1&x=2",
    "postgresql://db:/pointsync",
    "mysql+pymysql://u:p@host/db?charset=utf8mb4",
    "postgresql://u:p@host:54x2/db",
    "postgresql://u:p@host:-1/db",
    "pointsync.db",
    "",
    "://host/db",
    "sqlite:/pointsync.db",
    "postgres ql://host/db",
]


@pytest.mark.parametrize("url", DATABASE_URLS)
def test_database_url_is_judged_as_sqlalchemy_would(url: str) -> None:
    # The check does not import SQLAlchemy (the worker's main process never does): it must
    # still accept exactly what make_url accepts.
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        make_url(url)
        accepted = True
    except (ArgumentError, ValueError, TypeError):
        accepted = False
    assert settings_module.is_database_url(url) is accepted


def test_a_malformed_database_url_is_named(env: pytest.MonkeyPatch) -> None:
    env.setenv("DATABASE_URL", "pointsync.db")

    part = _part_about(str(_load_error()), "DATABASE_URL")

    assert "DATABASE_URL is malformed" in part
    assert "SQLAlchemy URL" in part
