"""Helpers shared by the simulator tests (a uniquely named module, not conftest, so that
test files can import it whatever other conftest.py files exist)."""

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "sim-key"
CLIENT = {"client_id": "sim-client", "client_secret": "sim-secret"}
VAULT = "/api/v1.0/LoyaltyVault"


@contextmanager
def running_sim(*args: str) -> Iterator[dict[str, str]]:
    """Start `python -m sims` on free ports, yield its URLs, stop it with SIGTERM."""
    command = [sys.executable, "-m", "sims", "--treazure-port", "0", "--engage-port", "0"]
    process = subprocess.Popen([*command, *args], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        ready = process.stdout.readline()  # type: ignore[union-attr]  # blocks until listening
        if not ready:
            raise RuntimeError(f"simulator exited before it was ready (code {process.wait()})")
        yield json.loads(ready)
    finally:
        if process.poll() is None:
            process.terminate()
            assert process.wait(timeout=10) == 0, "simulator did not exit cleanly on SIGTERM"


def fetch_token(client: httpx.Client) -> str:
    form = {"grant_type": "client_credentials", "scope": "api_loyaltyvault", **CLIENT}
    response = client.post("/identity/connect/token", data=form)
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


def add_accounts(client: httpx.Client, *accounts: dict[str, Any]) -> None:
    client.post("/_sim/accounts", json={"accounts": list(accounts)}).raise_for_status()


def guid(n: int) -> str:
    return f"00000000-0000-4000-8000-{n:012x}"
