"""Relay benchmark: Toggle → Atreemo (and Nector → Contlo) through the web process, a real
Celery worker (`--concurrency 2`) with beat, SQLite, and the destination simulators.

    ./dev bench relays                                      # 2,000-event burst, 30 s steady
    ./dev bench relays --events 400 --seconds 10 --receiver-seconds 5   # a quick look

1. Burst: `--events` signed Toggle events (`--per-card` on each card, one card in ten ending
   with an email trigger that must be filtered) sent at once by `--clients` connections.
   The time from the first send until the Atreemo simulator holds every deliverable event,
   as a ratio to the rate-limit bound: deliverable events ÷ ATREEMO_RATE_LIMIT (the
   simulator's limit and the worker's setting are the same). Also: the simulator's 429s,
   each event arriving exactly once and in order per card, filtered ones never arriving.
2. Steady: Toggle events at `--rate` per second (default half the limit) for `--seconds`;
   p50/p95/max from the receiver's `200` (the bench client's clock) to the simulator
   accepting the event (its `received_at` stamp; both clocks are this machine's).
3. Receiver: signed Toggle, then Nector, deliveries as fast as the web process answers them
   over `--clients` connections for `--receiver-seconds` each: accepted deliveries per
   second and p50/p95 answer time. It runs last: the deliveries it leaves queued (at the
   destinations' limits) are abandoned when the stack stops.

Prints a table and writes bench/results/relays.json; nothing here asserts wall-clock time.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import itertools
import json
import os
import platform
import secrets
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psutil
import redis
from points import percentile  # bench/points.py
from run import RESULTS, cpu_calibration  # bench/run.py: same results folder, same yardstick
from sqlalchemy import bindparam, create_engine, text

from sims.harness import (
    CeleryProcess,
    Simulators,
    WebProcess,
    ensure_redis,
    free_port,
    start_celery,
    start_simulators,
    start_web,
    stop,
)
from sims.relays.atreemo import DELIVERIES
from sims.senders import nector_event, sign_nector, sign_toggle, toggle_event, toggle_time

OUTPUT = RESULTS / "relays.json"
FILTERED_EVERY = 10  # every tenth card's last event is an email trigger (filtered)
EMAIL_TRIGGER = "card.expiry_reminder"
DEFAULT_QUEUE = "celery"  # the worker's queue (worker/faces/celery/app.py), a Redis list
POLL = 0.25  # seconds between looks at the simulator's counter (its stamps carry the timing)
SETTLE_TIMEOUT = 60.0  # seconds past the bound before a delivery counts as missing


@dataclass
class Stack:
    sims: Simulators
    worker: CeleryProcess
    beat: CeleryProcess
    web: WebProcess
    database: Path
    redis: redis.Redis
    atreemo: httpx.AsyncClient  # the Atreemo simulator (its /_sim/ control API)


@dataclass
class Sent:
    """One signed event the bench sends."""

    event_id: str
    subject: str  # the card (Toggle) or customer (Nector)
    kind: str
    body: bytes
    headers: dict[str, str]
    deliverable: bool = True
    status: int = 0  # the receiver's answer; 0 = none
    sent_at: float = 0.0  # wall clock when the request went out
    acked_at: float = 0.0  # wall clock when the answer came back

    @property
    def accepted(self) -> bool:
        return self.status == 200


# -- the stack ------------------------------------------------------------------------------

@contextlib.contextmanager
def running_stack(args: argparse.Namespace, redis_url: str, work: Path) -> Iterator[Stack]:
    """Simulators (Atreemo given the worker's limit), the worker, beat and the web process;
    stopped in reverse order."""
    redis.Redis.from_url(redis_url).flushdb()
    sims = start_simulators()
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(stop, sims.proc)
        database = work / "pointsync.db"
        env = {**sims.env(), "REDIS_URL": redis_url, "LOG_LEVEL": "WARNING",
               "DATABASE_URL": f"sqlite:///{database}",
               "ATREEMO_RATE_LIMIT": str(args.rate_limit)}
        # The worker first: it prepares the store, so the processes never migrate it at once.
        worker = start_celery("worker", env, work / "worker.log",
                              ["--concurrency", str(args.concurrency), "-n", "bench-relays@%h"])
        cleanup.callback(worker.stop)
        beat = start_celery("beat", env, work / "beat.log",
                            ["--schedule", str(work / "beat-schedule")])
        cleanup.callback(beat.stop)
        secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
        web = start_web({**env, "PORT": str(free_port()), "WEBHOOK_SECRET": secret,
                         "WEB_API_KEY": "bench-key"}, work / "web.log")
        cleanup.callback(web.stop)
        yield Stack(sims, worker, beat, web, database, redis.Redis.from_url(redis_url),
                    httpx.AsyncClient(base_url=sims.atreemo, timeout=60,
                                      trust_env=False))


async def worker_idle(stack: Stack, timeout: float = SETTLE_TIMEOUT) -> float:
    """Waits until the worker's queue is empty and no task is unacknowledged: a burst leaves
    tasks queued for subjects whose events an earlier task delivered already, which would
    otherwise delay the next part. Returns the seconds waited."""
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        if not stack.redis.llen(DEFAULT_QUEUE) and not stack.redis.hlen("unacked"):
            break
        await asyncio.sleep(POLL)
    return round(time.monotonic() - began, 2)


async def reset_atreemo(stack: Stack, rate_limit: int) -> None:
    """Empty the simulator's books (a reset restores its default limit: set ours again)."""
    (await stack.atreemo.post("/_sim/reset")).raise_for_status()
    (await stack.atreemo.post("/_sim/config", json={"rate_limit": rate_limit})).raise_for_status()


def cpu_seconds(stack: Stack) -> dict[str, float]:
    """CPU time used so far by each part (a process and its children, live or exited)."""
    parts = {"worker": stack.worker.proc.pid, "beat": stack.beat.proc.pid,
             "web": stack.web.proc.pid, "simulators": stack.sims.proc.pid,
             "bench client": os.getpid()}
    used: dict[str, float] = {}
    for name, pid in parts.items():
        try:
            root = psutil.Process(pid)
            times = root.cpu_times()
            own = times.user + times.system
            if name == "bench client":
                used[name] = own
                continue
            gone = times.children_user + times.children_system
            used[name] = own + gone + sum(sum(c.cpu_times()[:2]) for c in root.children(True))
        except psutil.Error:
            continue
    return used


def cpu_ms_per(before: dict[str, float], after: dict[str, float], count: int) -> dict[str, float]:
    return {name: round((after[name] - before.get(name, 0.0)) * 1000 / max(1, count), 2)
            for name in after}


def store_states(stack: Stack, event_ids: list[str]) -> dict[str, Any]:
    """Deliveries of these Toggle events by state, and their lost answers summed."""
    engine = create_engine(f"sqlite:///{stack.database}")
    query = text("SELECT state, count(*), coalesce(sum(ambiguous), 0) FROM relay_deliveries "
                 "WHERE source = 'toggle' AND event_id IN :ids GROUP BY state"
                 ).bindparams(bindparam("ids", expanding=True))
    try:
        with engine.connect() as conn:
            found = conn.execute(query, {"ids": event_ids}).all()
    finally:
        engine.dispose()
    return {"states": {state: int(n) for state, n, _ in found},
            "ambiguous": sum(int(a) for _, _, a in found)}


# -- events ---------------------------------------------------------------------------------

_card_ids = itertools.count(10_000_000 + (time.time_ns() // 1000) % 10_000_000)


def card_object(card: int, balance: int) -> dict[str, Any]:
    return {"object": "card", "id": card, "card_reference": f"BENCH{card}", "balance": balance,
            "expiry_time": "2027-12-31T23:59:59.000000Z", "contact": None,
            "currency": {"iso_currency_code": "GBP", "denomination": 100}}


def toggle_card_event(card: int, step: int, kind: str, created_at: datetime) -> Sent:
    """Step 0 registers the card; later steps adjust its balance (or the given kind)."""
    balance = 5000 - 100 * step
    if kind == "card.balance_adjusted":
        obj: dict[str, Any] = {
            "object": "balance_adjustment", "id": card * 100 + step, "value": -100,
            "created_at": toggle_time(created_at), "merchant_transaction_reference": None,
            "unit_epos_reference": f"till-{step}", "card": card_object(card, balance)}
    else:
        obj = card_object(card, balance)
    body = toggle_event(kind, obj, created_at=created_at)
    event_id = str(json.loads(body)["id"])
    return Sent(event_id, f"card:{card}", kind, body, sign_toggle(body),
                deliverable=kind != EMAIL_TRIGGER)


def burst_events(count: int, per_card: int) -> tuple[list[Sent], dict[str, list[str]]]:
    """`count` events, `per_card` on each card, in sending order: every card's first event,
    then every card's second, … (creation times rise in that order). Returns them and each
    card's deliverable event ids in creation order."""
    cards = [next(_card_ids) for _ in range(-(-count // per_card))]
    start = datetime.now(UTC)
    events: list[Sent] = []
    for step in range(per_card):
        for n, card in enumerate(cards):
            if len(events) == count:
                break
            last = step == per_card - 1
            kind = ("card.registered" if step == 0 else
                    EMAIL_TRIGGER if last and n % FILTERED_EVERY == 0 else
                    "card.balance_adjusted")
            at = start + timedelta(microseconds=len(events))
            events.append(toggle_card_event(card, step, kind, at))
    order: dict[str, list[str]] = defaultdict(list)
    for sent in events:
        if sent.deliverable:
            order[sent.subject].append(sent.event_id)
    return events, dict(order)


# -- sending --------------------------------------------------------------------------------

async def post(client: httpx.AsyncClient, url: str, item: Sent) -> None:
    item.sent_at = time.time()
    try:
        item.status = (await client.post(url, content=item.body,
                                         headers=item.headers)).status_code
    except httpx.HTTPError:
        item.status = 0
    item.acked_at = time.time()


async def send_all(client: httpx.AsyncClient, url: str, items: list[Sent], clients: int) -> None:
    """Every item as fast as the receiver answers, over `clients` connections, in order."""
    queue = iter(items)

    async def one_client() -> None:
        for item in queue:  # a shared iterator: each item is taken once
            await post(client, url, item)

    await asyncio.gather(*(one_client() for _ in range(clients)))


async def send_steadily(client: httpx.AsyncClient, url: str, items: list[Sent],
                        rate: float) -> float:
    """Starts item k at k / rate s; returns the rate achieved."""
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.05
    in_flight = []
    for k, item in enumerate(items):
        delay = start + k / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        in_flight.append(asyncio.create_task(post(client, url, item)))
    await asyncio.gather(*in_flight)
    span = items[-1].sent_at - items[0].sent_at
    return (len(items) - 1) / span if span > 0 else float(len(items))


async def await_accepted(stack: Stack, wanted: int, timeout: float) -> int:
    """Polls the Atreemo simulator's count of accepted deliveries until it reaches `wanted`
    or `timeout` s pass; returns the count."""
    deadline = time.monotonic() + timeout
    accepted = 0
    while time.monotonic() < deadline:
        accepted = int((await stack.atreemo.get("/_sim/stats")).json()["accepted"])
        if accepted >= wanted:
            break
        await asyncio.sleep(POLL)
    return accepted


async def await_settled(stack: Stack, event_ids: list[str], timeout: float) -> dict[str, Any]:
    """Polls the store until none of these events' deliveries is still `received`."""
    deadline = time.monotonic() + timeout
    while True:
        states = store_states(stack, event_ids)
        if not states["states"].get("received") or time.monotonic() > deadline:
            return states
        await asyncio.sleep(POLL)


def arrivals(deliveries: list[dict[str, Any]], items: list[Sent],
             order: dict[str, list[str]]) -> dict[str, Any]:
    """Exactly once and in order per card: what the simulator accepted, against what was
    sent (filtered events must never arrive)."""
    ours = {item.event_id: item for item in items}
    got = Counter(str(d["id"]) for d in deliveries)
    by_card: dict[str, list[str]] = defaultdict(list)
    for d in sorted(deliveries, key=lambda d: d["seq"]):
        if str(d["id"]) in ours:
            by_card[ours[str(d["id"])].subject].append(str(d["id"]))
    deliverable = [i.event_id for i in items if i.deliverable and i.accepted]
    return {
        "deliverable": len(deliverable),
        "arrived_once": sum(got[e] == 1 for e in deliverable),
        "missing": sum(got[e] == 0 for e in deliverable),
        "arrived_twice_or_more": sum(got[e] > 1 for e in deliverable),
        "filtered_that_arrived": sum(got[i.event_id] for i in items if not i.deliverable),
        "strangers": sum(n for e, n in got.items() if e not in ours),
        "cards": len(order),
        "cards_out_of_order": sum(by_card.get(card, []) != ids for card, ids in order.items()),
    }


# -- the three parts ------------------------------------------------------------------------

async def burst(stack: Stack, args: argparse.Namespace, client: httpx.AsyncClient
                ) -> dict[str, Any]:
    await reset_atreemo(stack, args.rate_limit)
    items, order = burst_events(args.events, args.per_card)
    deliverable = sum(i.deliverable for i in items)
    bound = deliverable / args.rate_limit
    print(f"burst: {len(items):,} Toggle events on {len(order):,} cards "
          f"({deliverable:,} deliverable; bound {bound:.1f} s) …", flush=True)
    before = cpu_seconds(stack)
    began = time.time()
    await send_all(client, f"{stack.web.url}/webhooks/toggle", items, args.clients)
    sent_in = time.time() - began
    accepted_deliverable = sum(i.deliverable and i.accepted for i in items)
    seen = await await_accepted(stack, accepted_deliverable, bound * 2 + SETTLE_TIMEOUT)
    after = cpu_seconds(stack)
    stats = (await stack.atreemo.get("/_sim/stats")).json()
    deliveries = (await stack.atreemo.get(DELIVERIES)).json()["items"]
    settled = await await_settled(stack, [i.event_id for i in items], SETTLE_TIMEOUT)
    last = max((d["received_at"] for d in deliveries), default=began)
    elapsed = last - began
    return {
        "events": len(items), "cards": len(order), "per_card": args.per_card,
        "deliverable": deliverable, "clients": args.clients,
        "receiver_statuses": dict(Counter(str(i.status) for i in items)),
        "send_seconds": round(sent_in, 2),
        "accepted_by_atreemo": seen,
        "elapsed_seconds": round(elapsed, 2),
        "bound_seconds": round(bound, 2),
        "ratio_to_bound": round(elapsed / bound, 3),
        "atreemo_429": stats["throttled"], "atreemo_requests": stats["requests"],
        "atreemo_answers": stats["answers"], "atreemo_peak_per_second": stats["peak_per_second"],
        "arrivals": arrivals(deliveries, items, order),
        "store": settled,
        "cpu_ms_per_event": cpu_ms_per(before, after, len(items)),
    }


def steady_events(count: int, per_card: int) -> tuple[list[Sent], dict[str, list[str]]]:
    """`count` deliverable events over count/per_card cards, round-robin (a card's events
    are `cards` sends apart)."""
    cards = [next(_card_ids) for _ in range(max(1, count // per_card))]
    start = datetime.now(UTC)
    events = []
    for k in range(count):
        step, card = divmod(k, len(cards))
        kind = "card.registered" if step == 0 else "card.balance_adjusted"
        events.append(toggle_card_event(cards[card], step, kind,
                                        start + timedelta(microseconds=k)))
    order: dict[str, list[str]] = defaultdict(list)
    for sent in events:
        order[sent.subject].append(sent.event_id)
    return events, dict(order)


async def steady(stack: Stack, args: argparse.Namespace, client: httpx.AsyncClient
                 ) -> dict[str, Any]:
    await reset_atreemo(stack, args.rate_limit)
    count = max(2, round(args.rate * args.seconds))
    items, order = steady_events(count, args.per_card)
    print(f"steady: {count} Toggle events at {args.rate:g}/s "
          f"({args.rate / args.rate_limit:.0%} of the limit) …", flush=True)
    before = cpu_seconds(stack)
    achieved = await send_steadily(client, f"{stack.web.url}/webhooks/toggle", items, args.rate)
    accepted = sum(i.accepted for i in items)
    await await_accepted(stack, accepted, SETTLE_TIMEOUT)
    after = cpu_seconds(stack)
    stats = (await stack.atreemo.get("/_sim/stats")).json()
    deliveries = (await stack.atreemo.get(DELIVERIES)).json()["items"]
    first_arrival: dict[str, float] = {}
    for d in deliveries:
        first_arrival.setdefault(str(d["id"]), d["received_at"])
    # From the receiver's 200 to the destination accepting it.
    latencies = sorted(max(0.0, first_arrival[i.event_id] - i.acked_at)
                       for i in items if i.accepted and i.event_id in first_arrival)
    from_send = sorted(first_arrival[i.event_id] - i.sent_at
                       for i in items if i.accepted and i.event_id in first_arrival)
    acks = sorted(i.acked_at - i.sent_at for i in items)
    return {
        "rate": args.rate, "seconds": args.seconds, "events": count, "cards": len(order),
        "achieved_per_second": round(achieved, 1),
        "receiver_statuses": dict(Counter(str(i.status) for i in items)),
        "p50_seconds": _round(percentile(latencies, 0.5)),
        "p95_seconds": _round(percentile(latencies, 0.95)),
        "max_seconds": _round(latencies[-1] if latencies else None),
        "from_send_p95_seconds": _round(percentile(from_send, 0.95)),
        "ack_p95_seconds": _round(percentile(acks, 0.95)),
        "atreemo_429": stats["throttled"],
        "arrivals": arrivals(deliveries, items, order),
        "store": await await_settled(stack, [i.event_id for i in items], SETTLE_TIMEOUT),
        "cpu_ms_per_event": cpu_ms_per(before, after, count),
    }


def toggle_maker() -> Callable[[], Sent]:
    def make() -> Sent:
        return toggle_card_event(next(_card_ids), 1, "card.balance_adjusted",
                                 datetime.now(UTC))
    return make


def nector_maker() -> Callable[[], Sent]:
    customers = itertools.count()

    def make() -> Sent:
        customer = f"bench-{time.time_ns()}-{next(customers)}"
        body = nector_event("walletreward_create", user_customer_id=customer)
        headers = sign_nector(body)
        return Sent(headers["x-nector-delivery-id"], customer, "walletreward_create", body,
                    headers)
    return make


async def flood(client: httpx.AsyncClient, url: str, make: Callable[[], Sent], clients: int,
                seconds: float) -> list[Sent]:
    """Each client sends fresh events back to back until `seconds` have passed."""
    done: list[Sent] = []
    deadline = time.monotonic() + seconds

    async def one_client() -> None:
        while time.monotonic() < deadline:
            item = make()
            await post(client, url, item)
            done.append(item)

    await asyncio.gather(*(one_client() for _ in range(clients)))
    return done


async def receiver(stack: Stack, args: argparse.Namespace, client: httpx.AsyncClient
                   ) -> dict[str, Any]:
    results = {}
    routes: list[tuple[str, Callable[[], Sent]]] = [("toggle", toggle_maker()),
                                                    ("nector", nector_maker())]
    for source, make in routes:
        print(f"receiver: {source} as fast as accepted for {args.receiver_seconds:g} s "
              f"over {args.clients} connections …", flush=True)
        before = cpu_seconds(stack)
        began = time.monotonic()
        items = await flood(client, f"{stack.web.url}/webhooks/{source}", make, args.clients,
                            args.receiver_seconds)
        span = time.monotonic() - began
        after = cpu_seconds(stack)
        acks = sorted(i.acked_at - i.sent_at for i in items if i.accepted)
        accepted = sum(i.accepted for i in items)
        results[source] = {
            "sent": len(items), "accepted": accepted, "seconds": round(span, 2),
            "accepted_per_second": round(accepted / span, 1),
            "statuses": dict(Counter(str(i.status) for i in items)),
            "p50_seconds": _round(percentile(acks, 0.5), 4),
            "p95_seconds": _round(percentile(acks, 0.95), 4),
            "max_seconds": _round(acks[-1] if acks else None, 4),
            "cpu_ms_per_delivery": cpu_ms_per(before, after, len(items)),
        }
        await asyncio.sleep(1.0)  # a breath between the two sources
    return results


async def run_all(stack: Stack, args: argparse.Namespace) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    parts: list[tuple[str, Callable[..., Awaitable[dict[str, Any]]]]] = [
        ("burst", burst), ("steady", steady), ("receiver", receiver)]
    result: dict[str, Any] = {}
    async with httpx.AsyncClient(timeout=30, limits=limits, trust_env=False) as client:
        for name, part in parts:
            if name not in args.skip:
                result.setdefault("waited_for_idle_worker_seconds", {})[name] = \
                    await worker_idle(stack)
                result[name] = await part(stack, args, client)
    await stack.atreemo.aclose()
    return result


# -- report ---------------------------------------------------------------------------------

def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def _ms(seconds: float | None) -> str:
    return "—" if seconds is None else f"{seconds * 1000:,.0f} ms"


def print_result(result: dict[str, Any]) -> None:
    rows: list[tuple[str, str, str]] = []
    if "burst" in result:
        b = result["burst"]
        a = b["arrivals"]
        rows += [
            ("burst", f"{b['events']:,} events", f"{b['cards']:,} cards × {b['per_card']}, "
             f"{b['deliverable']:,} deliverable; receiver {b['receiver_statuses']}, "
             f"sent in {b['send_seconds']:.1f} s"),
            ("  first send → all at Atreemo", f"{b['elapsed_seconds']:.1f} s",
             f"bound {b['bound_seconds']:.1f} s = {b['deliverable']:,} ÷ "
             f"{result['rate_limit']}/s"),
            ("  ratio to the bound", f"{b['ratio_to_bound']:.3f}", "aim ≤ 1.05"),
            ("  Atreemo 429s", str(b["atreemo_429"]),
             f"target 0; peak {b['atreemo_peak_per_second']}/s"),
            ("  arrived exactly once", f"{a['arrived_once']:,}/{a['deliverable']:,}",
             f"missing {a['missing']}, twice {a['arrived_twice_or_more']}, filtered "
             f"that arrived {a['filtered_that_arrived']}"),
            ("  cards in order", f"{a['cards'] - a['cards_out_of_order']:,}/{a['cards']:,}",
             f"store: {b['store']['states']}, ambiguous {b['store']['ambiguous']}"),
        ]
    if "steady" in result:
        s = result["steady"]
        a = s["arrivals"]
        rows += [
            ("steady", f"{s['rate']:g}/s × {s['seconds']:g} s",
             f"{s['events']} events on {s['cards']} cards (achieved "
             f"{s['achieved_per_second']}/s); receiver {s['receiver_statuses']}"),
            ("  200 → Atreemo p50 / p95", f"{_ms(s['p50_seconds'])} / {_ms(s['p95_seconds'])}",
             f"aim p95 ≤ 500 ms; max {_ms(s['max_seconds'])}"),
            ("  once / in order / 429s", f"{a['arrived_once']}/{a['deliverable']} / "
             f"{a['cards'] - a['cards_out_of_order']}/{a['cards']} / {s['atreemo_429']}",
             f"store: {s['store']['states']}"),
        ]
    for source, r in result.get("receiver", {}).items():
        rows.append((f"receiver, {source}", f"{r['accepted_per_second']:,.1f}/s",
                     f"{r['accepted']:,} accepted of {r['sent']:,} in {r['seconds']:.1f} s; "
                     f"answer p50 {_ms(r['p50_seconds'])}, p95 {_ms(r['p95_seconds'])}"))
    waited = result.get("waited_for_idle_worker_seconds", {})
    rows.append(("waits for an idle worker", ", ".join(f"{v:g} s" for v in waited.values()),
                 "before " + ", ".join(waited) + " (tasks left queued by the part before)"))
    rows.append(("CPU calibration", f"{result['cpu_calibration_seconds']:.2f} s",
                 f"fixed workload; lower is a faster machine (after: "
                 f"{result.get('cpu_calibration_after_seconds', 0):.2f} s)"))
    width = max(len(r[0]) for r in rows)
    print(f"\nrelays ({platform.node()}, {datetime.now(UTC):%Y-%m-%d %H:%M}Z, worker "
          f"concurrency {result['concurrency']}, ATREEMO_RATE_LIMIT {result['rate_limit']})")
    for name, value, note in rows:
        print(f"  {name:<{width}}  {value:>20}  {note}")
    for part in ("burst", "steady"):
        if part in result:
            print(f"  CPU ms per event, {part}: " + ", ".join(
                f"{k} {v:.1f}" for k, v in result[part]["cpu_ms_per_event"].items()))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=2000, help="events in the burst")
    parser.add_argument("--per-card", type=int, default=4, help="events per card")
    parser.add_argument("--rate-limit", type=int, default=20,
                        help="ATREEMO_RATE_LIMIT, and the simulator's limit")
    parser.add_argument("--rate", type=float, default=None,
                        help="steady events/s (default half the limit)")
    parser.add_argument("--seconds", type=float, default=30, help="length of the steady part")
    parser.add_argument("--receiver-seconds", type=float, default=10,
                        help="length of each receiver part (Toggle, then Nector)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent connections")
    parser.add_argument("--concurrency", type=int, default=2, help="Celery worker processes")
    parser.add_argument("--skip", action="append", default=[],
                        choices=["burst", "steady", "receiver"], help="leave a part out")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/4")
    args = parser.parse_args()
    args.rate = args.rate if args.rate is not None else args.rate_limit / 2
    if min(args.events, args.per_card, args.rate_limit, args.clients, args.concurrency) < 1 \
            or args.rate <= 0 or args.seconds <= 0 or args.receiver_seconds <= 0:
        parser.error("counts, rates and lengths must be positive")
    return args


def main() -> None:
    args = parse_args()
    work = Path(tempfile.mkdtemp(prefix="pointsync-bench-relays-"))
    calibration = cpu_calibration()
    with ensure_redis(args.redis_url, work / "redis") as redis_url, \
            running_stack(args, redis_url, work) as stack:
        result = asyncio.run(run_all(stack, args))
    result.update({
        "rate_limit": args.rate_limit, "concurrency": args.concurrency,
        "cpu_calibration_seconds": calibration, "cpu_calibration_after_seconds":
        cpu_calibration(), "logs": str(work), "measured_at": datetime.now(UTC).isoformat(),
        "machine": {"cpus": psutil.cpu_count(), "python": platform.python_version(),
                    "load_average": os.getloadavg()},
    })
    print_result(result)
    RESULTS.mkdir(exist_ok=True)
    OUTPUT.write_text(json.dumps(result, indent=2, default=str, ensure_ascii=False) + "\n",
                      encoding="utf-8")
    print(f"\nwritten to {OUTPUT} (logs in {work})")


if __name__ == "__main__":
    main()
