"""History benchmark: the points-history refresh after a sync, through a real Celery worker
against the simulators, and what it does to a sync that runs meanwhile.

    ./dev bench history                      # 10,000 changed contacts per set
    ./dev bench history --contacts 2000      # a quick look

Phase 1 seeds N changed contacts and runs a sync, which fans the history refresh out in
chunk tasks; contacts/s runs from the refresh task's start (Celery's task events) to the
last contact's history stored (the store's own fetched_at, polled until all N are there).
Phase 2 syncs another N-changed set with the worker idle, then a third set while a refresh
of N contacts is in progress, and reports the sync's time both ways: the difference is the
delay the refresh causes. Worker CPU per contact is the CPU time (user + system) the worker
that runs the history tasks (main process and pool children) spent from the refresh's
start to the worker idle again, over the contacts refreshed. Prints a table and writes
bench/results/history.json; nothing here asserts wall-clock time.

    ./dev bench history --refresh-only       # phase 1 alone: the refresh rate and CPU
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psutil
import redis
from celery import Celery
from run import RESULTS, cpu_calibration  # bench/run.py: same results folder, same yardstick
from sqlalchemy import select

from sims.guids import seeded_ids
from sims.harness import (
    CeleryProcess,
    Simulators,
    ensure_redis,
    start_celery,
    start_simulators,
    stop,
)
from worker.base.settings import CoreSettings
from worker.faces.celery.app import celery_config
from worker.faces.runtime import prepare_store
from worker.store.database import Store
from worker.store.history import history_contacts

SYNC = "pointsync.sync_balances"
REFRESH = "pointsync.refresh_history"
BATCH = "pointsync.fetch_history_batch"
HISTORY_PRIORITY = 9  # tasks.HISTORY_PRIORITY


class TaskEvents(threading.Thread):
    """Celery's task events (what Flower shows), captured in a thread: when each task was
    received, started and finished, by the worker's clock (this machine's), and which task
    sent it."""

    def __init__(self, app: Celery) -> None:
        super().__init__(daemon=True)
        self.app = app
        self.tasks: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()
        self.listening = threading.Event()
        self._receiver: Any = None

    def run(self) -> None:
        with self.app.connection_for_read() as conn:
            self._receiver = self.app.events.Receiver(conn, handlers={"*": self._on_event})
            self._receiver.capture(limit=None, timeout=None, wakeup=True)

    def _on_event(self, event: dict[str, Any]) -> None:
        self.listening.set()  # the worker's heartbeats arrive every 2 s
        kind = str(event.get("type", ""))
        if not kind.startswith("task-") or "uuid" not in event:
            return
        with self.lock:
            task = self.tasks.setdefault(event["uuid"], {})
            if kind == "task-received":
                task.update(name=event.get("name"), parent=event.get("parent_id"),
                            received=event["timestamp"])
            elif kind in ("task-started", "task-succeeded", "task-failed"):
                task[kind.removeprefix("task-")] = event["timestamp"]

    def task(self, task_id: str) -> dict[str, Any]:
        with self.lock:
            return dict(self.tasks.get(task_id, {}))

    def children(self, parent_id: str, name: str) -> dict[str, dict[str, Any]]:
        with self.lock:
            return {tid: dict(t) for tid, t in self.tasks.items()
                    if t.get("parent") == parent_id and t.get("name") == name}

    def stop(self) -> None:
        if self._receiver is not None:
            self._receiver.should_stop = True
        self.join(5)


def wait_until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not after {timeout:g} s")
        time.sleep(0.05)
    return value


@dataclass
class Bench:
    sims: Simulators
    worker: CeleryProcess
    client: Celery
    events: TaskEvents
    store: Store
    contacts: int
    processes: int  # worker pool size
    history_worker: CeleryProcess  # the worker that takes the history queue

    def history_cpu(self) -> float:
        """CPU seconds (user + system) of the history worker's process tree so far: the
        main process, its live pool children, and any children it has reaped."""
        return tree_cpu_seconds(self.history_worker.proc.pid)

    def sim_stats(self) -> dict[str, Any]:
        return httpx.get(f"{self.sims.engage}/_sim/stats").json()

    def history_requests(self) -> int:
        return int(self.sim_stats()["arrived"].get("treazure.history", 0))

    def seed(self, start_index: int, changed_from: datetime) -> list[str]:
        """N more accounts, all changed within ten minutes from `changed_from`."""
        body = {"contacts": self.contacts, "start_index": start_index,
                "changed_from": iso(changed_from),
                "changed_to": iso(changed_from + timedelta(minutes=10))}
        httpx.post(f"{self.sims.engage}/_sim/seed", json=body, timeout=120).raise_for_status()
        return seeded_ids(start_index, self.contacts)

    def fetched_times(self, ids: list[str]) -> list[float]:
        """When each stored contact of a seeded set was last fetched (epoch seconds)."""
        c = history_contacts.c
        with self.store.engine.connect() as conn:  # seeded ids sort in index order
            rows = conn.execute(select(c.fetched_at).where(
                c.contact_id >= ids[0], c.contact_id <= ids[-1])).all()
        return [as_utc(row[0]).timestamp() for row in rows]

    def wait_stored(self, ids: list[str], after: float, timeout: float = 1800) -> float:
        """Polls the store until every contact of `ids` was fetched after `after`;
        returns when the last one was stored."""
        def done() -> float | None:
            times = [t for t in self.fetched_times(ids) if t >= after]
            return max(times) if len(times) == len(ids) else None

        return float(wait_until(done, timeout, f"{len(ids):,} histories stored"))

    def child_task(self, parent_id: str, name: str, timeout: float = 60) -> str:
        """The id of the `name` task that task `parent_id` sent."""
        return str(wait_until(lambda: next(iter(self.events.children(parent_id, name)), None),
                              timeout, f"{name} sent by {parent_id}"))

    def wait_chunks_running(self, refresh_id: str, count: int, timeout: float = 120) -> None:
        def running() -> bool:
            chunks = self.events.children(refresh_id, BATCH).values()
            return sum("started" in t for t in chunks) >= count

        wait_until(running, timeout, f"{count} chunk tasks running")

    def wait_idle(self, timeout: float = 600) -> None:
        """No task received and unfinished (the worker has nothing left to do)."""
        def idle() -> bool:
            with self.events.lock:
                return all("succeeded" in t or "failed" in t for t in self.events.tasks.values())

        wait_until(idle, timeout, "the worker idle")


def tree_cpu_seconds(pid: int) -> float:
    root = psutil.Process(pid)
    times = root.cpu_times()
    total = times.user + times.system + times.children_user + times.children_system
    for child in root.children(recursive=True):
        with contextlib.suppress(psutil.Error):  # a child replaced meanwhile
            child_times = child.cpu_times()
            total += child_times.user + child_times.system
    return float(total)


def cpu_figures(cpu_seconds: float, contacts: int) -> dict[str, float]:
    return {"worker_cpu_seconds": round(cpu_seconds, 3),
            "worker_cpu_ms_per_contact": round(cpu_seconds * 1000 / contacts, 3)}


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def as_utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def refresh_figures(bench: Bench, refresh_id: str, ids: list[str], after: float
                    ) -> dict[str, Any]:
    """Contacts/s of one refresh: its start (task event) to its last contact stored (DB)."""
    last_stored = bench.wait_stored(ids, after)
    started = wait_until(lambda: bench.events.task(refresh_id).get("started"), 60,
                         "the refresh's start event")
    chunks = wait_until(lambda: (c := bench.events.children(refresh_id, BATCH))
                        and all("succeeded" in t for t in c.values()) and c, 120,
                        "the chunk tasks' events")
    seconds = last_stored - started
    return {
        "contacts": len(ids), "chunks": len(chunks), "seconds": round(seconds, 3),
        "contacts_per_second": round(len(ids) / seconds, 1),
        "refresh_started_at": started, "last_stored_at": last_stored,
        "last_chunk_done_at": max(t["succeeded"] for t in chunks.values()),
    }


def timed_sync(bench: Bench, ids: list[str], window_from: datetime) -> dict[str, Any]:
    """One sync over the set's window (an explicit window: the watermark stays), timed
    from sending it to its result; its queue wait and run time from the task events."""
    kwargs = {"since": iso(window_from), "until": iso(window_from + timedelta(minutes=10))}
    sent = time.time()
    result = bench.client.send_task(SYNC, kwargs=kwargs)
    summary = result.get(timeout=1800)
    answered = time.time()
    event = wait_until(lambda: (t := bench.events.task(result.id)).get("succeeded") and t, 60,
                       "the sync's events")
    assert summary["status"] == "succeeded", summary
    assert summary["unique_contacts"] == len(ids), summary
    return {
        "task_id": result.id, "run_id": summary["run_id"], "pushed": summary["pushed"],
        "sent_at": sent, "started_at": event["started"], "done_at": event["succeeded"],
        "wall_seconds": round(answered - sent, 3),
        "queue_wait_seconds": round(event["started"] - sent, 3),
        "run_seconds": summary["duration_seconds"],
    }


def phase_one(bench: Bench) -> dict[str, Any]:
    """The first sync of N changed contacts and the history refresh it fans out."""
    ids = seeded_ids(0, bench.contacts)
    print(f"phase 1: sync of {bench.contacts:,} changed contacts, then their history …",
          flush=True)
    requests_before = bench.history_requests()
    sent = time.time()
    # Split layout: the history worker is idle until the refresh starts, so its CPU is
    # read before the sync; a shared worker's is read once the sync has answered.
    cpu_before = bench.history_cpu() if bench.history_worker is not bench.worker else None
    sync = bench.client.send_task(SYNC)
    summary = sync.get(timeout=1800)
    if cpu_before is None:
        cpu_before = bench.history_cpu()
    assert summary["status"] == "succeeded" and summary["unique_contacts"] == bench.contacts, \
        summary
    refresh_id = bench.child_task(sync.id, REFRESH)
    figures = refresh_figures(bench, refresh_id, ids, sent)
    sync_done = bench.events.task(sync.id).get("succeeded", 0.0)
    bench.wait_idle()
    figures.update(cpu_figures(bench.history_cpu() - cpu_before, len(ids)))
    return {
        **figures, "sync_run_id": summary["run_id"], "sync_run_seconds":
            summary["duration_seconds"], "refresh_task_id": refresh_id,
        "refresh_started_after_sync_seconds": round(figures["refresh_started_at"] - sync_done, 3),
        "history_requests": bench.history_requests() - requests_before,
    }


def phase_two(bench: Bench, first_run_id: int, rounds: int) -> dict[str, Any]:
    """A sync of a new N-changed set alone, then one while a refresh of N runs."""
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=24)
    alone: list[dict[str, Any]] = []
    during: list[dict[str, Any]] = []
    refreshes: list[dict[str, Any]] = []
    a_ids = seeded_ids(0, bench.contacts)
    engage_before = bench.sim_stats()
    for k in range(rounds):
        # Windows of their own, far from the first sync's and from each other.
        slot_alone, slot_during = base + timedelta(hours=2 * k), base + timedelta(hours=2 * k + 1)
        alone_ids = bench.seed(bench.contacts * (1 + 2 * k), slot_alone)
        during_ids = bench.seed(bench.contacts * (2 + 2 * k), slot_during)

        print(f"phase 2, round {k + 1}: sync of {bench.contacts:,} alone …", flush=True)
        bench.wait_idle()
        split = bench.history_worker is not bench.worker
        cpu_before = bench.history_cpu() if split else 0.0
        solo = timed_sync(bench, alone_ids, slot_alone)
        if not split:
            cpu_before = bench.history_cpu()
        alone.append(solo)
        # Its own refresh follows; let it finish so the worker is idle again.
        refresh_id = bench.child_task(solo["task_id"], REFRESH)
        refreshed = refresh_figures(bench, refresh_id, alone_ids, solo["sent_at"])
        bench.wait_idle()
        refreshed.update(cpu_figures(bench.history_cpu() - cpu_before, len(alone_ids)))
        refreshes.append(refreshed)

        print(f"phase 2, round {k + 1}: sync of {bench.contacts:,} during a refresh of "
              f"{bench.contacts:,} …", flush=True)
        refresh_sent = time.time()
        refresh = bench.client.send_task(REFRESH, kwargs={"run_id": first_run_id},
                                         priority=HISTORY_PRIORITY)
        # Every worker process busy with a chunk, the other chunks queued: now the sync.
        bench.wait_chunks_running(refresh.id, bench.processes)
        busy = timed_sync(bench, during_ids, slot_during)
        figures = refresh_figures(bench, refresh.id, a_ids, refresh_sent)
        chunks = bench.events.children(refresh.id, BATCH)
        busy["refresh_chunks_done_before_sync_done"] = sum(
            t["succeeded"] < busy["done_at"] for t in chunks.values())
        busy["refresh_chunks"] = len(chunks)
        busy["refresh_still_running_at_sync_end"] = \
            figures["last_chunk_done_at"] > busy["done_at"]
        busy["concurrent_refresh"] = figures
        # The sync's own refresh was queued behind the running one: let it finish too.
        own = bench.child_task(busy["task_id"], REFRESH)
        busy["own_refresh"] = refresh_figures(bench, own, during_ids, busy["sent_at"])
        during.append(busy)
        bench.wait_idle()
    engage_after = bench.sim_stats()
    return {"alone": alone, "during_refresh": during, "refresh_of_new_contacts": refreshes,
            "delay": delay(alone, during),
            "engage_429": engage_after["engage_429"] - engage_before["engage_429"],
            "engage_peak_rps": engage_after["engage_peak_rps"]}


def delay(alone: list[dict[str, Any]], during: list[dict[str, Any]]) -> dict[str, float]:
    def median(rows: list[dict[str, Any]], key: str) -> float:
        return float(statistics.median(r[key] for r in rows))

    out: dict[str, float] = {}
    for key in ("wall_seconds", "queue_wait_seconds", "run_seconds"):
        out[f"alone_{key}"] = round(median(alone, key), 3)
        out[f"during_{key}"] = round(median(during, key), 3)
        out[f"delay_{key}"] = round(out[f"during_{key}"] - out[f"alone_{key}"], 3)
    out["ratio_wall"] = round(out["during_wall_seconds"] / out["alone_wall_seconds"], 3)
    return out


def history_benchmark(args: argparse.Namespace, redis_url: str, work: Path) -> dict[str, Any]:
    calibration = cpu_calibration()
    redis.Redis.from_url(redis_url).flushdb()
    print(f"seeding {args.contacts:,} changed contacts …", flush=True)
    sims = start_simulators(seed_contacts=args.contacts)
    worker = history_worker = None
    client = Celery("bench-history", broker=redis_url, backend=redis_url)
    # The worker's broker options: a priority sent with kombu's defaults lands in a Redis
    # key the worker never reads.
    client.conf.broker_transport_options = \
        celery_config(CoreSettings(REDIS_URL=redis_url))["broker_transport_options"]
    events = TaskEvents(client)
    database_url = args.database_url or f"sqlite:///{work / 'pointsync.db'}"
    try:
        env = {**sims.env(), "REDIS_URL": redis_url, "DATABASE_URL": database_url,
               "LOG_LEVEL": "WARNING", "ENGAGE_RATE_LIMIT": str(args.rate_limit),
               "HISTORY_CHUNK_SIZE": str(args.chunk_size),
               "HISTORY_FETCH_CONCURRENCY": str(args.fetch_concurrency)}
        # The production layout (Procfile): main workers take `celery`, history workers
        # `pointsync.history`; --shared runs one worker on both queues instead.
        queues = [] if args.shared else ["-Q", "celery"]
        worker = start_celery("worker", env, work / "worker.log",
                              ["--concurrency", str(args.concurrency), "-n", "bench-history@%h",
                               *queues])
        if not args.shared:
            history_worker = start_celery(
                "worker", env, work / "history-worker.log",
                ["--concurrency", str(args.concurrency), "-n", "bench-history-h@%h",
                 "-Q", "pointsync.history"])
        events.start()
        wait_until(events.listening.is_set, 30, "the worker's events")
        bench = Bench(sims, worker, client, events, prepare_store(database_url), args.contacts,
                      args.concurrency, history_worker or worker)
        first = phase_one(bench)
        second = {} if args.refresh_only else phase_two(bench, first["sync_run_id"], args.rounds)
        stats = bench.sim_stats()
    finally:
        events.stop()
        client.close()
        if worker:
            worker.stop()
        if history_worker:
            history_worker.stop()
        stop(sims.proc)
    return {
        "contacts": args.contacts, "worker_concurrency": args.concurrency,
        "layout": "one worker on both queues" if args.shared
        else "main worker -Q celery + history worker -Q pointsync.history",
        "history_chunk_size": args.chunk_size,
        "history_fetch_concurrency": args.fetch_concurrency,
        "engage_rate_limit": args.rate_limit,
        "rounds": 0 if args.refresh_only else args.rounds,
        "database": database_url.split(":", 1)[0],
        "refresh_after_sync": first, **second,
        "treazure_history_requests": stats["arrived"].get("treazure.history", 0),
        "cpu_calibration_seconds": calibration, "logs": str(work),
    }


def print_history(result: dict[str, Any]) -> None:
    first = result["refresh_after_sync"]
    rows = [
        ("changed contacts per set", f"{result['contacts']:,}",
         f"{result['database']}, {result['layout']}, "
         f"{result['worker_concurrency']} processes each, chunks of "
         f"{result['history_chunk_size']}, {result['history_fetch_concurrency']} requests "
         "in flight per chunk"),
        ("refresh after the first sync", f"{first['contacts_per_second']:,.0f} contacts/s",
         f"{first['seconds']:.2f} s for {first['contacts']:,} in {first['chunks']} chunks, "
         f"{first['history_requests']:,} History requests"),
        ("worker CPU per contact", f"{first['worker_cpu_ms_per_contact']:.2f} ms",
         f"{first['worker_cpu_seconds']:.1f} s of the history worker's processes for "
         f"{first['contacts']:,} contacts (refresh start to idle); target ≤ 2 ms"),
    ]
    if result["rounds"]:
        rows += phase_two_rows(result)
    rows += [
        ("Engage 429s / peak req/s", f"{result['engage_429']} / {result['engage_peak_rps']}",
         f"shared limit {result['engage_rate_limit']:g}/s") if result["rounds"] else
        ("Engage rate limit", f"{result['engage_rate_limit']:g}/s", "phase 2 not run"),
        ("CPU calibration", f"{result['cpu_calibration_seconds']:.2f} s",
         "fixed workload; lower is a faster machine"),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"\nhistory benchmark ({platform.node()}, {datetime.now(UTC):%Y-%m-%d %H:%M}Z)")
    for name, value, note in rows:
        print(f"  {name:<{width}}  {value:>20}  {note}")


def phase_two_rows(result: dict[str, Any]) -> list[tuple[str, str, str]]:
    d, new, during = result["delay"], result["refresh_of_new_contacts"], result["during_refresh"]
    overlapped = all(r["refresh_still_running_at_sync_end"] for r in during)
    return [
        ("refresh of a new set (median)",
         f"{statistics.median(r['contacts_per_second'] for r in new):,.0f} contacts/s",
         f"{len(new)} run(s): what each lone phase-2 sync fanned out"),
        ("its worker CPU per contact (median)",
         f"{statistics.median(r['worker_cpu_ms_per_contact'] for r in new):.2f} ms",
         "the same measure, for each of those refreshes"),
        ("sync alone", f"{d['alone_wall_seconds']:.2f} s",
         f"queue wait {d['alone_queue_wait_seconds']:.3f} s, run {d['alone_run_seconds']:.2f} s"),
        ("sync during a refresh", f"{d['during_wall_seconds']:.2f} s",
         f"queue wait {d['during_queue_wait_seconds']:.3f} s, run "
         f"{d['during_run_seconds']:.2f} s"),
        ("delay of the sync", f"{d['delay_wall_seconds']:+.2f} s",
         f"ratio {d['ratio_wall']:.3f}; queue {d['delay_queue_wait_seconds']:+.3f} s, run "
         f"{d['delay_run_seconds']:+.2f} s; target 0"),
        ("refresh still running at sync end", "yes" if overlapped else "NO",
         ", ".join(f"{r['refresh_chunks_done_before_sync_done']}/{r['refresh_chunks']} chunks "
                   "done before" for r in during)),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contacts", type=int, default=10_000, help="changed contacts per set")
    parser.add_argument("--concurrency", type=int, default=2,
                        help="processes per Celery worker")
    parser.add_argument("--shared", action="store_true",
                        help="one worker on both queues (default: the Procfile's split)")
    parser.add_argument("--chunk-size", type=int, default=500, help="HISTORY_CHUNK_SIZE")
    parser.add_argument("--fetch-concurrency", type=int, default=8,
                        help="HISTORY_FETCH_CONCURRENCY")
    parser.add_argument("--rate-limit", type=float, default=50, help="ENGAGE_RATE_LIMIT")
    parser.add_argument("--rounds", type=int, default=2,
                        help="alone/during sync pairs in phase 2 (medians are reported)")
    parser.add_argument("--refresh-only", action="store_true",
                        help="phase 1 only: the refresh after a sync, its rate and CPU")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/8")
    parser.add_argument("--database-url", default=None,
                        help="an empty database (default: a new SQLite file)")
    args = parser.parse_args()
    if args.contacts < 1 or args.rounds < 1 or args.concurrency < 1:
        parser.error("contacts, rounds and concurrency must be positive")
    RESULTS.mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="pointsync-bench-history-"))
    with ensure_redis(args.redis_url, work / "redis") as redis_url:
        result = history_benchmark(args, redis_url, work)
    result["measured_at"] = datetime.now(UTC).isoformat()
    result["machine"] = {"cpus": psutil.cpu_count(), "python": platform.python_version()}
    print_history(result)
    text = json.dumps(result, indent=2, default=str, ensure_ascii=False)
    (RESULTS / "history.json").write_text(text + "\n", encoding="utf-8")
    print(f"\nwritten to {RESULTS / 'history.json'} (logs in {work})")


if __name__ == "__main__":
    main()
