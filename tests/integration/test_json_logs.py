"""LOG_FORMAT=json on the real processes: every line a worker, beat or the web process
writes is one JSON object; sync lines carry the task id and the run id, Celery's own lines
the task id, and no secret is written."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from sims.guids import seeded_ids
from sims.harness import CeleryProcess, _wait_until, free_port, start_web
from tests.support.integration import Sim

pytestmark = pytest.mark.integration

SYNC = "pointsync.sync_balances"
ADD = "pointsync.add_points"
# The simulators take whatever credentials they are told to: distinctive ones, to look for.
CLIENT_SECRET = "tz-it-" + base64.b32encode(os.urandom(10)).decode()
API_KEY = "eng-it-" + base64.b32encode(os.urandom(10)).decode()
JSON = {"LOG_FORMAT": "json", "TREAZURE_CLIENT_SECRET": CLIENT_SECRET,
        "ENGAGE_API_KEY": API_KEY}
# Celery writes this straight to stdout from its SIGTERM handler (not through logging),
# after it stopped taking work; it is the one line of a worker that no formatter sees.
SHUTDOWN_NOTICE = "worker: Warm shutdown (MainProcess)"


def json_lines(log: Path, allowed: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Every line of the log parsed; any line that is not a JSON log object fails."""
    entries = []
    for number, line in enumerate(log.read_text().splitlines(), 1):
        if line.strip() in allowed:
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            pytest.fail(f"{log.name}:{number} is not JSON: {line!r}")
        assert {"ts", "level", "logger", "message"} <= entry.keys(), line
        entries.append(entry)
    return entries


@pytest.fixture
def credentials(sim: Sim) -> None:
    """The simulators accept the distinctive credentials (reset restores theirs)."""
    sim.post("config", {"client_secret": CLIENT_SECRET, "api_key": API_KEY})


def test_worker_writes_only_json_with_task_and_run_ids(
    sim: Sim, credentials: None, start_worker: Callable[..., CeleryProcess], client: Celery,
) -> None:
    sim.post("seed", {"contacts": 300})
    worker = start_worker(**JSON, HISTORY_AFTER_SYNC="false")
    synced = client.send_task(SYNC)
    summary = synced.get(timeout=120)
    assert summary["status"] == "succeeded"
    # A run Treazure refuses: the task fails, and Celery logs its traceback.
    sim.post("faults", {"target": "treazure.balances_start", "kind": "status",
                        "status": 400, "count": 1})
    failed = client.send_task(SYNC)
    failed.get(timeout=120, propagate=False)
    assert failed.state == "FAILURE"
    booked = client.send_task(ADD, kwargs={"contact_id": seeded_ids(0, 1)[0], "amount": "5",
                                           "description": "json logs",
                                           "reference": "it-json-logs-1"})
    assert booked.get(timeout=60)["state"] in ("booked", "applied")
    worker.stop()  # everything it had to say is in the log now

    text = worker.log.read_text()
    entries = json_lines(worker.log, allowed=("", SHUTDOWN_NOTICE))
    # The sync flow's own lines: both ids.
    started = [e for e in entries if e["message"].startswith(f"sync run {summary['run_id']} ")]
    assert started and all(e.get("task_id") == synced.id and e.get("run_id") ==
                           summary["run_id"] and e["task_name"] == SYNC for e in started)
    # Celery's own lines: the task id as a field.
    (succeeded,) = [e for e in entries if e["message"].startswith(
        f"Task {SYNC}[{synced.id}] succeeded in ")]
    assert succeeded["logger"] == "celery.app.trace" and succeeded["task_id"] == synced.id
    (received,) = [e for e in entries if e["message"] == f"Task {SYNC}[{synced.id}] received"]
    assert received["task_id"] == synced.id
    # The failure: one line, the traceback inside it.
    (failure,) = [e for e in entries if e["level"] == "ERROR" and e.get("task_id") == failed.id
                  and e["logger"] == "celery.app.trace"]
    assert "SyncFailed" in failure["exc"] and "Traceback" in failure["exc"]
    # A point transaction's lines carry its reference.
    assert any(e.get("reference") == "it-json-logs-1" and e.get("task_id") == booked.id
               for e in entries)
    assert CLIENT_SECRET not in text and API_KEY not in text


def test_beat_writes_only_json(
    credentials: None, start_worker: Callable[..., CeleryProcess]
) -> None:
    beat = start_worker("beat", **JSON)
    # Stopped only once it holds the schedule: a stop mid-start-up is a test of something else.
    _wait_until(lambda: "beat: Acquired lock" in beat.log.read_text(), 30, "beat's lock")
    beat.stop()
    entries = json_lines(beat.log)
    assert any(e["message"].startswith("beat: Starting") for e in entries)
    assert not [e for e in entries if e["level"] in ("ERROR", "CRITICAL")]
    text = beat.log.read_text()
    assert "celery beat v" not in text  # the printed banner stays out in JSON mode
    assert CLIENT_SECRET not in text and API_KEY not in text


def test_web_process_writes_only_json(worker_env: dict[str, str], tmp_path: Path) -> None:
    webhook_secret = "whsec_" + base64.b64encode(os.urandom(24)).decode()
    env = {**worker_env, **JSON, "PORT": str(free_port()), "WEBHOOK_SECRET": webhook_secret,
           "WEB_API_KEY": "web-it-" + base64.b32encode(os.urandom(10)).decode()}
    web = start_web(env, tmp_path / "web.log")
    web.stop()
    entries = json_lines(web.log)
    assert any(e["message"] == f"pointsync web listening on {web.url}" and
               e["logger"] == "pointsync.web" for e in entries)
    text = web.log.read_text()
    for secret in (CLIENT_SECRET, API_KEY, env["WEB_API_KEY"], webhook_secret,
                   webhook_secret.removeprefix("whsec_")):
        assert secret not in text
