"""The relays end to end on real processes: signed events POSTed to a real web process
(`python -m worker.faces.web`, what `pointsync web` runs), delivered by a real Celery worker
to the Atreemo and Contlo simulators over HTTP, with their faults.

Each test's database is its own SQLite file; Redis is IT_REDIS_URL's database."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable

import httpx
import pytest

from sims.harness import BIN, CeleryProcess, WebProcess
from sims.senders import nector_event
from tests.support.integration import wait_for
from tests.support.relays import (
    RelaySims,
    about_card,
    accepted,
    all_final,
    card_event,
    delivery,
    event_id,
    post_nector,
    toggle_key,
)
from worker.store.database import Store
from worker.store.relays import DeliveryRow
from worker.systems.contlo.mapping import NO_CONTACT

pytestmark = pytest.mark.integration  # starts processes

CARD_A, CARD_B = 7001, 7002


def test_toggle_events_out_of_order_reach_atreemo_in_order_per_card_byte_for_byte(
    relay_sims: RelaySims, web: WebProcess, start_worker: Callable[..., CeleryProcess],
    store: Store,
) -> None:
    a1 = card_event("card.registered", CARD_A, 1)
    b1 = card_event("card.registered", CARD_B, 2)
    a2 = card_event("card.balance_adjusted", CARD_A, 3)
    a3 = card_event("card.send_recipient_email", CARD_A, 4)  # an email trigger
    b2 = card_event("card.balance_adjusted", CARD_B, 5)
    a4 = card_event("card.balance_adjusted", CARD_A, 6)
    b3 = card_event("card.balance_adjusted", CARD_B, 7)
    # They reach us out of order, all before any worker runs: each subject's task then
    # finds every one of its events recorded and must put them in the source's order.
    for body in (a4, b3, a2, b1, a3, a1, b2):
        assert accepted(web, body)["duplicate"] is False
    start_worker()
    wait_for(all_final(store, map(toggle_key, (a1, a2, a3, a4, b1, b2, b3))), 60,
             "every Toggle event settled")

    items = relay_sims.atreemo()
    assert about_card(items, CARD_A) == [event_id(b) for b in (a1, a2, a4)]
    assert about_card(items, CARD_B) == [event_id(b) for b in (b1, b2, b3)]
    sent = {event_id(b): b for b in (a1, a2, a4, b1, b2, b3)}
    for item in items:  # Toggle's envelope as Toggle sent it, not re-serialised
        assert item["raw"].encode() == sent[item["id"]]
    stats = relay_sims.stats("atreemo")
    # Each accepted only after its Toggle-Signature checked out with Atreemo's own secret.
    assert (stats["requests"], stats["unauthorized"], stats["accepted"]) == (6, 0, 6)

    email = delivery(store, toggle_key(a3))
    assert (email.state, email.attempts) == ("filtered", 0)
    assert "ATREEMO_SENDS_EMAILS" in (email.reason or "")
    for body in (a1, a2, a4, b1, b2, b3):
        delivered = delivery(store, toggle_key(body))
        assert (delivered.state, delivered.attempts, delivered.ambiguous) == ("delivered", 1, 0)

    # Toggle repeats an event: 200, nothing recorded, nothing sent. The card's next event,
    # created later, goes out after anything of the card still due: once it is there, a
    # second a2 would have been too.
    assert accepted(web, a2)["duplicate"] is True
    a5 = card_event("card.balance_adjusted", CARD_A, 8)
    assert accepted(web, a5)["duplicate"] is False
    wait_for(lambda: len(relay_sims.atreemo()) == 7, 30, "the card's next event delivered")
    assert about_card(relay_sims.atreemo(), CARD_A) == [event_id(b) for b in (a1, a2, a4, a5)]


def test_nector_events_reach_contlo_mapped_and_one_without_contact_fails_uncalled(
    relay_sims: RelaySims, web: WebProcess, start_worker: Callable[..., CeleryProcess],
    store: Store,
) -> None:
    start_worker(CONTLO_EVENT_NAMES="coinexpirynotify_create=Coins Expiring")
    customer = {"user_customer_id": "cust-77", "user_email": "asha@example.in",
                "user_mobile": "+919800000077"}
    rewarded = nector_event("walletreward_create", **customer,
                            created_at="2026-11-21T16:02:01+00:00")
    coupon = nector_event("coupon_create", **customer, created_at="2026-11-21T16:02:02+00:00")
    expiring = nector_event("coinexpirynotify_create", **{**customer, "user_email": ""},
                            created_at="2026-11-21T16:02:03+00:00")
    nobody = nector_event("walletreward_create", user_customer_id="cust-88", user_email="",
                          user_mobile="", created_at="2026-11-21T16:02:04+00:00")
    deliveries = {"d-rewarded": rewarded, "d-coupon": coupon, "d-expiring": expiring,
                  "d-nobody": nobody}
    for delivery_id, body in deliveries.items():
        answer = post_nector(web, body, delivery_id)
        assert answer.status_code == 200, answer.text
    wait_for(all_final(store, (f"nector:{d}:contlo" for d in deliveries)), 60,
             "every Nector event settled")

    profile = {"name": "Asha Rao", "tier": "Gold", "referral_code": "ASHA10",
               "customer_id": "cust-77"}
    own = [{k: v for k, v in json.loads(b).items() if not k.startswith(("user_", "business_"))
            and k != "created_at"} for b in (rewarded, coupon, expiring)]
    assert [{k: item[k] for k in ("event", "email", "phone_number", "properties",
                                  "profile_properties")} for item in relay_sims.contlo()] == [
        {"event": "Wallet Coins Rewarded", "email": "asha@example.in",
         "phone_number": "+919800000077", "properties": own[0], "profile_properties": profile},
        {"event": "Coupon Is Created", "email": "asha@example.in",
         "phone_number": "+919800000077", "properties": own[1], "profile_properties": profile},
        {"event": "Coins Expiring", "email": None, "phone_number": "+919800000077",
         "properties": own[2], "profile_properties": profile},
    ]
    failed = delivery(store, "nector:d-nobody:contlo")
    assert (failed.state, failed.reason, failed.attempts) == ("failed", NO_CONTACT, 0)
    assert relay_sims.stats("contlo")["requests"] == 3  # no call for the customer without one


def test_faults_over_http_retried_refused_or_counted_ambiguous_as_each_deserves(
    relay_sims: RelaySims, web: WebProcess, start_worker: Callable[..., CeleryProcess],
    store: Store, worker_env: dict[str, str],
) -> None:
    start_worker()

    # 503, then Atreemo is back: retried, delivered once, nothing ambiguous.
    relay_sims.fault("atreemo", kind="status", status=503)
    unavailable = card_event("card.balance_adjusted", 7101, 1)
    accepted(web, unavailable)
    wait_for(all_final(store, [toggle_key(unavailable)]), 30, "the 503'd event delivered")
    first = delivery(store, toggle_key(unavailable))
    assert (first.state, first.attempts, first.ambiguous) == ("delivered", 2, 0)
    assert relay_sims.atreemo_ids() == [event_id(unavailable)]

    # 429 with Retry-After: 2: the next attempt is planned for then, and not sent before.
    relay_sims.fault("atreemo", kind="status", status=429, retry_after="2")
    throttled = card_event("card.balance_adjusted", 7102, 1)
    accepted(web, throttled)
    planned: list[DeliveryRow] = []

    def retry_planned() -> bool:
        found = delivery(store, toggle_key(throttled))
        if found.next_attempt_at is not None and "429" in (found.reason or ""):
            planned.append(found)
        return bool(planned) or found.final

    wait_for(retry_planned, 30, "the 429's retry planned")
    assert planned, "the retry was planned and seen before it ran"
    due = planned[0].next_attempt_at
    assert due is not None
    assert (due - planned[0].updated_at).total_seconds() == pytest.approx(2, abs=0.05)
    wait_for(all_final(store, [toggle_key(throttled)]), 30, "the throttled event delivered")
    arrived = relay_sims.atreemo()[-1]
    assert arrived["id"] == event_id(throttled)
    assert arrived["received_at"] >= due.timestamp()
    assert delivery(store, toggle_key(throttled)).state == "delivered"

    # A refusal (422): failed at once with Atreemo's reason; the card's later event goes on.
    relay_sims.fault("atreemo", kind="status", status=422, body="text")
    refused = card_event("card.balance_adjusted", 7103, 1)
    later = card_event("card.balance_adjusted", 7103, 2)
    accepted(web, refused)
    accepted(web, later)
    wait_for(all_final(store, [toggle_key(refused), toggle_key(later)]), 30,
             "the refused card's events settled")
    failed = delivery(store, toggle_key(refused))
    assert (failed.state, failed.reason, failed.attempts) == (
        "failed", "HTTP 422: 422 Unprocessable Entity", 1)
    assert delivery(store, toggle_key(later)).state == "delivered"
    assert relay_sims.atreemo_ids()[-1] == event_id(later)

    # Applied, then the connection dropped: Atreemo got it, we cannot know: sent again,
    # counted once on the row, in `relay status` and on /metrics.
    relay_sims.fault("atreemo", kind="drop_after_apply")
    dropped = card_event("card.balance_adjusted", 7104, 1)
    accepted(web, dropped)
    wait_for(all_final(store, [toggle_key(dropped)]), 30, "the dropped event delivered")
    lost = delivery(store, toggle_key(dropped))
    assert (lost.state, lost.attempts, lost.ambiguous) == ("delivered", 2, 1)
    assert relay_sims.atreemo_ids() == [event_id(b) for b in (
        unavailable, throttled, later, dropped, dropped)]

    status = subprocess.run([str(BIN / "pointsync"), "relay", "status", "--json"],
                            env={**os.environ, **worker_env}, capture_output=True,
                            text=True, timeout=60, check=True)
    routes = {line["route"]: line for line in json.loads(status.stdout)}
    assert {k: routes["toggle-atreemo"][k] for k in (
        "received", "delivered", "filtered", "failed", "ambiguous")} == {
        "received": 0, "delivered": 4, "filtered": 0, "failed": 1, "ambiguous": 1}
    metrics = httpx.get(f"{web.url}/metrics", timeout=30, trust_env=False).text
    assert 'pointsync_relay_ambiguous_total{route="toggle-atreemo"} 1.0' in metrics
    assert 'pointsync_relay_deliveries{route="toggle-atreemo",state="failed"} 1.0' in metrics
