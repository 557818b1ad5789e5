"""Benchmarks against the simulators through real Celery workers.

    ./dev bench                      # all benchmarks
    ./dev bench --contacts 200000    # a smaller sync benchmark

Prints a table and writes bench/results/<name>.json. Figures are ratios against a bound
and against bare baselines measured in the same run (bench/bare.py: a plain httpx script
doing the same transfer, and the same read); nothing here asserts wall-clock time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psutil
import redis
from bare import BareResult, bare_read, bare_transfer  # bench/bare.py
from celery import Celery

from sims.harness import ensure_redis, start_celery, start_simulators, stop

RESULTS = Path(__file__).parent / "results"


class RssSampler(threading.Thread):
    """Samples the memory of a process tree (Celery main + pool children) every 100 ms:
    peaks of the sums of RSS, USS and PSS over the tree, and each process's own peaks."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.root = psutil.Process(pid)
        self.peak_total = 0
        self.peak_single = 0
        self.peak_pss = 0
        self.peak_uss = 0
        self.per_process: dict[int, dict[str, int]] = {}  # pid → peak rss/uss/pss
        self._halt = threading.Event()

    def sample(self) -> list[tuple[int, Any]]:
        procs = [self.root, *self.root.children(recursive=True)]
        return [(p.pid, p.memory_full_info()) for p in procs]

    def run(self) -> None:
        while not self._halt.wait(0.1):
            try:
                infos = self.sample()
            except psutil.Error:
                continue
            sizes = [info.rss for _, info in infos]
            self.peak_total = max(self.peak_total, sum(sizes))
            self.peak_single = max(self.peak_single, max(sizes))
            # PSS splits pages a forked child still shares with its parent between them,
            # so the sum is what the processes really occupy; the RSS sum counts them twice.
            self.peak_pss = max(self.peak_pss, sum(info.pss for _, info in infos))
            # USS: pages only that process holds (what it would free on exit).
            self.peak_uss = max(self.peak_uss, sum(info.uss for _, info in infos))
            for pid, info in infos:
                peaks = self.per_process.setdefault(pid, {"rss": 0, "uss": 0, "pss": 0})
                for name in peaks:
                    peaks[name] = max(peaks[name], getattr(info, name))

    def stop(self) -> None:
        self._halt.set()
        self.join()

    def roles(self) -> dict[str, dict[str, float]]:
        """Each process's peaks in MB, named main or child-<pid>."""
        return {("main" if pid == self.root.pid else f"child-{pid}"):
                {name: _mb(value) for name, value in peaks.items()}
                for pid, peaks in self.per_process.items()}


def _mb(size: int) -> float:
    return round(size / 2**20, 1)


def memory_now(pid: int) -> dict[str, dict[str, float]]:
    """rss/uss/pss in MB of a process and each of its children, now."""
    sampler = RssSampler(pid)
    return {("main" if p == pid else f"child-{p}"):
            {"rss": _mb(i.rss), "uss": _mb(i.uss), "pss": _mb(i.pss)}
            for p, i in sampler.sample()}


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) used so far by a process and its children: a figure the
    machine's load does not stretch the way it stretches the wall clock."""
    root = psutil.Process(pid)
    total = 0.0
    for proc in [root, *root.children(recursive=True)]:
        try:
            times = proc.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


def wall_calibration() -> dict[str, Any]:
    """The same workload timed on the wall clock, and the load average: on a machine shared
    with other work, wall ÷ CPU well above 1 says the runs below waited for a core."""
    began, cpu = time.perf_counter(), time.process_time()
    total = 0
    for i in range(5_000_000):
        total += i * i % 7
    return {"wall_seconds": round(time.perf_counter() - began, 3),
            "cpu_seconds": round(time.process_time() - cpu, 3),
            "load_average_1m": round(os.getloadavg()[0], 2)}


def cpu_calibration() -> float:
    """Seconds for a fixed pure-Python workload: this VM's speed varies by ±20 % over
    minutes, so each result carries the speed it was measured at."""
    began = time.process_time()
    total = 0
    for i in range(5_000_000):
        total += i * i % 7
    return round(time.process_time() - began, 3)


