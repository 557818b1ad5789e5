"""Fixtures: one simulator process and one client per API for the session; the simulator is
reset before every test."""

from collections.abc import Iterator

import httpx
import pytest

from tests.support.sim import API_KEY, fetch_token, running_sim


@pytest.fixture(scope="session")
def sim_urls() -> Iterator[dict[str, str]]:
    with running_sim() as urls:
        yield urls


@pytest.fixture(scope="session")
def treazure_client(sim_urls: dict[str, str]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sim_urls["treazure"]) as client:
        yield client


@pytest.fixture(scope="session")
def engage_client(sim_urls: dict[str, str]) -> Iterator[httpx.Client]:
    headers = {"apikey": API_KEY, "User-Agent": "pointsync-tests/1.0"}
    with httpx.Client(base_url=sim_urls["engage"], headers=headers) as client:
        yield client


@pytest.fixture
def treazure(treazure_client: httpx.Client) -> httpx.Client:
    """The Treazure client, with the simulator freshly reset (control calls go here too)."""
    treazure_client.post("/_sim/reset").raise_for_status()
    return treazure_client


@pytest.fixture
def engage(engage_client: httpx.Client, treazure: httpx.Client) -> httpx.Client:
    """An Engage client sending the headers Engage requires (reset done by `treazure`)."""
    return engage_client


@pytest.fixture
def auth(treazure: httpx.Client) -> dict[str, str]:
    """A valid Treazure Authorization header."""
    return {"Authorization": f"Bearer {fetch_token(treazure)}"}
