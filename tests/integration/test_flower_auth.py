"""Flower behind basic auth, as the Procfile starts it: no page or API answer without the
password, and no Flower at all when FLOWER_BASIC_AUTH is not set."""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from sims.harness import BIN, ManagedProcess, _wait_until, free_port
from tests.support.integration import REDIS_URL

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
USER = "ops"
PAGES = ("/", "/tasks", "/api/tasks", "/api/workers")


def procfile_command(process: str) -> str:
    """The command of one Procfile process, as written there."""
    for line in (ROOT / "Procfile").read_text().splitlines():
        name, _, command = line.partition(":")
        if name.strip() == process:
            return command.strip()
    raise AssertionError(f"no {process!r} line in the Procfile")


def base_env() -> dict[str, str]:
    """This environment without any FLOWER_* (Flower reads those itself), the venv's
    `celery` first on PATH, and the tests' Redis."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWER_")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["REDIS_URL"] = REDIS_URL
    return env


@dataclass
class Flower:
    url: str
    password: str


def _healthy(url: str) -> bool:
    try:  # /healthcheck needs no password: compose's health check relies on that
        return httpx.get(f"{url}/healthcheck", timeout=1, trust_env=False).text == "OK"
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module", params=["command", "procfile"])
def flower(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[Flower]:
    """Flower started with --basic-auth on the command line, and by the Procfile's own line
    (FLOWER_BASIC_AUTH, FLOWER_PORT; FLOWER_ADDRESS keeps it on 127.0.0.1)."""
    password, port = secrets.token_urlsafe(18), free_port()
    env = base_env()
    if request.param == "command":
        command = [str(BIN / "celery"), "-A", "worker", "flower", f"--port={port}",
                   "--address=127.0.0.1", f"--basic-auth={USER}:{password}"]
    else:
        command = ["bash", "-c", procfile_command("flower")]
        env |= {"FLOWER_BASIC_AUTH": f"{USER}:{password}", "FLOWER_PORT": str(port),
                "FLOWER_ADDRESS": "127.0.0.1"}
    log = tmp_path_factory.mktemp("flower") / "flower.log"
    with log.open("w") as handle:
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=handle,
                                stderr=subprocess.STDOUT, start_new_session=True)
    process = ManagedProcess(proc, log)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until(lambda: proc.poll() is not None or _healthy(url), 30, "flower", poll=0.1)
        assert proc.poll() is None, f"flower exited ({proc.returncode}):\n{log.read_text()}"
        yield Flower(url, password)
    finally:
        process.stop()
        process.kill()  # the rest of its process group, if bash did not exec it


def get(flower: Flower, path: str, auth: tuple[str, str] | None = None) -> httpx.Response:
    return httpx.get(f"{flower.url}{path}", auth=auth, timeout=10, trust_env=False)


@pytest.mark.parametrize("path", PAGES)
def test_no_password_no_answer(flower: Flower, path: str) -> None:
    response = get(flower, path)
    assert response.status_code == 401
    if not path.startswith("/api/"):  # a browser asks for the password
        assert response.headers.get("WWW-Authenticate", "").startswith("Basic")


@pytest.mark.parametrize("path", PAGES)
def test_wrong_credentials_no_answer(flower: Flower, path: str) -> None:
    assert get(flower, path, (USER, flower.password + "x")).status_code == 401
    assert get(flower, path, ("admin", flower.password)).status_code == 401


@pytest.mark.parametrize("path", PAGES)
def test_right_password_answers(flower: Flower, path: str) -> None:
    response = get(flower, path, (USER, flower.password))
    assert response.status_code == 200
    if path.startswith("/api/"):
        assert isinstance(response.json(), dict)


def test_procfile_flower_refuses_to_start_without_basic_auth() -> None:
    result = subprocess.run(
        ["bash", "-c", procfile_command("flower")], cwd=ROOT, env=base_env(),
        capture_output=True, text=True, timeout=30,  # a Flower that started would hang here
    )
    assert result.returncode != 0
    assert "FLOWER_BASIC_AUTH" in result.stderr