def _seed_plan(contacts: int) -> dict[str, Any]:
    """All `contacts` changed within the last hour, with fixed times, so a re-seed after a
    reset recreates exactly the same accounts, balances and times."""
    now = datetime.now(UTC).replace(microsecond=0)
    return {"contacts": contacts, "changed": contacts,
            "changed_from": (now - timedelta(hours=1)).isoformat(),
            "changed_to": now.isoformat(),
            "old_at": (now - timedelta(days=30)).isoformat()}


def _reseed(engage: str, plan: dict[str, Any]) -> None:
    """Empty books on both simulators (Engage back to 0 for everyone), then the same seed."""
    httpx.post(f"{engage}/_sim/reset", timeout=60).raise_for_status()
    httpx.post(f"{engage}/_sim/seed", json=plan, timeout=120).raise_for_status()


def sync_benchmark(contacts: int, rate_limit: float, redis_url: str,
                   concurrency: int = 2, push_concurrency: int = 4,
                   lean_worker: bool = False) -> dict[str, Any]:
    """Phases, in this order, so that each figure is compared with baselines measured just
    before and just after it (the machine's speed drifts over minutes; the ratios use the
    mean of the two, and both are reported), all on the same seeded books:
    1. bare transfer A (pushes every balance to Engage's sim; checked with compare);
    2. reset and re-seed the sims: Engage back to 0, Treazure identical (same ids,
       balances, times), so the worker's first sync pushes all of them again from the
       same job, and its compare step means what it did (Engage starts from 0 again);
    3. the worker's first sync (memory sampled to the end of 7), compare;
    4. bare transfer B (Engage already equal: the same posts, the same work for the sim);
    5. bare read A of the same job (the books are unchanged since 2);
    6. the worker's second sync: nothing changed;
    7. bare read B.
    The worker's store starts empty; the bare runs touch neither it nor Redis."""
    work = Path(tempfile.mkdtemp(prefix="pointsync-bench-"))
    calibration = cpu_calibration()
    contention_before = wall_calibration()
    redis.Redis.from_url(redis_url).flushdb()
    print(f"seeding {contacts:,} changed balances …", flush=True)
    sims = start_simulators()
    plan = _seed_plan(contacts)
    worker = None
    try:
        httpx.post(f"{sims.engage}/_sim/seed", json=plan, timeout=120).raise_for_status()
        env = {**sims.env(), "REDIS_URL": redis_url,
               "DATABASE_URL": f"sqlite:///{work / 'pointsync.db'}",
               "ENGAGE_RATE_LIMIT": str(rate_limit),
               "ENGAGE_PUSH_CONCURRENCY": str(push_concurrency)}
        worker = start_celery("worker", env, work / "worker.log",
                              ["--concurrency", str(concurrency), "-n", "bench@%h",
                               # the main workers' queue, as operators run them: the
                               # history refresh a sync queues goes to history workers
                               "-Q", "celery"], lean=lean_worker)
        idle_memory = memory_now(worker.proc.pid)

        print("bare transfer A …", flush=True)
        httpx.post(f"{sims.engage}/_sim/stats/reset")
        bare = bare_transfer(env, rate_limit, push_concurrency)
        bare_stats = httpx.get(f"{sims.engage}/_sim/stats").json()
        bare_check = httpx.post(f"{sims.engage}/_sim/compare", json={}, timeout=120).json()
        _reseed(sims.engage, plan)

        print("worker sync …", flush=True)
        sampler = RssSampler(worker.proc.pid)
        sampler.start()
        client = Celery("bench", broker=redis_url, backend=redis_url)
        httpx.post(f"{sims.engage}/_sim/stats/reset")
        began, cpu_began = time.perf_counter(), tree_cpu_seconds(worker.proc.pid)
        first = client.send_task("pointsync.sync_balances").get(timeout=3600)
        wall = time.perf_counter() - began
        first_cpu = tree_cpu_seconds(worker.proc.pid) - cpu_began
        stats = httpx.get(f"{sims.engage}/_sim/stats").json()
        check = httpx.post(f"{sims.engage}/_sim/compare", json={}, timeout=120).json()
        print("bare transfer B, bare read A …", flush=True)
        bare_after = bare_transfer(env, rate_limit, push_concurrency)
        read_before = bare_read(env)
        print("worker sync, nothing changed …", flush=True)
        began, cpu_began = time.perf_counter(), tree_cpu_seconds(worker.proc.pid)
        # The first run's own window, so the re-run reads the same job as the bare read
        # (a default window would start at the watermark less the overlap).
        second = client.send_task("pointsync.sync_balances", kwargs={
            "since": first["window_from"], "until": first["window_to"]}).get(timeout=3600)
        second_wall = time.perf_counter() - began
        second_cpu = tree_cpu_seconds(worker.proc.pid) - cpu_began
        sampler.stop()
        client.close()
        after_memory = memory_now(worker.proc.pid)
        print("bare read B …", flush=True)
        read = bare_read(env)
        contention_after = wall_calibration()
    finally:
        if worker:
            worker.stop()
        stop(sims.proc)
    requests_needed = -(-contacts // 1000)
    bound = requests_needed / rate_limit
    return {
        "contacts": contacts,
        "engage_rate_limit": rate_limit,
        "worker_concurrency": concurrency,
        "push_concurrency": push_concurrency,
        "bound_seconds": bound,
        "wall_seconds": round(wall, 2),
        "worker_cpu_seconds": round(first_cpu, 2),
        "run_seconds": first["duration_seconds"],
        "ratio_to_bound": round(wall / bound, 3),
        "bare_transfer": {**bare.as_json(), "engage_429": bare_stats["engage_429"],
                          "engage_peak_rps": bare_stats["engage_peak_rps"],
                          "check_mismatches": bare_check["mismatch_count"],
                          "check_checked": bare_check["checked"]},
        "bare_transfer_after": bare_after.as_json(),
        "ratio_to_bare_transfer": round(wall / _mean(bare, bare_after), 3),
        "bare_read_before": read_before.as_json(),
        "bare_read": read.as_json(),
        "items_per_second": round(first["pushed"] / wall),
        "peak_rss_mb_all_worker_processes": _mb(sampler.peak_total),
        "peak_rss_mb_largest_process": _mb(sampler.peak_single),
        "peak_pss_mb_all_worker_processes": _mb(sampler.peak_pss),
        "peak_uss_mb_all_worker_processes": _mb(sampler.peak_uss),
        "peak_memory_mb_per_process": sampler.roles(),
        "idle_memory_mb_per_process": idle_memory,
        "memory_mb_per_process_after_both_syncs": after_memory,
        "cpu_calibration_seconds": calibration,
        "contention": {"before": contention_before, "after": contention_after},
        "engage_requests": stats["engage_push_requests"],
        "engage_429": stats["engage_429"],
        "engage_peak_rps": stats["engage_peak_rps"],
        "first_run": first,
        "check_mismatches": check["mismatch_count"],
        "check_checked": check["checked"],
        "second_run": second,
        "second_run_pushed": second["pushed"],
        "second_run_wall_seconds": round(second_wall, 2),
        "second_run_worker_cpu_seconds": round(second_cpu, 2),
        "second_run_ratio_to_bare_read": round(second_wall / _mean(read_before, read), 3),
    }


def _mean(first: BareResult, second: BareResult) -> float:
    return (first.wall_seconds + second.wall_seconds) / 2


def print_sync(result: dict[str, Any]) -> None:
    bare, read = result["bare_transfer"], result["bare_read"]
    bare_b, read_a = result["bare_transfer_after"], result["bare_read_before"]
    rows = [
        ("balances", f"{result['contacts']:,}",
         f"{result.get('worker_command', 'celery -A worker worker')} "
         f"--concurrency {result['worker_concurrency']}, "
         f"{result['push_concurrency']} pushes in flight (ENGAGE_PUSH_CONCURRENCY)"),
        ("wall time, first sync", f"{result['wall_seconds']:.2f} s",
         f"bound {result['bound_seconds']:.1f} s ({result['engage_requests']} requests"
         f" at {result['engage_rate_limit']:g}/s)"),
        ("bare transfer A / B", f"{bare['wall_seconds']:.2f} / {bare_b['wall_seconds']:.2f} s",
         f"{bare['requests']} requests, {bare['retried_429']} 429s, "
         f"CPU {bare['cpu_seconds']:.1f} s, Engage equals Treazure: "
         + ("yes" if bare["check_mismatches"] == 0 else f"NO ({bare['check_mismatches']})")),
        ("worker CPU, first sync", f"{result['worker_cpu_seconds']:.2f} s",
         "all worker processes; the bare transfer's CPU is in its row"),
        ("sync ÷ bare transfer", f"{result['ratio_to_bare_transfer']:.3f}",
         "target ≤ 1.10 (mean of A and B)"),
        ("sync ÷ bound", f"{result['ratio_to_bound']:.3f}", "the old figure"),
        ("items/s", f"{result['items_per_second']:,}", ""),
        ("peak RSS, worker (all processes)", f"{result['peak_rss_mb_all_worker_processes']} MB",
         "target ≤ 250 MB"),
        ("peak RSS, largest process", f"{result['peak_rss_mb_largest_process']} MB", ""),
        ("peak PSS, worker (all processes)",
         f"{result['peak_pss_mb_all_worker_processes']} MB", "shared pages counted once"),
        ("peak USS, worker (all processes)",
         f"{result['peak_uss_mb_all_worker_processes']} MB", "pages no other process shares"),
        ("CPU calibration", f"{result['cpu_calibration_seconds']:.2f} s",
         "fixed workload; lower is a faster machine"),
        ("same workload, wall ÷ CPU",
         " / ".join(f"{c['wall_seconds'] / max(c['cpu_seconds'], 1e-3):.2f}"
                    for c in result["contention"].values()),
         "before / after; load average "
         + " / ".join(f"{c['load_average_1m']:g}" for c in result["contention"].values())
         + " (2 cores)"),
        ("Engage 429s / peak req/s", f"{result['engage_429']} / {result['engage_peak_rps']}", ""),
        ("Engage equals Treazure", "yes" if result["check_mismatches"] == 0 else
         f"NO ({result['check_mismatches']} differ)", f"{result['check_checked']:,} checked"),
        ("second run pushed", str(result["second_run_pushed"]),
         f"target 0 ({result['second_run_wall_seconds']:.2f} s, "
         f"{result['second_run']['fetched']:,} read, the first run's window)"),
        ("bare read A / B", f"{read_a['wall_seconds']:.2f} / {read['wall_seconds']:.2f} s",
         f"{read['pages']} pages, {read['items']:,} items, CPU {read['cpu_seconds']:.1f} s"),
        ("worker CPU, second sync", f"{result['second_run_worker_cpu_seconds']:.2f} s", ""),
        ("second run ÷ bare read", f"{result['second_run_ratio_to_bare_read']:.3f}",
         "target ≤ 1.5 (mean of A and B)"),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"\nsync benchmark ({platform.node()}, {datetime.now(UTC):%Y-%m-%d %H:%M}Z)")
    for name, value, note in rows:
        print(f"  {name:<{width}}  {value:>14}  {note}")
    print("  peak memory per process (MB):")
    for role, peaks in result["peak_memory_mb_per_process"].items():
        idle = result["idle_memory_mb_per_process"].get(role, {})
        print(f"    {role:<14} rss {peaks['rss']:>6}  uss {peaks['uss']:>6}  pss {peaks['pss']:>6}"
              f"   (idle before: rss {idle.get('rss', '-')}, uss {idle.get('uss', '-')})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--rate-limit", type=float, default=50)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/13")
    parser.add_argument("--concurrency", type=int, default=2, help="worker pool size")
    parser.add_argument("--push-concurrency", type=int, default=4,
                        help="ENGAGE_PUSH_CONCURRENCY, and the bare transfer's pushers")
    parser.add_argument("--lean-worker", action="store_true",
                        help="start the worker with python -m worker.faces.celery.worker_command "
                             "instead of celery -A worker worker (results: sync-lean.json)")
    args = parser.parse_args()
    RESULTS.mkdir(exist_ok=True)
    with ensure_redis(args.redis_url, Path(tempfile.mkdtemp())) as redis_url:
        result = sync_benchmark(args.contacts, args.rate_limit, redis_url,
                                args.concurrency, args.push_concurrency, args.lean_worker)
    result["measured_at"] = datetime.now(UTC).isoformat()
    result["machine"] = {"cpus": psutil.cpu_count(), "python": platform.python_version()}
    result["worker_command"] = "python -m worker.faces.celery.worker_command" \
        if args.lean_worker else "celery -A worker worker"
    print_sync(result)
    out = RESULTS / ("sync-lean.json" if args.lean_worker else "sync.json")
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
