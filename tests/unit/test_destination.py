"""A relay destination's one attempt (worker/base/destination.py)."""

from __future__ import annotations

import pytest
import redis
import respx

from tests.support.unit import mocked_http
from worker.base.destination import DestinationClient
from worker.base.http import Retryable
from worker.base.settings import Settings

URL = "https://dest.test/in"


class DownLimiter:
    """The shared rate limit's Redis is not answering."""

    async def acquire(self) -> None:
        raise redis.ConnectionError("Error 111 connecting to 127.0.0.1:6379")


class Probe(DestinationClient):
    service = "probe"


async def test_a_rate_limit_that_cannot_be_read_is_retryable_and_nothing_is_sent(
    make_settings
) -> None:
    settings: Settings = make_settings()
    api = respx.MockRouter(assert_all_called=False)
    route = api.post(URL).respond(200)
    async with Probe(settings, DownLimiter(), "", http=mocked_http(api, "")) as probe:
        # Retryable, not an unknown error: the relay then does not count the next send as
        # a resend of an answer lost (the request never left).
        with pytest.raises(Retryable, match="rate limit not reachable, not sent"):
            await probe.deliver_request("POST", URL, b"{}", {})
    assert not route.called
