"""How some settings' values are read, shared by the connectors' settings."""

from __future__ import annotations

from pydantic import BeforeValidator, ValidationError
from pydantic_core import InitErrorDetails


def empty_is_unset(value: object) -> object:
    """docker-compose passes `${TOGGLE_USERNAME:-}` as an empty string: not set."""
    return None if isinstance(value, str) and not value.strip() else value


# On an optional setting (Annotated[str | None, UNSET_IF_EMPTY]): blank is unset.
UNSET_IF_EMPTY = BeforeValidator(empty_is_unset)


def pairs_of(form: str, key: str) -> BeforeValidator:
    """A `name=value,name=value` setting read as a dict (see pairs)."""
    return BeforeValidator(lambda value: pairs(value, form, key))


def pairs(value: object, form: str, key: str) -> object:
    """`a=b,c=d` as {a: b, c: d}; `form` names the expected shape in the error (e.g.
    `name=reference`) and `key` what the left-hand side is (e.g. `site`)."""
    if not isinstance(value, str):
        return value
    mapping: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in value.split(","))):
        left, sep, right = (text.strip() for text in item.partition("="))
        if not sep or not left or not right:
            raise ValueError(f"{item!r} is not {form}")
        if left in mapping:
            raise ValueError(f"{key} {left!r} is mapped twice")
        mapping[left] = right
    return mapping


def require_all_or_none(settings: object, *groups: tuple[str, ...]) -> None:
    """Per group of a connector's required settings, some set but not all: a validation
    error naming each one missing (as pydantic names a missing required field)."""
    missing: list[str] = []
    for required in groups:
        absent = [name for name in required if getattr(settings, name) is None]
        if 0 < len(absent) < len(required):
            missing += absent
    if missing:
        raise ValidationError.from_exception_data(type(settings).__name__, [
            InitErrorDetails(type="missing", loc=(name,), input=None) for name in missing
        ])
