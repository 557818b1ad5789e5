"""Reading and checking request bodies and parameters; problems become 400 answers."""

from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web

from sims.clock import parse_us
from sims.errors import bad_request


async def read_json(request: web.Request) -> Any:
    try:
        return orjson.loads(await request.read())
    except orjson.JSONDecodeError as error:
        raise bad_request(f"body is not JSON: {error}") from None


async def read_object(request: web.Request, *, empty_ok: bool = False) -> dict[str, Any]:
    """The JSON object in the body; with empty_ok an empty body reads as {} (control calls)."""
    if empty_ok and not await request.read():
        return {}
    body = await read_json(request)
    if not isinstance(body, dict):
        raise bad_request("body must be a JSON object")
    return body


def integer(
    body: Mapping[str, Any], name: str, default: int | None = None, minimum: int = 0
) -> int:
    value = body.get(name, default)
    if type(value) is not int or value < minimum:
        raise bad_request(f"{name} must be an integer >= {minimum}")
    return value


def time_us(source: Mapping[str, Any], name: str, default: int | None = None) -> int:
    """A time field (body or query) as microseconds; `default` when absent (required if None)."""
    value = source.get(name)
    if value is None and default is not None:
        return default
    try:
        return parse_us(value)
    except ValueError as error:
        raise bad_request(f"{name} must be an ISO-8601 time with a zone: {error}") from None


def optional_text(body: Mapping[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise bad_request(f"{name} must be a string")
    return value
