"""`pointsync demo`: the main job end to end on embedded defaults, then a check.

Starts (or reuses) Redis, the simulators seeded with changed balances, a real Celery worker
and beat; sends one `pointsync.sync_balances` through the broker, waits for it, prints its
summary, checks that Engage now equals Treazure for every changed contact; then books three
point transactions (one sent twice, one refused for insufficient balance), shows them from
the ledger; issues a gift card, turns points into one and redeems at a site through
the Toggle simulator (demo_giftcards.py); starts the web process and relays a handful of
signed Toggle and Nector webhooks to the Atreemo and Contlo simulators (demo_relays.py);
and stops everything it started.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import httpx
import redis
from celery import Celery
from rich.console import Console

from sims.demo_giftcards import gift_cards
from sims.demo_relays import relays, start_relay_web
from sims.guids import seeded_ids
from sims.harness import (
    CeleryProcess,
    WebProcess,
    ensure_redis,
    start_celery,
    start_simulators,
    stop,
)
from worker.faces.cli.ledger_rows import points_table
from worker.faces.cli.runs import run_summary
from worker.faces.runtime import prepare_store
from worker.store.database import Store
from worker.store.ledger import Ledger

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
        client = Celery("demo", broker=redis_url, backend=redis_url)
        starter = ThreadPoolExecutor(1, thread_name_prefix="demo-web")
        web: Future[WebProcess] | None = None
        try:
            database_url = f"sqlite:///{root / 'pointsync.db'}"
            env = {**sims.env(), "REDIS_URL": redis_url, "DATABASE_URL": database_url}
            store = prepare_store(database_url)
            processes.append(start_celery("worker", env, root / "worker.log",
                                          ["--concurrency", "2", "-n", "demo@%h"]))
            processes.append(start_celery("beat", env, root / "beat.log"))
            console.print("worker and beat are up; sending pointsync.sync_balances …")
            summary = client.send_task("pointsync.sync_balances").get(timeout=timeout)
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
            if sims.atreemo and sims.contlo:
                # The relays' web process starts while the transactions and gift cards,
                # which mostly wait, are under way: little of its start-up adds to the time.
                web = starter.submit(start_relay_web, env, root)
            ok = _point_transactions(client, store, sims.engage, timeout) and ok
            if sims.toggle:  # gift cards through Toggle (sims/demo_giftcards.py)
                ok = gift_cards(console, client, sims, timeout) and ok
            if web is not None:  # event relays (sims/demo_relays.py)
                ok = relays(console, sims, env, root, web.result()).ok and ok
            console.print(f"demo finished in {time.monotonic() - started:.1f} s "
                          f"(logs in {root})")
            return 0 if ok else 1
        finally:
            client.close()
            _stop_all(processes, web)
            starter.shutdown()
            stop(sims.proc)


def _stop_all(processes: list[CeleryProcess], web: Future[WebProcess] | None) -> None:
    """The web process shuts down while the worker and beat do (each takes seconds)."""
    started = None
    if web is not None:
        try:
            started = web.result()  # still starting: wait, so it is not left running
        except Exception:  # it did not start (start_web stopped what it began)
            started = None
    if started is not None and started.proc.poll() is None:
        started.proc.send_signal(signal.SIGTERM)
    for process in reversed(processes):
        process.stop()
    if started is not None:
        try:
            started.proc.wait(30)
        except subprocess.TimeoutExpired:
            started.kill()



def _point_transactions(client: Celery, store: Store, engage: str, timeout: float) -> bool:
    """Book three transactions through the broker; True when each ended as it should."""
    contacts = seeded_ids(0, 3)
    requests = [
        (contacts[0], "25", "Review bonus", "demo-bonus"),
        (contacts[0], "25", "Review bonus", "demo-bonus"),  # the same reference again
        (contacts[1], "-10.50", "Redeemed in store", "demo-redeem"),
        (contacts[2], "-99999999", "Far more than the balance", "demo-too-much"),
    ]
    console.print("booking point transactions through pointsync.add_points …")
    for contact, amount, description, reference in requests:
        client.send_task("pointsync.add_points", kwargs={
            "contact_id": contact, "amount": amount, "description": description,
            "reference": reference}).get(timeout=timeout)
    ledger = Ledger(store)
    references = ["demo-bonus", "demo-redeem", "demo-too-much"]
    deadline = time.monotonic() + 60
    rows = [ledger.get(ref) for ref in references]
    while any(r is None or not r.final for r in rows) and time.monotonic() < deadline:
        time.sleep(0.1)  # the Engage push follows the booking in a drain
        rows = [ledger.get(ref) for ref in references]
    console.print(points_table(rows, "point transactions (the ledger)",
                               ("reference", "state", "amount", "balance", "attempts")))
    for row in rows:
        if row is not None and row.reason:
            console.print(f"  {row.reference}: {row.reason}")
    check = httpx.post(f"{engage}/_sim/compare", json={}, timeout=60).json()
    states = [r.state if r else None for r in rows]
    ok = states == ["applied", "applied", "failed"] and check["mismatch_count"] == 0
    verdict = "[green]OK[/green]" if ok else "[red]UNEXPECTED[/red]"
    console.print(f"check: two applied once each (the repeat booked nothing), one refused; "
                  f"Engage equals Treazure — {verdict}")
    return ok
