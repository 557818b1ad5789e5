"""For tests of the gift-card faces (CLI, tasks): a stand-in for run_remote/run_with_parts
that runs a flow with a Toggle client answered by a FakeToggle (tests/support/giftcards.py),
fakeredis, and the configured database; no Treazure or Engage (issuing needs neither)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import fakeredis
import respx

from tests.support.giftcards import TOGGLE_URL, FakeToggle
from tests.support.unit import mocked_http
from worker.base.settings import get_settings
from worker.faces import runtime
from worker.flows.parts import Parts
from worker.systems.toggle.client import ToggleClient
from worker.systems.toggle.session import ToggleSession
from worker.systems.toggle.throttle import CreditBucket

TOGGLE_ENV = {"TOGGLE_API_URL": TOGGLE_URL, "TOGGLE_USERNAME": "api-user",
              "TOGGLE_PASSWORD": "tg-Pa55-9911", "TOGGLE_ACCOUNT_ID": "412",
              "TOGGLE_PRODUCT_ID": "4", "TOGGLE_SITES": "london=EPOS-LDN-1"}


def runner(fake: FakeToggle) -> Callable[[Callable[[Parts], Any]], Any]:
    """run(work) -> work(parts)'s result, each call on a fresh loop and clients (one Redis
    server for all, as the processes of one deployment share one)."""
    server = fakeredis.FakeServer()

    def run(work: Callable[[Parts], Any]) -> Any:
        async def main() -> Any:
            settings = get_settings()
            redis = fakeredis.FakeAsyncRedis(server=server)
            router = respx.Router(assert_all_called=False)
            router.post(TOGGLE_URL).mock(side_effect=fake)
            session = ToggleSession(settings, redis, mocked_http(router, TOGGLE_URL),
                                    bucket=CreditBucket(redis, "pointsync:toggle:credits:t"))
            async with ToggleClient(settings, redis, session=session) as client:
                parts = Parts(settings, runtime.prepare_store(settings.DATABASE_URL), redis,
                              None, None, None, client)  # type: ignore[arg-type]
                return await work(parts)

        return asyncio.run(main())

    return run
