"""The doctor's relay probes against the Atreemo and Contlo simulators (in-process, over a
real socket): each is answered as the contract says, and neither delivers or tracks
anything. How each answer reads is in tests/unit/test_doctor_relays.py."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestServer

from sims.faults import Fault
from sims.relays import atreemo, contlo
from sims.relays.destination import Destination
from worker.base.settings import Settings
from worker.faces.cli import doctor_relays
from worker.faces.cli.doctor_result import FAIL, OK, WARN


@pytest.fixture
async def servers(monkeypatch: pytest.MonkeyPatch, tmp_path
                  ) -> AsyncIterator[tuple[TestServer, Destination, TestServer, Destination]]:
    monkeypatch.chdir(tmp_path)  # no .env
    atreemo_state, contlo_state = atreemo.atreemo_state(), contlo.contlo_state()
    async with TestServer(atreemo.atreemo_app(atreemo_state)) as atreemo_server, \
            TestServer(contlo.contlo_app(contlo_state)) as contlo_server:
        yield atreemo_server, atreemo_state, contlo_server, contlo_state


def settings_for(atreemo_server: TestServer, contlo_server: TestServer,
                 **overrides: str) -> Settings:
    values = {
        "TREAZURE_BASE_URL": "http://127.0.0.1:9", "TREAZURE_CLIENT_ID": "c",
        "TREAZURE_CLIENT_SECRET": "s3cret-treazure", "TREAZURE_LOYALTY_ID": "points",
        "ENGAGE_BASE_URL": "http://127.0.0.1:9", "ENGAGE_API_KEY": "k3y-engage",
        "TOGGLE_WEBHOOK_SECRET": "toggle-secret",
        "ATREEMO_WEBHOOK_URL": str(atreemo_server.make_url(atreemo.PATH)),
        "ATREEMO_WEBHOOK_SECRET": atreemo.SECRET,
        "NECTOR_WEBHOOK_SECRET": "nector-secret",
        "CONTLO_BASE_URL": str(contlo_server.make_url("/")), "CONTLO_API_KEY": contlo.API_KEY,
        **overrides}
    return Settings(**values)


async def test_both_probes_pass_and_nothing_is_delivered_or_tracked(servers) -> None:
    atreemo_server, atreemo_state, contlo_server, contlo_state = servers
    settings = settings_for(atreemo_server, contlo_server)

    atreemo_row, contlo_row = await doctor_relays.destination_checks(settings)

    assert atreemo_row.status == OK and "with 401" in atreemo_row.detail, atreemo_row
    assert contlo_row.status == OK and "refused with 400" in contlo_row.detail, contlo_row
    assert contlo.NO_CONTACT in contlo_row.detail  # the simulator's own reason
    assert atreemo_state.received == [] and contlo_state.received == []
    assert atreemo_state.unauthorized == 1 and contlo_state.answers == {"400": 1}


async def test_a_wrong_contlo_key_fails_and_a_failing_atreemo_warns(servers) -> None:
    atreemo_server, atreemo_state, contlo_server, contlo_state = servers
    settings = settings_for(atreemo_server, contlo_server, CONTLO_API_KEY="not-the-key-4411")
    atreemo_state.faults.add("atreemo", Fault(kind="status", remaining=1, status=503))

    atreemo_row, contlo_row = await doctor_relays.destination_checks(settings)

    assert contlo_row.status == FAIL and "CONTLO_API_KEY was refused" in contlo_row.fix
    assert "not-the-key-4411" not in contlo_row.detail + contlo_row.fix
    assert atreemo_row.status == WARN and "503" in atreemo_row.detail
    assert atreemo_state.received == [] and contlo_state.received == []
