"""The doctor's relay rows against respx stand-ins: each destination's probe (what is sent,
how each answer reads, that no secret shows), a relay that is off or only partly set, and
the backlog against the alert's hour. The probes against the simulators themselves are in
tests/sim/test_sim_doctor_relays.py."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import respx

from tests.support.relays import age, nector_body, nector_headers, toggle_body, toggle_headers
from tests.support.unit import cli_database
from worker.base.settings import Settings, get_settings
from worker.faces import runtime
from worker.faces.cli import doctor_checks, doctor_relays
from worker.flows.relays.receive import NECTOR, TOGGLE, receive
from worker.store.relays import Relays

ATREEMO_URL = "https://ingest.atreemo.test/toggle/acme"
CONTLO_URL = "https://api.contlo.test"
ATREEMO_SECRET = "atreemo-whsec-5e8c21"
CONTLO_KEY = "contlo-private-key-91ab"
TOGGLE_RELAY = {"TOGGLE_WEBHOOK_SECRET": "toggle-whsec-7f3a91",
                "ATREEMO_WEBHOOK_URL": ATREEMO_URL, "ATREEMO_WEBHOOK_SECRET": ATREEMO_SECRET}
NECTOR_RELAY = {"NECTOR_WEBHOOK_SECRET": "nector-secret-19bd02", "CONTLO_BASE_URL": CONTLO_URL,
                "CONTLO_API_KEY": CONTLO_KEY}


@pytest.fixture
def relayed(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(**TOGGLE_RELAY, **NECTOR_RELAY)


def shown(check: doctor_checks.Check) -> str:
    return check.detail + check.fix


# -- Atreemo ------------------------------------------------------------------------------


@respx.mock
async def test_atreemo_probe_is_unsigned_and_empty_and_its_401_is_ok(relayed) -> None:
    route = respx.post(ATREEMO_URL).mock(return_value=httpx.Response(
        401, json={"error": "Unauthorized", "message": "bad Toggle-Signature"}))

    check = await doctor_relays.check_atreemo(relayed)

    assert check.status == doctor_checks.OK, check
    sent = route.calls.last.request
    assert sent.content == b"{}" and "Toggle-Signature" not in sent.headers
    assert "refused an unsigned, empty post with 401" in check.detail
    assert "TLS" in check.detail  # an https URL: the handshake was part of the answer
    assert "not checked: ATREEMO_WEBHOOK_SECRET" in check.detail
    assert "email-trigger events are filtered" in check.detail
    assert ATREEMO_SECRET not in shown(check)


@pytest.mark.parametrize(("status", "verdict", "fix"), [
    (400, doctor_checks.OK, ""),  # not an event: refused too, nothing delivered
    (200, doctor_checks.FAIL, "check ATREEMO_WEBHOOK_URL with Acteol"),
    (404, doctor_checks.FAIL, "check ATREEMO_WEBHOOK_URL"),
    (503, doctor_checks.WARN, "try again later"),
    (429, doctor_checks.WARN, "try again later"),
])
@respx.mock
async def test_atreemo_answers_read_as_the_contract_says(relayed, status: int, verdict: str,
                                                         fix: str) -> None:
    respx.post(ATREEMO_URL).mock(return_value=httpx.Response(status, text="nope"))
    check = await doctor_relays.check_atreemo(relayed)
    assert (check.status, fix in check.fix) == (verdict, True), check


@respx.mock
async def test_an_unreachable_atreemo_fails_naming_the_url_setting(relayed) -> None:
    respx.post(ATREEMO_URL).mock(side_effect=httpx.ConnectError(
        "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed"))
    check = await doctor_relays.check_atreemo(relayed)
    assert check.status == doctor_checks.FAIL
    assert "CERTIFICATE_VERIFY_FAILED" in check.detail
    assert "ATREEMO_WEBHOOK_URL" in check.fix and "TLS certificate" in check.fix


# -- Contlo -------------------------------------------------------------------------------


@respx.mock
async def test_contlo_probe_tracks_nobody_and_its_400_means_the_key_was_taken(
    relayed,
) -> None:
    route = respx.post(f"{CONTLO_URL}/v1/track").mock(return_value=httpx.Response(
        400, json={"success": False, "message": "email or phone_number is required"}))

    check = await doctor_relays.check_contlo(relayed)

    assert check.status == doctor_checks.OK, check
    sent = route.calls.last.request
    assert sent.headers["X-API-KEY"] == CONTLO_KEY
    body = json.loads(sent.content)
    assert "email" not in body and "phone_number" not in body  # nobody to email
    assert body["event"] == "pointsync doctor probe"
    assert "took CONTLO_API_KEY" in check.detail and "nothing was tracked" in check.detail
    assert CONTLO_KEY not in shown(check)


@pytest.mark.parametrize(("status", "verdict", "fix"), [
    (401, doctor_checks.FAIL, "CONTLO_API_KEY was refused"),
    (200, doctor_checks.WARN, "tell the maintainers"),
    (404, doctor_checks.FAIL, "check CONTLO_BASE_URL"),
    (502, doctor_checks.WARN, "try again later"),
])
@respx.mock
async def test_contlo_answers_read_as_the_contract_says(relayed, status: int, verdict: str,
                                                        fix: str) -> None:
    # An error body that echoes the key shows it masked.
    respx.post(f"{CONTLO_URL}/v1/track").mock(return_value=httpx.Response(
        status, json={"success": False, "message": f"key {CONTLO_KEY} is not valid"}))
    check = await doctor_relays.check_contlo(relayed)
    assert (check.status, fix in check.fix) == (verdict, True), check
    assert CONTLO_KEY not in shown(check)


# -- configuration ------------------------------------------------------------------------


async def test_relays_that_are_off_are_skipped_without_a_request(settings) -> None:
    with respx.mock(assert_all_called=False) as router:
        anything = router.route().mock(return_value=httpx.Response(500))
        checks = await doctor_relays.destination_checks(settings)
    assert [(c.name, c.status) for c in checks] == [("atreemo", doctor_checks.SKIP),
                                                    ("contlo", doctor_checks.SKIP)]
    assert "ATREEMO_WEBHOOK_URL" in checks[0].detail and not anything.called


async def test_a_partly_set_relay_is_named_and_the_other_checks_go_on(env) -> None:
    env.setenv("TOGGLE_WEBHOOK_SECRET", "toggle-whsec-7f3a91")  # Atreemo's two are missing
    for name, value in NECTOR_RELAY.items():
        env.setenv(name, value)
    rows, _core, full = doctor_checks.check_configuration()

    assert rows[0].status == doctor_checks.FAIL
    assert "ATREEMO_WEBHOOK_URL" in rows[0].detail and "ATREEMO_WEBHOOK_SECRET" in rows[0].detail
    # The rest is checked with the Toggle relay off (the Nector one stays on).
    assert full is not None and not full.toggle_relay_enabled and full.nector_relay_enabled
    with respx.mock(assert_all_called=False) as router:
        contlo = router.post(f"{CONTLO_URL}/v1/track").mock(return_value=httpx.Response(400))
        atreemo, contlo_row = await doctor_relays.destination_checks(full)
    assert atreemo.status == doctor_checks.FAIL
    assert atreemo.detail.startswith("partly configured: ATREEMO_WEBHOOK_URL, "
                                     "ATREEMO_WEBHOOK_SECRET not set (TOGGLE_WEBHOOK_SECRET")
    assert "unset TOGGLE_WEBHOOK_SECRET" in atreemo.fix
    assert contlo_row.status == doctor_checks.OK and contlo.called
    assert "toggle-whsec-7f3a91" not in json.dumps(doctor_checks.as_dicts([*rows, atreemo]))


def test_another_bad_setting_is_not_taken_for_a_partial_relay(env) -> None:
    env.setenv("TOGGLE_WEBHOOK_SECRET", "toggle-whsec-7f3a91")
    env.setenv("ENGAGE_RATE_LIMIT", "fast")
    assert doctor_relays.partial_relays() == {}
    rows, _core, full = doctor_checks.check_configuration()
    assert full is None and "ENGAGE_RATE_LIMIT" in rows[0].detail


# -- backlog ------------------------------------------------------------------------------


@pytest.fixture
def relays(env: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Relays]:
    for name, value in {**TOGGLE_RELAY, **NECTOR_RELAY}.items():
        env.setenv(name, value)
    for url in cli_database(env, tmp_path):
        yield Relays(runtime.prepare_store(url))


def receive_both(relays: Relays) -> None:
    store = runtime.get_store()
    toggle = toggle_body(570)
    receive(store, TOGGLE, toggle, toggle_headers(toggle))
    nector = nector_body("cust-9")
    receive(store, NECTOR, nector, nector_headers(nector, "d-9"))


def test_backlog_is_ok_while_events_are_fresh(relays: Relays) -> None:
    receive_both(relays)
    check = doctor_relays.check_backlog(get_settings())
    assert check.status == doctor_checks.OK, check
    assert "toggle → atreemo: 1 waiting, the oldest 0 min" in check.detail
    assert "nector → contlo: 1 waiting" in check.detail


def test_backlog_says_when_nothing_waits(relays: Relays) -> None:
    check = doctor_relays.check_backlog(get_settings())
    assert check.status == doctor_checks.OK
    assert check.detail == "nector → contlo: nothing waiting; toggle → atreemo: nothing waiting"


def test_backlog_warns_once_an_event_has_waited_over_the_alerts_hour(relays: Relays) -> None:
    receive_both(relays)
    age(relays, doctor_relays.BEHIND_SECONDS + 120)
    check = doctor_relays.check_backlog(get_settings())
    assert check.status == doctor_checks.WARN, check
    assert "1 h 2 min" in check.detail and "toggle-atreemo" in check.detail
    assert "pointsync relay list --state received" in check.fix


def test_backlog_is_skipped_without_relays(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for _url in cli_database(env, tmp_path):
        check = doctor_relays.check_backlog(get_settings())
        assert check.status == doctor_checks.SKIP


def test_the_backlog_threshold_is_the_alerts() -> None:
    rules = (Path(__file__).resolve().parents[2] / "alerts.yml").read_text()
    assert f"pointsync_relay_oldest_undelivered_seconds > {doctor_relays.BEHIND_SECONDS}" \
        in rules
