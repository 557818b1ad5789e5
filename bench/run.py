"""Benchmarks against the simulators through real Celery workers.

    ./dev bench                      # all benchmarks
    ./dev bench --contacts 200000    # a smaller sync benchmark

Prints a table and writes bench/results/<name>.json. Figures are ratios against a bound
measured in the same run; nothing here asserts wall-clock time.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil
import redis
from celery import Celery

from sims.harness import ensure_redis, start_celery, start_simulators, stop

RESULTS = Path(__file__).parent / "results"


class RssSampler(threading.Thread):
    """Samples the RSS of a process tree (Celery main + pool children) every 100 ms."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.root = psutil.Process(pid)
        self.peak_total = 0
        self.peak_single = 0
        self.peak_pss = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(0.1):
            try:
                procs = [self.root, *self.root.children(recursive=True)]
                infos = [p.memory_full_info() for p in procs]
            except psutil.Error:
                continue
            sizes = [info.rss for info in infos]
            self.peak_total = max(self.peak_total, sum(sizes))
            self.peak_single = max(self.peak_single, max(sizes))
            # PSS splits pages a forked child still shares with its parent between them,
            # so the sum is what the processes really occupy; the RSS sum counts them twice.
            self.peak_pss = max(self.peak_pss, sum(info.pss for info in infos))

    def stop(self) -> None:
        self._halt.set()
        self.join()


def cpu_calibration() -> float:
    """Seconds for a fixed pure-Python workload: this VM's speed varies by ±20 % over
    minutes, so each result carries the speed it was measured at."""
    began = time.process_time()
    total = 0
    for i in range(5_000_000):
        total += i * i % 7
    return round(time.process_time() - began, 3)


def sync_benchmark(contacts: int, rate_limit: float, redis_url: str) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="pointsync-bench-"))
    calibration = cpu_calibration()
    redis.Redis.from_url(redis_url).flushdb()
    print(f"seeding {contacts:,} changed balances …", flush=True)
    sims = start_simulators(seed_contacts=contacts)
    worker = None
    try:
        env = {**sims.env(), "REDIS_URL": redis_url,
               "DATABASE_URL": f"sqlite:///{work / 'pointsync.db'}",
               "ENGAGE_RATE_LIMIT": str(rate_limit)}
        worker = start_celery("worker", env, work / "worker.log",
                              ["--concurrency", "1", "-n", "bench@%h"])
        sampler = RssSampler(worker.proc.pid)
        sampler.start()
        client = Celery("bench", broker=redis_url, backend=redis_url)
        httpx.post(f"{sims.engage}/_sim/stats/reset")
        began = time.perf_counter()
        first = client.send_task("pointsync.sync_balances").get(timeout=3600)
        wall = time.perf_counter() - began
        stats = httpx.get(f"{sims.engage}/_sim/stats").json()
        check = httpx.post(f"{sims.engage}/_sim/compare", json={}, timeout=120).json()
        began = time.perf_counter()
        second = client.send_task("pointsync.sync_balances").get(timeout=3600)
        second_wall = time.perf_counter() - began
        sampler.stop()
        client.close()
    finally:
        if worker:
            worker.stop()
        stop(sims.proc)
    requests_needed = -(-contacts // 1000)
    bound = requests_needed / rate_limit
    return {
        "contacts": contacts,
        "engage_rate_limit": rate_limit,
        "bound_seconds": bound,
        "wall_seconds": round(wall, 2),
        "run_seconds": first["duration_seconds"],
        "ratio_to_bound": round(wall / bound, 3),
        "items_per_second": round(first["pushed"] / wall),
        "peak_rss_mb_all_worker_processes": round(sampler.peak_total / 2**20, 1),
        "peak_rss_mb_largest_process": round(sampler.peak_single / 2**20, 1),
        "peak_pss_mb_all_worker_processes": round(sampler.peak_pss / 2**20, 1),
        "cpu_calibration_seconds": calibration,
        "engage_requests": stats["engage_push_requests"],
        "engage_429": stats["engage_429"],
        "engage_peak_rps": stats["engage_peak_rps"],
        "first_run": first,
        "check_mismatches": check["mismatch_count"],
        "second_run_pushed": second["pushed"],
        "second_run_wall_seconds": round(second_wall, 2),
    }


def print_sync(result: dict[str, Any]) -> None:
    rows = [
        ("balances", f"{result['contacts']:,}", ""),
        ("wall time", f"{result['wall_seconds']:.2f} s",
         f"bound {result['bound_seconds']:.1f} s ({result['engage_requests']} requests"
         f" at {result['engage_rate_limit']:g}/s)"),
        ("ratio to bound", f"{result['ratio_to_bound']:.3f}", "target ≤ 1.25"),
        ("items/s", f"{result['items_per_second']:,}", ""),
        ("peak RSS, worker (all processes)", f"{result['peak_rss_mb_all_worker_processes']} MB",
         "target < 250 MB"),
        ("peak RSS, largest process", f"{result['peak_rss_mb_largest_process']} MB", ""),
        ("peak PSS, worker (all processes)",
         f"{result['peak_pss_mb_all_worker_processes']} MB", "shared pages counted once"),
        ("CPU calibration", f"{result['cpu_calibration_seconds']:.2f} s",
         "fixed workload; lower is a faster machine"),
        ("Engage 429s / peak req/s", f"{result['engage_429']} / {result['engage_peak_rps']}", ""),
        ("Engage equals Treazure", "yes" if result["check_mismatches"] == 0 else
         f"NO ({result['check_mismatches']} differ)", ""),
        ("second run pushed", str(result["second_run_pushed"]),
         f"target 0 ({result['second_run_wall_seconds']:.2f} s)"),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"\nsync benchmark ({platform.node()}, {datetime.now(UTC):%Y-%m-%d %H:%M}Z)")
    for name, value, note in rows:
        print(f"  {name:<{width}}  {value:>14}  {note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--rate-limit", type=float, default=50)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/13")
    args = parser.parse_args()
    RESULTS.mkdir(exist_ok=True)
    with ensure_redis(args.redis_url, Path(tempfile.mkdtemp())) as redis_url:
        result = sync_benchmark(args.contacts, args.rate_limit, redis_url)
    result["measured_at"] = datetime.now(UTC).isoformat()
    result["machine"] = {"cpus": psutil.cpu_count(), "python": platform.python_version()}
    print_sync(result)
    (RESULTS / "sync.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"\nwritten to {RESULTS / 'sync.json'}")


if __name__ == "__main__":
    main()
