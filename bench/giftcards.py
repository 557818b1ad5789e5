"""Gift-card benchmark: a burst of cards against Toggle's credit budget, then points turned
into cards while Toggle's createOrder fails now and then.

    ./dev bench giftcards                                # 1,000 cards, 200 redemptions
    ./dev bench giftcards --cards 300 --redemptions 50   # a quick look

1. Cards: `--cards` issue_gift_card tasks (in venue, distinct references) sent at once to
   `--workers` Celery workers of `--concurrency` processes each, the simulator and the
   workers' shared credit bucket given the same budget. Reported: the seconds from the first
   send until the last card is issued, as a ratio to the credit bound (credits the simulator
   charged, less the opening burst, ÷ the refill rate), the simulator's Throttled answers
   (aim 0) and the Toggle orders per reference (exactly 1 each).
2. Redemptions: `--redemptions` redeem_points_for_gift_card tasks at `--rate`/s while
   createOrder is answered badly now and then (applied then dropped; 503), in batches queued
   as the sends go. Reported: p50/p95/max from send until the redemption is `done` (its row
   in the worker's database), one Treazure booking and one Toggle order per redemption.

Prints a table and writes bench/results/giftcards.json; nothing here asserts wall-clock time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil
import redis
from celery import Celery
from points import percentile  # bench/points.py
from run import RESULTS, cpu_calibration  # bench/run.py: same results folder, same yardstick
from sqlalchemy import create_engine, text

from sims.guids import seeded_ids
from sims.harness import (
    CeleryProcess,
    Simulators,
    ensure_redis,
    start_celery,
    start_simulators,
    stop,
)

OUTPUT = RESULTS / "giftcards.json"
CARD_COST = 20  # credits Toggle charges for createOrder (contract)
TIMEOUT = 900.0  # seconds before an unfinished card or redemption counts as missing
POINTS, VALUE = "10", "1.00"  # per redemption; seeded accounts below this are skipped
TERMINAL = ("done", "refunded", "refused", "failed")


@dataclass
class Stack:
    sims: Simulators
    workers: list[CeleryProcess]
    database: Path
    client: Celery
    control: httpx.Client  # the Toggle simulator's /_sim/ API


@contextlib.contextmanager
def running_stack(args: argparse.Namespace, redis_url: str, work: Path) -> Iterator[Stack]:
    """Simulators (Toggle given the budget), the workers and beat; stopped in reverse order."""
    redis.Redis.from_url(redis_url).flushdb()
    sims = start_simulators(seed_contacts=args.redemptions * 2)
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(stop, sims.proc)
        control = httpx.Client(base_url=f"{sims.toggle}/_sim", timeout=60, trust_env=False)
        cleanup.callback(control.close)
        control.post("/config", json={"credits_max": args.credits_max,
                                      "credits_refill_per_second": args.refill}
                     ).raise_for_status()
        control.post("/toggle/credits", json={"available": args.credits_max}).raise_for_status()
        database = work / "pointsync.db"
        env = {**sims.env(), "REDIS_URL": redis_url, "LOG_LEVEL": "WARNING",
               "DATABASE_URL": f"sqlite:///{database}",
               "TOGGLE_CREDITS_MAX": str(args.credits_max),
               "TOGGLE_CREDITS_REFILL_PER_SECOND": str(args.refill)}
        workers = []
        for n in range(args.workers):  # one at a time: the first prepares the store
            worker = start_celery("worker", env, work / f"worker{n}.log",
                                  ["--concurrency", str(args.concurrency),
                                   "-n", f"bench-giftcards{n}@%h"])
            cleanup.callback(worker.stop)
            workers.append(worker)
        beat = start_celery("beat", env, work / "beat.log",
                            ["--schedule", str(work / "beat-schedule")])
        cleanup.callback(beat.stop)
        client = Celery("bench-client", broker=redis_url, backend=redis_url)
        cleanup.callback(client.close)
        yield Stack(sims, workers, database, client, control)


def rows(stack: Stack, sql: str) -> list[Any]:
    engine = create_engine(f"sqlite:///{stack.database}")
    try:
        with engine.connect() as conn:
            return list(conn.execute(text(sql)).all())
    finally:
        engine.dispose()


def orders_per_reference(stack: Stack, references: list[str]) -> Counter[int]:
    """How many Toggle orders each reference made (the answer wanted: 1 for all)."""
    everything = stack.control.get("/toggle/orders").json()["orders"]
    made = Counter(order.get("merchant_transaction_reference") for order in everything)
    return Counter(made[ref] for ref in references)


def issue_cards(stack: Stack, count: int, credits_max: float, refill: float) -> dict[str, Any]:
    stack.control.post("/stats/reset").raise_for_status()
    tag = f"bc{int(time.time())}"
    references = [f"{tag}-{k:05d}" for k in range(count)]
    print(f"sending {count} issue_gift_card tasks …", flush=True)
    began = time.time()
    for ref in references:
        stack.client.send_task("pointsync.issue_gift_card",
                               kwargs={"value": "5.00", "reference": ref})
    sent_in = time.time() - began
    deadline = time.monotonic() + TIMEOUT
    issued = 0
    while time.monotonic() < deadline:
        issued = rows(stack, f"SELECT count(*) FROM giftcard_orders WHERE state = 'issued' "
                             f"AND reference LIKE '{tag}-%'")[0][0]
        if issued >= count:
            break
        time.sleep(0.25)
    elapsed = time.time() - began
    stats = stack.control.get("/stats").json()
    # Credits needed: what the simulator charged (cards, the login, any look-up), of which
    # the opening burst was there already; the rest arrives at the refill rate.
    needed = stats["credits_spent"]
    bound = max(needed - credits_max, 0) / refill
    per_ref = orders_per_reference(stack, references)
    return {
        "cards": count, "issued": issued, "send_seconds": round(sent_in, 2),
        "elapsed_seconds": round(elapsed, 1), "credits_spent": needed,
        "credits_for_cards": count * CARD_COST, "bound_seconds": round(bound, 1),
        "ratio_to_bound": round(elapsed / bound, 3) if bound else None,
        "throttled": stats["throttled"], "requests": stats["requests"],
        "orders_per_reference": {str(k): n for k, n in sorted(per_ref.items())},
    }


def redeemable_contacts(stack: Stack, wanted: int) -> list[str]:
    """Seeded contacts holding at least POINTS (seeded balances vary, a few are near 0)."""
    chosen = []
    with httpx.Client(base_url=stack.sims.treazure, timeout=30, trust_env=False) as http:
        for contact in seeded_ids(0, wanted * 2):
            account = http.get(f"/_sim/treazure/account/{contact}").json()
            if float(account["balance"]) >= float(POINTS) and account["history_length"] == 1:
                chosen.append(contact)
            if len(chosen) == wanted:
                break
    return chosen


def queue_faults(stack: Stack, drop: int, errors: int) -> None:
    for kind, count in (("drop_after_apply", drop), ("status", errors)):
        if count:
            stack.control.post("/faults", json={"target": "createOrder", "kind": kind,
                                                "status": 503, "count": count}
                               ).raise_for_status()


def redeem(stack: Stack, count: int, rate: float, drop: int, errors: int,
           batches: int) -> dict[str, Any]:
    contacts = redeemable_contacts(stack, count)
    stack.control.post("/stats/reset").raise_for_status()
    tag = f"br{int(time.time())}"
    references = [f"{tag}-{k:05d}" for k in range(len(contacts))]
    # The faults come in `batches` spread over the sends: each batch hits the next orders.
    every = max(1, len(contacts) // batches)
    sent: dict[str, float] = {}
    print(f"sending {len(contacts)} redemptions at {rate:g}/s with faults …", flush=True)
    start = time.monotonic() + 0.05
    for k, (contact, ref) in enumerate(zip(contacts, references, strict=True)):
        if k % every == 0 and k // every < batches:
            queue_faults(stack, drop // batches, errors // batches)
        delay = start + k / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        sent[ref] = time.time()
        stack.client.send_task("pointsync.redeem_points_for_gift_card", kwargs={
            "contact_id": contact, "points": POINTS, "value": VALUE,
            "email": f"guest{k}@example.com", "reference": ref})
    achieved = (len(sent) - 1) / (max(sent.values()) - min(sent.values()) or 1)
    deadline = time.monotonic() + TIMEOUT
    states: dict[str, Any] = {}
    while time.monotonic() < deadline:
        found = rows(stack, "SELECT reference, state, finished_at, updated_at FROM "
                            f"giftcard_redemptions WHERE reference LIKE '{tag}-%'")
        states = {r[0]: r for r in found}
        if len(states) == len(sent) and all(r[1] in TERMINAL for r in states.values()):
            break
        time.sleep(0.5)
    latencies = sorted(_seconds(states[ref][2] or states[ref][3]) - sent[ref]
                       for ref in sent if ref in states and states[ref][1] == "done")
    # The card itself: its order row (the caller's reference) turns `issued`.
    issued = {r[0]: r[1] for r in rows(
        stack, "SELECT reference, updated_at FROM giftcard_orders "
               f"WHERE state = 'issued' AND reference LIKE '{tag}-%'")}
    to_card = sorted(_seconds(issued[ref]) - sent[ref] for ref in sent if ref in issued)
    stats = stack.control.get("/stats").json()
    with httpx.Client(base_url=stack.sims.treazure, timeout=30, trust_env=False) as http:
        bookings = Counter(http.get(f"/_sim/treazure/account/{c}").json()["history_length"] - 1
                           for c in contacts)
    return {
        "redemptions": len(sent), "rate": rate, "achieved_per_second": round(achieved, 1),
        "faults": {"drop_after_apply": drop, "status_503": errors, "batches": batches},
        "states": dict(Counter(r[1] for r in states.values())),
        "missing": len(sent) - len(latencies),
        "p50_seconds": _round(percentile(latencies, 0.5)),
        "p95_seconds": _round(percentile(latencies, 0.95)),
        "max_seconds": _round(latencies[-1] if latencies else None),
        "card_p50_seconds": _round(percentile(to_card, 0.5)),
        "card_p95_seconds": _round(percentile(to_card, 0.95)),
        "card_max_seconds": _round(to_card[-1] if to_card else None),
        "treazure_bookings_per_redemption": {str(k): n for k, n in sorted(bookings.items())},
        "orders_per_reference": {str(k): n for k, n in
                                 sorted(orders_per_reference(stack, references).items())},
        "create_order_answers": {key.split(" ", 1)[1]: n for key, n in stats["answers"].items()
                                 if key.startswith("createOrder ")},
        "throttled": stats["throttled"],
    }


def _seconds(stamp: Any) -> float:
    """A stored time as epoch seconds (SQLite gives naive UTC text or datetimes)."""
    if isinstance(stamp, str):
        stamp = datetime.fromisoformat(stamp)
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return float(stamp.timestamp())


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def print_result(result: dict[str, Any]) -> None:
    c, r = result["cards"], result["redemptions"]
    table = [
        ("cards", f"{c['issued']}/{c['cards']}",
         f"{result['workers']} worker(s) × concurrency {result['concurrency']}, in venue"),
        ("credit budget", f"{result['credits_max']:g} + {result['refill']:g}/s",
         "simulator and the workers' shared bucket"),
        ("elapsed", f"{c['elapsed_seconds']:.1f} s", f"first send → last card issued "
         f"(sends took {c['send_seconds']:.1f} s)"),
        ("credit bound", f"{c['bound_seconds']:.1f} s",
         f"({c['credits_spent']} credits charged − {result['credits_max']:g}) ÷ "
         f"{result['refill']:g}/s"),
        ("ratio to bound", f"{c['ratio_to_bound']}", "aim ≤ 1.05"),
        ("Throttled answers", f"{c['throttled']}", "aim 0"),
        ("orders per card", _counts(c["orders_per_reference"]), "want 1 each"),
        ("redemptions", f"{r['redemptions']}", f"at {r['rate']:g}/s (achieved "
         f"{r['achieved_per_second']}/s); states {r['states']}"),
        ("createOrder faults", f"{r['faults']['drop_after_apply']} / "
         f"{r['faults']['status_503']}", f"dropped after apply / 503, in "
         f"{r['faults']['batches']} batches; answers {r['create_order_answers']}"),
        ("p50 / p95 / max", f"{r['p50_seconds']} / {r['p95_seconds']} / {r['max_seconds']} s",
         "send → done (the ledger pushed the balance to Engage)"),
        ("card p50 / p95 / max", f"{r['card_p50_seconds']} / {r['card_p95_seconds']} / "
         f"{r['card_max_seconds']} s", "send → the redemption's card issued"),
        ("Treazure bookings", _counts(r["treazure_bookings_per_redemption"]),
         "per redemption, want 1 each"),
        ("orders per redemption", _counts(r["orders_per_reference"]), "want 1 each"),
        ("CPU calibration", f"{result['cpu_calibration_seconds']:.2f} s",
         "fixed workload; lower is a faster machine"),
    ]
    width = max(len(row[0]) for row in table)
    print(f"\ngift cards ({platform.node()}, {datetime.now(UTC):%Y-%m-%d %H:%M}Z)")
    for name, value, note in table:
        print(f"  {name:<{width}}  {value:>18}  {note}")


def _counts(per: dict[str, int]) -> str:
    return ", ".join(f"{n}×{k}" for k, n in per.items())


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cards", type=int, default=1000)
    parser.add_argument("--credits-max", type=int, default=400)
    parser.add_argument("--refill", type=float, default=200.0, help="credits per second")
    parser.add_argument("--workers", type=int, default=2, help="Celery worker processes")
    parser.add_argument("--concurrency", type=int, default=2, help="pool size of each")
    parser.add_argument("--redemptions", type=int, default=200)
    parser.add_argument("--rate", type=float, default=5.0, help="redemptions/s")
    parser.add_argument("--drop", type=int, default=20,
                        help="createOrder answers dropped after apply")
    parser.add_argument("--errors", type=int, default=20, help="createOrder answers 503")
    parser.add_argument("--batches", type=int, default=4, help="fault batches over the sends")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/9")
    args = parser.parse_args()
    if min(args.cards, args.redemptions, args.workers, args.concurrency, args.batches) < 1 \
            or args.rate <= 0 or args.refill <= 0:
        parser.error("counts, rate and refill must be positive")
    return args


def main() -> None:
    args = parse_args()
    work = Path(tempfile.mkdtemp(prefix="pointsync-bench-giftcards-"))
    calibration = cpu_calibration()
    with ensure_redis(args.redis_url, work / "redis") as redis_url, \
            running_stack(args, redis_url, work) as stack:
        cards = issue_cards(stack, args.cards, args.credits_max, args.refill)
        redemptions = redeem(stack, args.redemptions, args.rate, args.drop, args.errors,
                             args.batches)
    result = {
        "cards": cards, "redemptions": redemptions, "workers": args.workers,
        "concurrency": args.concurrency, "credits_max": args.credits_max,
        "refill": args.refill, "cpu_calibration_seconds": calibration, "logs": str(work),
        "measured_at": datetime.now(UTC).isoformat(),
        "machine": {"cpus": psutil.cpu_count(), "python": platform.python_version()},
    }
    print_result(result)
    RESULTS.mkdir(exist_ok=True)
    OUTPUT.write_text(json.dumps(result, indent=2, default=str, ensure_ascii=False) + "\n",
                      encoding="utf-8")
    print(f"\nwritten to {OUTPUT} (logs in {work})")


if __name__ == "__main__":
    main()
