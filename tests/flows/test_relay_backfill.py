"""Backfilling Toggle orders into the relay (respx for Toggle's Orders, fakeredis, SQLite):
every order recorded once as `order.created` for Atreemo, page by page within the window
asked; a second backfill records nothing; an order already relayed live is skipped."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from tests.support.flows import FakeRemotes, Parts
from tests.support.giftcards import FakeToggle, answer, toggle_parts
from tests.support.relays import TOGGLE_SECRET, toggle_body, toggle_headers
from worker.faces.celery import relay_tasks
from worker.faces.celery.app import app as celery_app
from worker.faces.cli import relays as relays_cli
from worker.faces.cli.app import cli
from worker.flows.parts import Parts as FlowParts
from worker.flows.relays.backfill import (
    BackfillUnavailable,
    backfill_event_id,
    backfill_toggle_orders,
)
from worker.flows.relays.receive import TOGGLE, receive
from worker.store.relays import Relays, relay_events

SINCE = datetime(2026, 11, 1, tzinfo=UTC)
UNTIL = datetime(2026, 11, 30, tzinfo=UTC)


def order(order_id: int) -> dict[str, Any]:
    return {"id": order_id, "created_at": f"2026-11-{order_id % 28 + 1:02d}T10:00:00.000000Z",
            "merchant_transaction_reference": f"ref-{order_id}", "value": 2500,
            "LineItems": [{"id": order_id * 10, "value": 2500, "Card": {
                "id": order_id + 1000, "card_reference": "6301190000000020001",
                "balance": 2500}}]}


@dataclass
class OrdersToggle(FakeToggle):
    """Toggle answering Orders from `listed`, `per_page` a page."""

    listed: list[dict[str, Any]] = field(default_factory=list)
    per_page: int = 2

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = orjson.loads(request.content)
        if "Orders(" not in body["query"]:
            return super().__call__(request)
        variables = body["variables"]
        self.calls.append(("Orders", variables))
        page = variables["page"]
        rows = self.listed[(page - 1) * self.per_page:page * self.per_page]
        return answer({"Orders": {"data": rows, "total": len(self.listed),
                                  "per_page": self.per_page, "current_page": page}})


@pytest.fixture
def toggle() -> OrdersToggle:
    return OrdersToggle(listed=[order(i) for i in (501, 502, 503)])


@pytest.fixture
async def flow(parts: Parts, remotes: FakeRemotes,
               toggle: OrdersToggle) -> AsyncIterator[FlowParts]:
    async with toggle_parts(parts, remotes, toggle) as flow:
        settings = flow.settings.model_copy(update={
            "TOGGLE_WEBHOOK_SECRET": SecretStr(TOGGLE_SECRET),
            "ATREEMO_WEBHOOK_URL": "https://atreemo.test/hook",
            "ATREEMO_WEBHOOK_SECRET": SecretStr("atreemo-secret")})
        yield FlowParts(settings, flow.store, flow.redis, flow.treazure, flow.engage,
                        flow.guard, flow.toggle)


def events(flow: FlowParts) -> list[tuple[str, str, str]]:
    with flow.store.engine.connect() as conn:
        rows = conn.execute(relay_events.select().order_by(relay_events.c.event_id)).all()
    return [(row.event_id, row.topic, row.subject) for row in rows]


async def backfill(flow: FlowParts, page_size: int = 2) -> Any:
    seen: list[tuple[int, int]] = []
    outcome = await backfill_toggle_orders(flow, SINCE, UNTIL, page_size=page_size,
                                           progress=lambda done, total: seen.append(
                                               (done, total)))
    return outcome, seen


async def test_every_order_is_recorded_once_as_order_created_over_two_pages(
        flow: FlowParts, toggle: OrdersToggle) -> None:
    outcome, seen = await backfill(flow)

    assert events(flow) == [(backfill_event_id(i), "order.created", f"order:{i}")
                            for i in (501, 502, 503)]
    assert outcome.as_dict() == {"seen": 3, "recorded": 3, "skipped_live": 0,
                                 "skipped_repeated": 0, "total": 3}
    assert outcome.subjects == ["order:501", "order:502", "order:503"]
    assert seen == [(2, 3), (3, 3)]  # the progress after each page
    pages = toggle.named("Orders")
    assert [p["page"] for p in pages] == [1, 2]
    assert {(p["created_at_from"], p["created_at_to"]) for p in pages} == {
        (SINCE.isoformat(), UNTIL.isoformat())}
    # One delivery to Atreemo each, waiting to be sent; the envelope is the order.* shape.
    relays = Relays(flow.store)
    row = relays.get(f"toggle:{backfill_event_id(502)}:atreemo")
    assert row is not None and row.state == "received" and row.subject == "order:502"
    event = relays.event(TOGGLE, backfill_event_id(502))
    assert event is not None
    body = json.loads(event.body)
    assert body["type"] == "order.created" and body["id"] == "backfill-order-502"
    obj = body["data"]["object"]
    assert (obj["object"], obj["id"], obj["value"], obj["merchant_transaction_reference"],
            obj["created_at"]) == ("order", 502, 2500, "ref-502", order(502)["created_at"])
    assert obj["line_items"][0]["card"]["id"] == 1502
    assert event.source_created_at == datetime(2026, 11, 27, 10, tzinfo=UTC)


async def test_a_second_backfill_records_nothing(flow: FlowParts) -> None:
    await backfill(flow)
    outcome, _ = await backfill(flow)
    assert (outcome.recorded, outcome.repeated, outcome.subjects) == (0, 3, [])
    assert len(events(flow)) == 3


async def test_an_order_already_relayed_live_is_skipped(flow: FlowParts) -> None:
    live = toggle_body(570, "order.created", order=502)
    receive(flow.store, TOGGLE, live, toggle_headers(live))
    # Another event type about an order does not make its order.created recorded.
    other = toggle_body(571, "order.cancelled", order=503)
    receive(flow.store, TOGGLE, other, toggle_headers(other))

    outcome, _ = await backfill(flow)

    assert (outcome.recorded, outcome.live) == (2, 1)
    assert outcome.subjects == ["order:501", "order:503"]
    created = [e for e in events(flow) if e[1] == "order.created"]
    assert sorted(subject for _, _, subject in created) == [
        "order:501", "order:502", "order:503"]
    assert ("570", "order.created", "order:502") in created


async def test_a_live_order_created_after_its_backfill_is_kept_but_not_sent_again(
    flow: FlowParts,
) -> None:
    await backfill(flow)  # orders 501-503, recorded as backfill-order-<id>
    live = toggle_body(580, "order.created", order=502)
    received = receive(flow.store, TOGGLE, live, toggle_headers(live))

    assert received.recorded  # answered 200 and kept: a repeat is still a repeat
    relays = Relays(flow.store)
    assert relays.event(TOGGLE, "580") is not None
    deliveries = [d.key for d in relays.outbox.rows(
        relays.outbox.table.c.subject == "order:502")]
    assert deliveries == ["toggle:backfill-order-502:atreemo"]


async def test_an_empty_window_asks_once(flow: FlowParts, toggle: OrdersToggle) -> None:
    toggle.listed = []
    outcome, seen = await backfill(flow, page_size=100)
    assert (outcome.seen, seen, len(toggle.named("Orders"))) == (0, [(0, 0)], 1)


async def test_without_the_relay_configured_nothing_is_asked(
        flow: FlowParts, toggle: OrdersToggle) -> None:
    bare = FlowParts(flow.settings.model_copy(update={"TOGGLE_WEBHOOK_SECRET": None}),
                     flow.store, flow.redis, flow.treazure, flow.engage, flow.guard,
                     flow.toggle)
    with pytest.raises(BackfillUnavailable, match="relay"):
        await backfill(bare)
    assert toggle.named("Orders") == []


async def test_the_task_reads_the_window_and_queues_each_recorded_order(
        flow: FlowParts, toggle: OrdersToggle, monkeypatch: pytest.MonkeyPatch) -> None:
    queued: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    # The task runs on a thread (as on a worker); its flow runs on this test's loop.
    monkeypatch.setattr(relay_tasks, "run_with_parts",
                        lambda work: asyncio.run_coroutine_threadsafe(work(flow), loop).result())
    monkeypatch.setattr(relay_tasks.relay_subject, "apply_async",
                        lambda **kw: queued.append(kw))

    result = await asyncio.to_thread(relay_tasks.backfill_toggle_orders,
                                     "2026-11-01T00:00:00", "2026-11-30T00:00:00+00:00")

    assert result["recorded"] == 3
    assert [kw["kwargs"] for kw in queued] == [
        {"source": "toggle", "subject": f"order:{i}"} for i in (501, 502, 503)]
    first = toggle.named("Orders")[0]
    assert (first["created_at_from"], first["created_at_to"]) == (
        SINCE.isoformat(), UNTIL.isoformat())
    assert "pointsync.backfill_toggle_orders" in celery_app.tasks


@pytest.fixture
async def cli_on_flow(flow: FlowParts,
                      monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Any]]:
    """`pointsync relay backfill` with the flow's parts (its flow on this test's loop, the
    command on a thread) and the broker replaced by a recorder."""
    loop = asyncio.get_running_loop()
    monkeypatch.setattr(relays_cli, "run_remote",
                        lambda work: asyncio.run_coroutine_threadsafe(work(flow), loop).result())
    sent: list[tuple[str, Any]] = []
    monkeypatch.setattr(celery_app, "send_task",
                        lambda name, kwargs=None, **_: sent.append((name, kwargs)))
    return sent


async def test_the_command_backfills_and_queues_each_recorded_order(
        cli_on_flow: list[tuple[str, Any]], toggle: OrdersToggle) -> None:
    args = ["relay", "backfill", "toggle", "--since", "2026-11-01", "--until",
            "2026-11-30T00:00:00+00:00", "--json"]
    result = await asyncio.to_thread(CliRunner().invoke, cli, args)

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["recorded"] == 3
    assert json.loads(result.stdout)["queued"] == 3
    assert cli_on_flow == [("pointsync.relay_subject", {"source": "toggle",
                                                        "subject": f"order:{i}"})
                           for i in (501, 502, 503)]
    first = toggle.named("Orders")[0]
    assert (first["created_at_from"], first["created_at_to"]) == (
        SINCE.isoformat(), UNTIL.isoformat())

    again = await asyncio.to_thread(CliRunner().invoke, cli, args)
    assert json.loads(again.stdout)["skipped_repeated"] == 3 and len(cli_on_flow) == 3


@pytest.mark.parametrize(("args", "message"), [
    (["nector", "--since", "2026-11-01"], "only 'toggle'"),
    (["toggle", "--since", "last week"], "--since: not an ISO 8601 time"),
])
def test_the_command_refuses_what_it_cannot_backfill(args: list[str], message: str) -> None:
    result = CliRunner().invoke(cli, ["relay", "backfill", *args])
    assert result.exit_code == 1 and message in result.output
