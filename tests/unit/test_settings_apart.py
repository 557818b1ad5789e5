"""The Celery app's settings read in a process apart (faces/celery/settings_apart.py), so
that the worker's main process and its idle pool children never load pydantic."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration  # starts processes

PROBE = (
    "import sys\n"
    "from worker.faces.celery.settings_apart import core_values, checked_database_url\n"
    "values = core_values()\n"
    "print('pydantic' in sys.modules, values.REDIS_URL, values.LOG_FORMAT,\n"
    "      values.SYNC_INTERVAL_SECONDS, checked_database_url())\n"
)
REQUIRED = {"TREAZURE_BASE_URL": "https://t.test", "TREAZURE_CLIENT_ID": "c",
            "TREAZURE_CLIENT_SECRET": "s", "TREAZURE_LOYALTY_ID": "points",
            "ENGAGE_BASE_URL": "https://e.test", "ENGAGE_API_KEY": "k"}


def probe(tmp_path: object, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("TREAZURE_", "ENGAGE_", "REDIS_", "LOG_", "SYNC_",
                                 "DATABASE_"))}
    return subprocess.run([sys.executable, "-c", PROBE], env={**base, **env},
                          capture_output=True, text=True, timeout=60, cwd=str(tmp_path),
                          check=False)


def test_a_process_without_pydantic_gets_the_values_checked_apart(tmp_path: object) -> None:
    done = probe(tmp_path, REDIS_URL="redis://cache.test:6380/2", LOG_FORMAT="json",
                 SYNC_INTERVAL_SECONDS="600", DATABASE_URL="sqlite:///x.db", **REQUIRED)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "redis://cache.test:6380/2", "json", "600",
                                   "sqlite:///x.db"]


def test_an_invalid_setting_stops_the_process_with_the_one_line_reason(
    tmp_path: object
) -> None:
    done = probe(tmp_path, REDIS_URL="http://not-redis", **REQUIRED)
    assert done.returncode == 78
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("pointsync:") and "REDIS_URL" in lines[0]


def test_a_missing_flow_setting_stops_the_worker_check(tmp_path: object) -> None:
    done = probe(tmp_path, REDIS_URL="redis://cache.test:6380/2")  # no Treazure, no Engage
    assert done.returncode == 78
    assert "TREAZURE_BASE_URL is required" in done.stderr
