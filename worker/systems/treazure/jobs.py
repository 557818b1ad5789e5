"""Treazure's Balances/Get job: start it, poll its result, follow its pages.

Every link Treazure answers with is checked to lead back to Treazure's own scheme, host
and port before it is requested, since the request carries the bearer token.
"""

from __future__ import annotations

import asyncio
import time
import types
from collections.abc import AsyncIterator, Generator
from datetime import datetime

import httpx
import orjson

from worker.base.backoff import doubled
from worker.base.http import Rejected, RemoteError, parse_retry_after
from worker.base.times import utc_seconds_text
from worker.systems.treazure.parsing import MalformedEntry, PageRows, next_link, parse_page
from worker.systems.treazure.session import SERVICE, VAULT, TreazureSession

Page = tuple[PageRows, list[MalformedEntry]]


class JobTimeout(RemoteError):
    """The balances job did not finish within TREAZURE_JOB_TIMEOUT_SECONDS."""


class ForeignLink(Rejected):
    """Treazure answered with a link (a job href, a next page) to another scheme, host or
    port: it is not followed, since the request would carry Treazure's bearer token."""


class BalancesJobs:
    def __init__(self, session: TreazureSession) -> None:
        self._session = session
        self._loyalty_id = session.settings.TREAZURE_LOYALTY_ID
        self._timeout = session.settings.TREAZURE_JOB_TIMEOUT_SECONDS

    async def start(self, mutated_from: datetime, mutated_to: datetime) -> str:
        """Start a job for balances mutated in the window; its href."""
        body = {
            "mutatedFrom": utc_seconds_text(mutated_from),
            "mutatedTo": utc_seconds_text(mutated_to),
            "loyaltyPointDefinitionId": self._loyalty_id,
        }
        # Starting a job reads nothing and changes nothing: repeating it is harmless.
        answer = await self._session.read_json(
            "POST", f"{VAULT}/Balances/Get", content=orjson.dumps(body),
            headers={"Content-Type": "application/json"},
        )
        href = answer.get("href")
        if not isinstance(href, str) or not href.startswith("/"):
            raise Rejected(SERVICE, "Balances/Get answered without a relative href")
        return self._own_link(href, "balances job")

    def _own_link(self, link: str, what: str) -> str:
        """`link` if it leads to Treazure's own scheme, host and port (relative links do);
        ForeignLink otherwise, before any request is sent there."""
        base = self._session.http.base_url
        target = base.join(link)
        if (target.scheme, target.host, target.port) != (base.scheme, base.host, base.port):
            raise ForeignLink(
                SERVICE, f"the {what} link points to {_origin(target)}, not to Treazure's "
                         f"{_origin(base)}; not followed (the request would carry the token)")
        return link

    async def _first_page(self, href: str) -> httpx.Response:
        """Poll `{href}/result` until it is ready, honouring 202 and Retry-After."""
        deadline = time.monotonic() + self._timeout
        polls = 0
        while True:
            response = await self._session.read("GET", f"{href}/result")
            if response.status_code != 202:
                return response
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise JobTimeout(
                    SERVICE, f"balances job {href} still running after {self._timeout:g} s")
            hinted = parse_retry_after(response.headers.get("Retry-After"))
            wait = hinted if hinted is not None else doubled(0.2, polls, 5.0)
            polls += 1
            await asyncio.sleep(min(wait, remaining))

    async def _pages(self, href: str) -> AsyncIterator[Page]:
        response = await self._first_page(href)
        while True:
            raw = response.content
            next_href = next_link(raw)
            if next_href:
                next_href = self._own_link(next_href, "next page")
            # The next page is on its way while this one is parsed and consumed.
            following = (
                asyncio.create_task(self._session.read("GET", next_href)) if next_href else None
            )
            if following is not None:
                await _on_its_way(following)
            try:
                good, bad, _ = parse_page(raw, self._loyalty_id)
                yield good, bad
            except BaseException:  # the consumer stopped (or failed): drop the prefetch
                if following is not None:
                    following.cancel()
                raise
            if following is None:
                return
            response = await following

    async def pages(self, mutated_from: datetime, mutated_to: datetime) -> AsyncIterator[Page]:
        """Stream the job's pages, one parsed page at a time (memory stays flat).

        A `410` means the result expired: the job is started again once, and the stream
        starts over from its first page (the caller's newest-wins rule absorbs repeats).
        """
        restarted = False
        while True:
            href = await self.start(mutated_from, mutated_to)
            try:
                async for page in self._pages(href):
                    yield page
                return
            except Rejected as exc:
                if exc.status != 410 or restarted:
                    raise
                restarted = True


# Turns of the event loop httpx takes to put a request on a kept-alive connection on the
# wire (pool, connection, write): 3 measured with httpx 0.28; one more for slack.
SEND_TURNS = 4


async def _on_its_way(request: asyncio.Task[httpx.Response]) -> None:
    """Let the next page's request go out before this page is parsed: the parse holds the
    event loop for milliseconds, and a request task that has not yet run waited for it,
    so Treazure only began on the next page once this one was parsed."""
    for _ in range(SEND_TURNS):
        if request.done():
            return
        await _one_turn()


@types.coroutine
def _one_turn() -> Generator[None, None, None]:
    """Give the event loop one turn (what asyncio.sleep(0) does; not a wait of ours, so not
    counted where tests record the sleeps of backoffs)."""
    yield


def _origin(url: httpx.URL) -> str:
    return f"{url.scheme}://{url.host}" + (f":{url.port}" if url.port is not None else "")
