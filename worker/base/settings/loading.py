"""Settings loaded from the environment once per process, or one line saying what is wrong."""

from __future__ import annotations

import sys
from functools import lru_cache
from typing import NoReturn, TypeVar

from pydantic import ValidationError

from worker.base.settings.combined import Settings
from worker.base.settings.core import CoreSettings
from worker.base.settings.web import WebSettings


class ConfigError(Exception):
    """A missing or malformed setting; the message is one line naming each variable."""


_S = TypeVar("_S", bound=CoreSettings)


def _describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        name = ".".join(str(p) for p in item["loc"]) or "settings"
        if item["type"] == "missing":
            parts.append(f"{name} is required but not set")
        else:
            # Never echo the value: it may be a secret.
            parts.append(f"{name} is malformed: {item['msg']}")
    return "; ".join(parts)


def load_settings(cls: type[_S]) -> _S:
    """Settings of this class from the environment, or a ConfigError naming each variable."""
    try:
        return cls()
    except ValidationError as exc:
        raise ConfigError(f"configuration error: {_describe(exc)}") from None


@lru_cache(maxsize=1)
def get_core_settings() -> CoreSettings:
    return load_settings(CoreSettings)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings(Settings)


@lru_cache(maxsize=1)
def get_web_settings() -> WebSettings:
    return load_settings(WebSettings)


def exit_on_config_error(error: ConfigError) -> NoReturn:
    """Stop a process at start-up with the one-line reason (exit status 78, EX_CONFIG)."""
    print(f"pointsync: {error}", file=sys.stderr, flush=True)
    raise SystemExit(78)


def clear_cache() -> None:
    """Forget loaded settings (tests change the environment between cases)."""
    for loader in (get_core_settings, get_settings, get_web_settings):
        loader.cache_clear()
