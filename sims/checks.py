"""Checks of the values a `/_sim/config` body sets, shared by every simulator's config: each
takes the setting's name and the value, and answers the value or refuses it (400)."""

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from sims.errors import bad_request

Check = Callable[[str, Any], Any]
Config = TypeVar("Config")


def checked(changes: Mapping[str, Any], checks: Mapping[str, Check]) -> dict[str, Any]:
    """`changes` checked; refuses unknown names and out-of-range values."""
    unknown = sorted(set(changes) - set(checks))
    if unknown:
        raise bad_request(f"unknown config settings: {', '.join(unknown)}")
    return {name: checks[name](name, value) for name, value in changes.items()}


def updated(config: Config, changes: Mapping[str, Any], checks: Mapping[str, Check]) -> Config:
    """A copy of the frozen dataclass `config` with `changes` checked and applied."""
    return dataclasses.replace(config, **checked(changes, checks))  # type: ignore[type-var]


def integer(minimum: int) -> Check:
    def check(name: str, value: Any) -> int:
        if type(value) is not int or value < minimum:
            raise bad_request(f"{name} must be an integer >= {minimum}")
        return value

    return check


def text(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise bad_request(f"{name} must be a non-empty string")
    return value
