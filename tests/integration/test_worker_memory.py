"""What keeps a worker's processes lean: the schema upgraded in a forked child (the worker
never loads Alembic), httpx without its command-line tool, the store and the clients loaded
only by a pool child that runs a task. Each check runs in a fresh interpreter or a real
worker, since this test process has imported much already."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
from celery import Celery
from sqlalchemy import create_engine, inspect

from sims.harness import CeleryProcess, _wait_until
from worker.faces.schema_apart import SchemaUpgradeFailed, prepare_schema_apart

pytestmark = pytest.mark.integration


def _fresh(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=True)
    return done.stdout.strip()


def test_the_schema_is_upgraded_in_a_child_and_alembic_never_loaded_here(
        tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    loaded = _fresh(
        "import sys\n"
        "from worker.faces.schema_apart import prepare_schema_apart\n"
        f"prepare_schema_apart({url!r})\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'alembic'))\n")
    assert loaded == "[]"
    tables = inspect(create_engine(url)).get_table_names()
    assert {"alembic_version", "contact_balances", "sync_runs"} <= set(tables)


def test_a_failed_upgrade_raises_here_with_the_childs_reason(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'no-such-directory' / 'x.db'}"
    with pytest.raises(SchemaUpgradeFailed, match=r"OperationalError.*unable to open"):
        prepare_schema_apart(url)


def test_an_in_memory_database_is_upgraded_in_this_process() -> None:
    from worker.faces import runtime

    url = "sqlite://"
    try:
        prepare_schema_apart(url)
        store = runtime.store_for(url)
        assert "contact_balances" in inspect(store.engine).get_table_names()
    finally:
        runtime._stores.pop(url).engine.dispose()


def test_httpx_comes_without_its_command_line_tool_after_worker() -> None:
    loaded = _fresh("import sys, worker, httpx\n"
                    "tops = {m.split('.')[0] for m in sys.modules}\n"
                    "print(sorted(tops & {'rich', 'pygments'}))\n")
    assert loaded == "[]"


# Compiled parts of what the runtime loads (the store's SQLAlchemy, the clients' msgspec,
# the settings' pydantic, read apart for the app: settings_apart.py): a process that has
# imported them maps these files.
RUNTIME_LIBRARIES = ("/sqlalchemy/", "/msgspec/", "/pydantic_core/")


def _maps_runtime(pid: int) -> bool:
    return any(any(lib in m.path for lib in RUNTIME_LIBRARIES)
               for m in psutil.Process(pid).memory_maps(grouped=True))


def test_only_the_pool_child_that_runs_a_task_loads_the_store_and_clients(
        start_worker: Callable[..., CeleryProcess], client: Celery) -> None:
    # The main process registers the tasks but runs none: every page it holds is in each
    # pool child too, so what it need not load, no process carries until it runs a task.
    worker = start_worker(concurrency=2)
    main = worker.proc.pid
    children = [child.pid for child in psutil.Process(main).children()]
    assert len(children) == 2
    assert [_maps_runtime(pid) for pid in (main, *children)] == [False, False, False]

    assert client.send_task("pointsync.purge_history").get(timeout=60) == {"removed": 0}

    assert not _maps_runtime(main)
    assert sorted(_maps_runtime(pid) for pid in children) == [False, True]


def test_the_worker_command_starts_the_same_worker_without_celerys_other_commands(
        worker_env: dict[str, str], client: Celery, tmp_path: Path) -> None:
    # `celery -A worker worker` would also load Flower's plugin (tornado, whose compiled
    # speedups a process then maps) and the amqp shell's prompt_toolkit: the worker needs
    # neither. The app's own options still apply (in JSON mode, no banner: only JSON lines).
    log = tmp_path / "worker.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "worker.faces.celery.worker_command", "--loglevel", "INFO",
             "--concurrency", "1", "-n", "it-command@%h", "-Q", "celery"],
            env={**os.environ, **worker_env, "LOG_FORMAT": "json"}, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True)
    worker = CeleryProcess(proc, log)
    try:
        _wait_until(lambda: "ready." in log.read_text() or proc.poll() is not None, 60,
                    "the worker command")
        assert proc.poll() is None, log.read_text()[-3000:]
        assert client.send_task("pointsync.purge_history").get(timeout=60) == {"removed": 0}
        lines = log.read_text().splitlines()
        assert all(isinstance(json.loads(line), dict) for line in lines if line.strip())
        mapped = {m.path for m in psutil.Process(proc.pid).memory_maps(grouped=True)}
        assert not any("/tornado/" in path for path in mapped)
    finally:
        worker.stop(timeout=10)
