"""Gift-card operations: Toggle's outcome counts flushed with the response counts, the
credits left read for /metrics without writing, and the doctor's Toggle check against a
respx stand-in (a fresh login, the credits it settles, refusals with their fix)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import fakeredis
import httpx
import pytest
import respx
from prometheus_client.core import Metric
from redis import exceptions as redis_errors

from worker.base import telemetry
from worker.faces.cli import doctor_checks
from worker.faces.runtime import prepare_store
from worker.faces.web import giftcard_metrics
from worker.store.giftcards import Orders
from worker.systems.toggle import session
from worker.systems.toggle.throttle import CreditBucket

URL = "https://api.mytoggle.test/graphql"
USER = {"TOGGLE_API_URL": URL, "TOGGLE_USERNAME": "api-user",
        "TOGGLE_PASSWORD": "tg-Pa55-9911", "TOGGLE_ACCOUNT_ID": "412"}


@pytest.fixture
def outcomes() -> Iterator[Counter[str]]:
    """A registered outcome counter, unregistered afterwards (the real one is untouched)."""
    counter: Counter[str] = Counter()
    saved = dict(telemetry._outcome_tallies)
    telemetry.count_outcomes("toggle", counter)
    yield counter
    telemetry._outcome_tallies.clear()
    telemetry._outcome_tallies.update(saved)


async def test_outcomes_are_flushed_into_their_own_hash(outcomes, redis, redis_server) -> None:
    outcomes.update({"ok": 3, "refused": 1})
    assert telemetry.task_flush_due(Counter())  # outcomes alone make a flush due
    await telemetry.flush_responses(redis, Counter())
    outcomes["ok"] += 2
    await telemetry.flush_responses(redis, Counter())
    read = telemetry.read_responses(fakeredis.FakeRedis(server=redis_server),
                                    telemetry.OUTCOMES_KEY)
    assert read == {("toggle", "ok"): 5, ("toggle", "refused"): 1}
    assert not +outcomes
    # The responses' hash holds none of them.
    assert telemetry.read_responses(fakeredis.FakeRedis(server=redis_server)) == {}


async def test_a_failed_flush_keeps_the_outcomes(outcomes, redis_server) -> None:
    outcomes["throttled"] = 2
    redis_server.connected = False
    broken = fakeredis.FakeAsyncRedis(server=redis_server)
    with pytest.raises(redis_errors.ConnectionError):
        await telemetry.flush_responses(broken, Counter())
    assert outcomes == Counter({"throttled": 2})


def _families(redis: Any, settings: Any) -> dict[str, Metric]:
    return {family.name: family for family in giftcard_metrics.toggle(redis, settings)}


async def test_metrics_show_outcomes_and_the_credits_left(
    make_settings, redis, redis_server,
) -> None:
    settings = make_settings(**USER)
    sync = fakeredis.FakeRedis(server=redis_server)
    sync.hset(telemetry.OUTCOMES_KEY, mapping={"toggle:ok": 7, "toggle:lost": 1})
    # A full bucket before anything took from it.
    assert _families(sync, settings)["pointsync_toggle_credits_left"].samples[0].value == 8000
    bucket = CreditBucket(redis, session.credits_key(settings),
                          maximum=settings.TOGGLE_CREDITS_MAX,
                          refill_per_second=settings.TOGGLE_CREDITS_REFILL_PER_SECOND)
    await bucket.take(3000)
    families = _families(sync, settings)
    left = families["pointsync_toggle_credits_left"].samples[0].value
    assert 5000 <= left < 5000 + 60 * settings.TOGGLE_CREDITS_REFILL_PER_SECOND
    assert left <= await bucket.available()  # read before: never more than the bucket says
    answers = {s.labels["outcome"]: s.value for s in families["pointsync_toggle_answers"].samples
               if s.name.endswith("_total")}
    assert answers == {"ok": 7, "lost": 1}


def test_metrics_leave_credits_out_without_toggle(settings, redis_server) -> None:
    assert "pointsync_toggle_credits_left" not in _families(
        fakeredis.FakeRedis(server=redis_server), settings)


# -- doctor ------------------------------------------------------------------------------


class _FakeRedisFactory:
    def __init__(self, server: fakeredis.FakeServer) -> None:
        self.server = server

    def from_url(self, *_: Any, **__: Any) -> fakeredis.FakeAsyncRedis:
        return fakeredis.FakeAsyncRedis(server=self.server)


def _answer(login: httpx.Response) -> respx.MockRouter:
    router = respx.mock(assert_all_called=False)
    router.post(URL, name="toggle").mock(return_value=login)
    return router


def _cost(available: int) -> dict[str, Any]:
    return {"cost": {"throttleStatus": {"maximumAvailable": 8000,
                                        "currentlyAvailable": available}}}


async def test_doctor_logs_in_afresh_and_reports_the_credits(
    make_settings, redis_server, monkeypatch,
) -> None:
    settings = make_settings(**USER)
    monkeypatch.setattr(doctor_checks, "Redis", _FakeRedisFactory(redis_server))
    login = httpx.Response(200, json={"data": {"loginUser": {"id": 1}},
                                      "extensions": _cost(6500)},
                           headers={"X-Authorization": "Bearer jwt-new"})
    with _answer(login) as router:
        check = await doctor_checks.check_toggle(settings)
        assert router["toggle"].call_count == 1
    assert check.status == doctor_checks.OK, check
    assert "logged in" in check.detail and "6500 credits left" in check.detail
    # The check wrote no token for the workers to pick up.
    keys = fakeredis.FakeRedis(server=redis_server).keys("*token*")
    assert keys == []
    assert "tg-Pa55-9911" not in check.detail + check.fix


async def test_doctor_shows_a_refused_login_with_its_fix(
    make_settings, redis_server, monkeypatch,
) -> None:
    settings = make_settings(**USER)
    monkeypatch.setattr(doctor_checks, "Redis", _FakeRedisFactory(redis_server))
    refused = httpx.Response(200, json={"errors": [{"message": "Invalid credentials"}],
                                        "data": None, "extensions": _cost(7000)})
    with _answer(refused):
        check = await doctor_checks.check_toggle(settings)
    assert check.status == doctor_checks.FAIL
    assert "Invalid credentials" in check.detail
    assert "TOGGLE_USERNAME / TOGGLE_PASSWORD" in check.fix


async def test_doctor_reports_toggle_unchecked_when_redis_is_down(make_settings) -> None:
    # The budget every Toggle request draws on lives in Redis: with Redis gone the check
    # says so (the redis check names the fix) instead of ending the doctor with a traceback.
    settings = make_settings(**USER, REDIS_URL="redis://127.0.0.1:1/0")
    check = await doctor_checks.check_toggle(settings)
    assert check.status == doctor_checks.WARN
    assert "Redis cannot be reached" in check.detail and check.fix == "see the redis check"


async def test_doctor_skips_toggle_where_it_is_not_configured(settings) -> None:
    check = await doctor_checks.check_toggle(settings)
    assert check.status == doctor_checks.SKIP


def test_metrics_count_gift_card_rows_by_kind_and_state(tmp_path) -> None:
    store = prepare_store(f"sqlite:///{tmp_path / 'gc.db'}")
    orders = Orders(store)
    for reference in ("a", "b", "c"):
        orders.record(reference, 500, None, None, None, "task")
    orders.issued("a", None, order_id=1, line_item_id=2, card_id=3,
                  card_reference="6301190000000020001", card_masked="6301 19•• •••• ••• 0001")
    orders.outbox.fail("b", "Product is not available")
    [family] = giftcard_metrics.states(store)
    counts = {(s.labels["kind"], s.labels["state"]): s.value for s in family.samples}
    assert counts == {("order", "issued"): 1, ("order", "failed"): 1,
                      ("order", "received"): 1}
