"""The settings the Celery app is built from, read in a process apart where pydantic is not
loaded yet.

`pydantic_settings` is about 23 MB of RSS in a process. The worker's main process runs no
task: it needs the broker's URL, the time limit, the beat intervals and the log format, and
a check at start that every setting is valid. Read here, pydantic would stay in it for
good, and in every pool child forked from it (idle ones included). So a short-lived
`python -m worker.faces.celery.settings_apart` reads and checks them and hands back the
values as JSON; a setting that does not validate stops this process with the same one-line
reason and exit status as before. A process that has loaded pydantic anyway (the web
process, the CLI, tests) reads them in place: it saves nothing by asking another.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from dataclasses import dataclass
from typing import Any, Protocol

CORE = "core"  # the app's settings (CoreSettings)
FULL = "full"  # every setting the worker and beat need, checked; DATABASE_URL returned


class CeleryInputs(Protocol):
    """What the Celery config and beat's schedule read (CoreSettings, WebSettings, CoreValues)."""

    @property
    def REDIS_URL(self) -> str: ...
    @property
    def TASK_TIME_LIMIT_SECONDS(self) -> int: ...
    @property
    def SYNC_INTERVAL_SECONDS(self) -> int: ...
    @property
    def POINTS_SWEEP_INTERVAL_SECONDS(self) -> int: ...
    @property
    def HISTORY_PURGE_INTERVAL_SECONDS(self) -> int: ...


@dataclass(frozen=True)
class CoreValues:
    REDIS_URL: str
    TASK_TIME_LIMIT_SECONDS: int
    SYNC_INTERVAL_SECONDS: int
    POINTS_SWEEP_INTERVAL_SECONDS: int
    HISTORY_PURGE_INTERVAL_SECONDS: int
    LOG_FORMAT: str


_FIELDS = tuple(CoreValues.__dataclass_fields__)


def core_values() -> CoreValues:
    """The app's settings, checked (a process stops on an invalid one)."""
    return CoreValues(**_read(CORE))


def checked_database_url() -> str:
    """Check every setting the worker and beat need (stop on an invalid one); the store's URL."""
    return str(_read(FULL)["DATABASE_URL"])


def _read(kind: str) -> dict[str, Any]:
    # In place, the settings' own cache answers (and forgets with settings.clear_cache).
    return _values(kind) if "pydantic" in sys.modules else _read_apart(kind)


@functools.cache
def _read_apart(kind: str) -> dict[str, Any]:
    """One short-lived process per kind and process lifetime."""
    answer = subprocess.run([sys.executable, "-m", __name__, kind], capture_output=True,
                            text=True, check=False)
    if answer.returncode != 0:
        sys.stderr.write(answer.stderr)
        raise SystemExit(answer.returncode)
    return dict(json.loads(answer.stdout))


def _values(kind: str) -> dict[str, Any]:
    from worker.base.settings import (
        ConfigError,
        exit_on_config_error,
        get_core_settings,
        get_settings,
    )

    try:
        if kind == FULL:
            return {"DATABASE_URL": get_settings().DATABASE_URL}
        settings = get_core_settings()
    except ConfigError as exc:
        exit_on_config_error(exc)
    return {name: getattr(settings, name) for name in _FIELDS}


if __name__ == "__main__":
    print(json.dumps(_values(sys.argv[1])))
