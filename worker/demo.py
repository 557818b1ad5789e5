"""`pointsync demo`: the main job end to end on embedded defaults, then a check.

Starts (or reuses) Redis, the simulators seeded with changed balances, a real Celery worker
and beat; sends one `pointsync.sync_balances` through the broker, waits for it, prints its
summary, checks that Engage now equals Treazure for every changed contact, and stops
everything it started.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import httpx
import redis
from celery import Celery
from rich.console import Console

from worker.cli import run_summary
from worker.harness import CeleryProcess, ensure_redis, start_celery, start_simulators, stop
from worker.runtime import prepare_store

console = Console()


def run_demo(contacts: int, timeout: float = 900) -> int:
    root = Path.cwd() / ".demo"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    # A database index of its own: the demo empties it first and never touches another.
    wanted = os.environ.get("DEMO_REDIS_URL", "redis://127.0.0.1:6379/15")
    started = time.monotonic()
    with ensure_redis(wanted, root / "redis") as redis_url:
        redis.Redis.from_url(redis_url).flushdb()
        console.print(f"seeding the simulators with {contacts:,} changed contacts …")
        sims = start_simulators(seed_contacts=contacts)
        processes: list[CeleryProcess] = []
        try:
            database_url = f"sqlite:///{root / 'pointsync.db'}"
            env = {**sims.env(), "REDIS_URL": redis_url, "DATABASE_URL": database_url}
            store = prepare_store(database_url)
            processes.append(start_celery("worker", env, root / "worker.log",
                                          ["--concurrency", "2", "-n", "demo@%h"]))
            processes.append(start_celery("beat", env, root / "beat.log"))
            console.print("worker and beat are up; sending pointsync.sync_balances …")
            client = Celery("demo", broker=redis_url, backend=redis_url)
            summary = client.send_task("pointsync.sync_balances").get(timeout=timeout)
            client.close()
            run = store.get_run(summary["run_id"])
            console.print(run_summary(run, "the sync run"))
            check = httpx.post(f"{sims.engage}/_sim/compare", json={}, timeout=60).json()
            ok = run["status"] == "succeeded" and check["mismatch_count"] == 0
            verdict = "[green]OK[/green]" if ok else "[red]MISMATCH[/red]"
            console.print(
                f"check: Engage equals Treazure for {check['checked'] - check['mismatch_count']:,}"
                f" of {check['checked']:,} changed contacts — {verdict}"
            )
            for row in check.get("mismatches", [])[:5]:
                console.print(f"  {row}")
            console.print(f"demo finished in {time.monotonic() - started:.1f} s "
                          f"(logs in {root})")
            return 0 if ok else 1
        finally:
            for process in reversed(processes):
                process.stop()
            stop(sims.proc)

