"""Settle-time benchmark: transactions through a flaky Treazure, until every one is done.

    .venv/bin/python bench/points_faults.py                 # 440 at 50/s, 15 % / 10 % faults
    .venv/bin/python bench/points_faults.py --label after   # kept under that name in the JSON

Signed `loyalty.addPoints` webhooks go through the web process to a real Celery worker (and
beat, whose sweep is the last resort) while the Treazure simulator answers a share of the
booking requests badly: `--drop` of them are applied but the connection is dropped before
the answer, `--errors` of them get a 503 (nothing applied). Reported: the seconds from the
first send until Engage holds every contact's new balance, and the book checks (Engage
equals Treazure, exactly one booking per transaction). Prints a table and writes
bench/results/points_faults.json (one entry per label); nothing here asserts wall-clock time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil
from points import (  # bench/points.py: the same stack, deliveries and checks
    Delivery,
    Stack,
    await_arrivals,
    check_books,
    percentile,
    running_stack,
    send_steadily,
)
from run import RESULTS, cpu_calibration
from svix.webhooks import Webhook

from sims.guids import seeded_ids
from sims.harness import ensure_redis, start_celery

OUTPUT = RESULTS / "points_faults.json"
TIMEOUT = 900.0  # seconds after the first send before a transaction counts as missing


def fault_shares(drop: float, errors: float) -> dict[str, Any]:
    return {"treazure.transaction": {"drop_after_apply": drop, "status_503": errors}}


async def settle(stack: Stack, contacts: list[str], rate: float,
                 shares: dict[str, Any]) -> dict[str, Any]:
    """Send one delivery per contact at `rate`/s under `shares`; wait until all landed."""
    treazure, engage = stack.sims.treazure, stack.sims.engage
    began_us = time.time_ns() // 1000
    items = [Delivery(contact) for contact in contacts]
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx.AsyncClient(timeout=30, limits=limits, trust_env=False) as client:
        (await client.post(f"{treazure}/_sim/config", json={"fault_shares": shares})
         ).raise_for_status()
        (await client.post(f"{treazure}/_sim/stats/reset")).raise_for_status()
        achieved = await send_steadily(
            client, f"{stack.web.url}/webhooks/engage", Webhook(stack.secret), items, rate)
        await await_arrivals(client, engage, items, TIMEOUT)
        stats = (await client.get(f"{treazure}/_sim/stats")).json()["requests"]
        # The books are checked without faults (the checks read through the same sim).
        (await client.post(f"{treazure}/_sim/config", json={"fault_shares": {}})
         ).raise_for_status()
        checks = await check_books(client, stack.sims,
                                   Counter(i.contact for i in items if i.accepted), began_us)
    first = min(i.sent_at for i in items)
    landed = sorted(i.sent_at - first + i.landed_after for i in items
                    if i.landed_after is not None)
    accepted = sum(i.accepted for i in items)
    return {
        "sent": len(items), "achieved_per_second": round(achieved, 1),
        "accepted": accepted, "missing": accepted - len(landed),
        "settled_seconds": round(landed[-1], 1) if landed and len(landed) == accepted else None,
        "p50_landed_seconds": percentile(landed, 0.5),
        "p95_landed_seconds": percentile(landed, 0.95),
        "treazure_transaction_answers": {
            key.split(" ", 1)[1]: n for key, n in stats.items()
            if key.startswith("treazure.transaction ")},
        "checks": checks,
    }


def print_result(label: str, result: dict[str, Any]) -> None:
    r = result
    c = r["checks"]
    answers = ", ".join(f"{k} {n}" for k, n in sorted(r["treazure_transaction_answers"].items()))
    settled = "—" if r["settled_seconds"] is None else f"{r['settled_seconds']:.1f} s"
    rows = [
        ("transactions", f"{r['sent']}", f"at {r['rate']:g}/s (achieved "
         f"{r['achieved_per_second']}/s); worker concurrency {r['worker_concurrency']}"),
        ("faults", f"{r['drop']:.0%} / {r['errors']:.0%}", "dropped after apply / 503"),
        ("booking answers", "", answers),
        ("settled after", settled, "first send → last balance in Engage"),
        ("p50 / p95 landed", f"{r['p50_landed_seconds'] or 0:.1f} / "
         f"{r['p95_landed_seconds'] or 0:.1f} s", "after the first send"),
        ("missing", f"{r['missing']}", f"after {TIMEOUT:g} s"),
        ("Engage equals Treazure", "yes" if c["engage_mismatches"] == 0 else
         f"NO ({c['engage_mismatches']})", f"{c['compared']} compared"),
        ("one booking each", "yes" if c["history_mismatches"] == 0 else
         f"NO ({c['history_mismatches']} accounts)", ""),
        ("CPU calibration", f"{r['cpu_calibration_seconds']:.2f} s",
         "fixed workload; lower is a faster machine"),
    ]
    width = max(len(row[0]) for row in rows)
    when = f"{datetime.now(UTC):%Y-%m-%d %H:%M}Z"
    print(f"\npoints under faults [{label}] ({platform.node()}, {when})")
    for name, value, note in rows:
        print(f"  {name:<{width}}  {value:>12}  {note}")


def save(label: str, result: dict[str, Any]) -> None:
    RESULTS.mkdir(exist_ok=True)
    kept = json.loads(OUTPUT.read_text()) if OUTPUT.exists() else {}
    kept[label] = result
    OUTPUT.write_text(json.dumps(kept, indent=2, default=str, ensure_ascii=False) + "\n",
                      encoding="utf-8")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--transactions", type=int, default=440)
    parser.add_argument("--rate", type=float, default=50.0, help="deliveries/s")
    parser.add_argument("--drop", type=float, default=0.15,
                        help="share of bookings applied with the answer dropped")
    parser.add_argument("--errors", type=float, default=0.10,
                        help="share of bookings answered 503")
    parser.add_argument("--concurrency", type=int, default=2, help="Celery worker processes")
    parser.add_argument("--label", default="latest", help="name of this run in the JSON")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/12")
    args = parser.parse_args()
    if args.transactions < 1 or args.rate <= 0 or not 0 <= args.drop + args.errors <= 1:
        parser.error("transactions and rate must be positive; shares within 0..1")
    return args


def main() -> None:
    args = parse_args()
    work = Path(tempfile.mkdtemp(prefix="pointsync-bench-faults-"))
    calibration = cpu_calibration()
    with ensure_redis(args.redis_url, work / "redis") as redis_url, \
            running_stack(args.transactions, args.concurrency, redis_url, work) as stack:
        beat = start_celery("beat", {**stack.sims.env(), "REDIS_URL": redis_url,
                                     "LOG_LEVEL": "WARNING",
                                     "DATABASE_URL": f"sqlite:///{work / 'pointsync.db'}"},
                            work / "beat.log", ["--schedule", str(work / "beat-schedule")])
        try:
            result = asyncio.run(settle(stack, seeded_ids(0, args.transactions), args.rate,
                                        fault_shares(args.drop, args.errors)))
        finally:
            beat.stop()
    result.update({
        "rate": args.rate, "drop": args.drop, "errors": args.errors,
        "worker_concurrency": args.concurrency, "cpu_calibration_seconds": calibration,
        "logs": str(work), "measured_at": datetime.now(UTC).isoformat(),
        "machine": {"cpus": psutil.cpu_count(), "python": platform.python_version()},
    })
    print_result(args.label, result)
    save(args.label, result)
    print(f"\nwritten to {OUTPUT} [{args.label}] (logs in {work})")


if __name__ == "__main__":
    main()
