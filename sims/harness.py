"""Starts and stops the real processes that the demo, the tests and the benchmark use:
a Redis if none answers, the simulators, Celery workers and beat. Nothing here mocks."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import redis

from sims.relays import atreemo, contlo
from sims.senders import NECTOR_WEBHOOK_SECRET, TOGGLE_WEBHOOK_SECRET
from sims.toggle.config import ToggleConfig

PYTHON = sys.executable
BIN = Path(PYTHON).parent


def redis_answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=2).ping())
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        return False


def _wait_until(
    predicate: Callable[[], bool], timeout: float, what: str, poll: float = 0.05
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not ready after {timeout:g} s")
        time.sleep(poll)


def _install_redis_server() -> str | None:
    """Debian's redis-server, when we may install packages (root with apt-get)."""
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return None
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    print("pointsync: installing Debian's redis-server …", flush=True)
    subprocess.run(["apt-get", "update", "-qq"], check=False, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "redis-server"], check=False, env=env)
    return shutil.which("redis-server")


@contextlib.contextmanager
def ensure_redis(url: str, workdir: Path) -> Iterator[str]:
    """Yield a URL of a Redis that answers: `url` itself, or one started here for the block."""
    if redis_answers(url):
        yield url
        return
    binary = shutil.which("redis-server") or _install_redis_server()
    if binary is None:
        raise RuntimeError(f"no Redis answers at {url} and redis-server cannot be installed")
    port = urlparse(url).port or 6379
    if _port_busy(port):
        port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
         "--maxmemory-policy", "noeviction", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    started = f"redis://127.0.0.1:{port}/{urlparse(url).path.lstrip('/') or '0'}"
    try:
        _wait_until(lambda: redis_answers(started), 20, "redis-server")
        print(f"pointsync: started redis-server on port {port}", flush=True)
        yield started
    finally:
        stop(proc)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_busy(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def stop(proc: subprocess.Popen, timeout: float = 20) -> None:  # type: ignore[type-arg]
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


@dataclass
class Simulators:
    proc: subprocess.Popen  # type: ignore[type-arg]
    treazure: str
    engage: str
    toggle: str = ""  # base URL of the Toggle simulator (control API); GraphQL at /graphql
    atreemo: str = ""  # base URL of the Atreemo simulator (control API); ingests at PATH
    contlo: str = ""  # base URL of the Contlo simulator (its API and control API)

    def env(self) -> dict[str, str]:
        """The worker settings that point at these simulators (their built-in credentials)."""
        return {
            "TREAZURE_BASE_URL": self.treazure,
            "TREAZURE_CLIENT_ID": "sim-client",
            "TREAZURE_CLIENT_SECRET": "sim-secret",
            "TREAZURE_LOYALTY_ID": "points",
            "ENGAGE_BASE_URL": self.engage,
            "ENGAGE_API_KEY": "sim-key",
            **(_toggle_env(self.toggle) if self.toggle else {}),
            **(_relay_env(self.atreemo, self.contlo) if self.atreemo and self.contlo else {}),
        }


def _toggle_env(url: str) -> dict[str, str]:
    """The Toggle simulator's built-in API user, account and sites (sims/toggle/config.py)."""
    config = ToggleConfig()
    return {
        "TOGGLE_API_URL": f"{url}/graphql",
        "TOGGLE_USERNAME": config.username,
        "TOGGLE_PASSWORD": config.password,
        "TOGGLE_ACCOUNT_ID": str(config.account_id),
        "TOGGLE_SITES": config.sites_setting(),
    }


def _relay_env(atreemo_url: str, contlo_url: str) -> dict[str, str]:
    """Both relays on: the secrets the signed senders (sims/senders.py) sign with, and the
    destination simulators' built-in secret and key."""
    return {
        "TOGGLE_WEBHOOK_SECRET": TOGGLE_WEBHOOK_SECRET,
        "ATREEMO_WEBHOOK_URL": f"{atreemo_url}{atreemo.PATH}",
        "ATREEMO_WEBHOOK_SECRET": atreemo.SECRET,
        "NECTOR_WEBHOOK_SECRET": NECTOR_WEBHOOK_SECRET,
        "CONTLO_BASE_URL": contlo_url,
        "CONTLO_API_KEY": contlo.API_KEY,
    }


def start_simulators(seed_contacts: int = 0, seed_changed: int | None = None,
                     extra: list[str] | None = None) -> Simulators:
    args = [PYTHON, "-m", "sims", "--host", "127.0.0.1",
            "--treazure-port", "0", "--engage-port", "0", "--toggle-port", "0",
            "--atreemo-port", "0", "--contlo-port", "0",
            "--seed-contacts", str(seed_contacts)]
    if seed_changed is not None:
        args += ["--seed-changed", str(seed_changed)]
    proc = subprocess.Popen(args + (extra or []), stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()  # the readiness line: blocks until the sim listens
    if not line:
        proc.wait(5)
        raise RuntimeError(f"simulators exited before listening (status {proc.returncode})")
    urls = json.loads(line)
    return Simulators(proc, urls["treazure"], urls["engage"], urls.get("toggle", ""),
                      urls.get("atreemo", ""), urls.get("contlo", ""))


@dataclass
class ManagedProcess:
    """A process started in its own group, with its log."""

    proc: subprocess.Popen  # type: ignore[type-arg]
    log: Path

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM (a warm shutdown waits for running tasks); after `timeout`, SIGKILL to
        the whole group, so no pool child is left consuming messages."""
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL the whole process group (a Celery pool's children too), as a crash would."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)


class CeleryProcess(ManagedProcess):
    pass


def start_celery(kind: str, env: dict[str, str], log: Path, args: list[str] | None = None,
                 ready_timeout: float = 60, *, lean: bool = False) -> CeleryProcess:
    """`celery -A worker worker|beat …`, waiting until it says it is ready. `lean`: the
    worker through `python -m worker.faces.celery.worker_command` (no Celery CLI plugins)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    handle = log.open("w")
    start = [PYTHON, "-m", "worker.faces.celery.worker_command"] if lean and kind == "worker" \
        else [str(BIN / "celery"), "-A", "worker", kind]
    command = [*start, "--loglevel", "INFO", *(args or [])]
    proc = subprocess.Popen(
        command, env={**os.environ, **env}, stdout=handle, stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, so kill() reaches the children
    )
    handle.close()
    marker = "ready." if kind == "worker" else "beat: Starting"
    try:
        _wait_until(lambda: marker in log.read_text() or proc.poll() is not None,
                    ready_timeout, f"celery {kind}")
    except TimeoutError:
        stop(proc)
        raise
    if proc.poll() is not None:
        raise RuntimeError(f"celery {kind} exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
    return CeleryProcess(proc, log)


@dataclass
class WebProcess(ManagedProcess):
    url: str  # base URL, e.g. http://127.0.0.1:8123


_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy


def _healthy(url: str) -> bool:
    try:
        with _DIRECT.open(f"{url}/health", timeout=1) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):  # refused while starting, or a non-2xx answer
        return False


def start_web(env: dict[str, str], log: Path, ready_timeout: float = 30) -> WebProcess:
    """`python -m worker.faces.web` on 127.0.0.1:$PORT, waiting until GET /health answers 200."""
    log.parent.mkdir(parents=True, exist_ok=True)
    full_env = {**os.environ, **env}
    url = f"http://127.0.0.1:{full_env['PORT']}"
    handle = log.open("w")
    proc = subprocess.Popen(
        [PYTHON, "-m", "worker.faces.web"], env=full_env, stdout=handle, stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, so kill() reaches any children
    )
    handle.close()
    try:
        _wait_until(lambda: proc.poll() is not None or _healthy(url), ready_timeout,
                    "web process", poll=0.1)
    except TimeoutError as error:
        stop(proc)
        raise TimeoutError(f"{error}:\n{log.read_text()[-3000:]}") from None
    if proc.poll() is not None:
        raise RuntimeError(f"web process exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
    return WebProcess(proc, log, url)
