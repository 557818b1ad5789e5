"""Queueing the task that books recorded webhook rows, and remembering when that failed.

The row is committed before anything is queued, so a failed send loses nothing: the
resender (resend.py) queues it once Redis answers again, the sweep as a last resort.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import redis
from aiohttp import web

from worker.base.point_request import PointRequest
from worker.base.settings import WebSettings
from worker.faces.web.context import SETTINGS, short_error
from worker.flows.points.batch import BOOK_TURN, BOOK_TURN_TTL_MS
from worker.store.engine import utcnow

log = logging.getLogger("pointsync.web")

# `pointsync.add_points` kwargs -> anything (the send's handle, unread)
Enqueue = Callable[[dict[str, str]], object]
ENQUEUE: web.AppKey[Enqueue] = web.AppKey("enqueue")
SOURCE = "webhook"  # the ledger's source of the rows the webhook records
RECORDED_MARGIN = timedelta(seconds=60)
# Seconds the turn mark's SET may take: with Redis down the webhook still answers promptly.
TURN_TIMEOUT = 2.0
# A round starts this long after its first row was recorded: a task and a drain cost about
# as much CPU as the bookings of several rows, and at 50/s a round started at once booked
# 1.3 rows. A small share of the 1 s a booking may take to reach Engage.
BOOK_GATHER_SECONDS = 0.1


class Unsent:
    """When this process first failed to queue a recorded row since it last caught up
    (None: nothing left unsent); `noticed` wakes the resender."""

    def __init__(self) -> None:
        self.since: datetime | None = None
        self.noticed = asyncio.Event()

    def note(self, since: datetime) -> None:
        self.since = since if self.since is None else min(self.since, since)
        self.noticed.set()

    def take(self) -> datetime | None:
        since, self.since = self.since, None
        self.noticed.clear()
        return since


UNSENT = web.AppKey("unsent", Unsent)


def task_kwargs(contact_id: str, amount: str, description: str, reference: str) -> dict[str, str]:
    """The `pointsync.add_points` arguments, as the webhook and the resender send them."""
    return {"contact_id": contact_id, "amount": amount, "description": description,
            "reference": reference}


def queue_recorded(app: web.Application, point_request: PointRequest) -> datetime | None:
    """Queue the booking of a committed row (blocking: run in the app's thread pool, right
    after the commit). On failure, returns since when the resender should look for rows
    to queue (the caller notes it on the loop: `Unsent` is not thread-safe)."""
    kwargs = task_kwargs(point_request.contact_id, str(point_request.amount),
                         point_request.description, point_request.reference)
    tried_at = utcnow()
    try:
        app[ENQUEUE](kwargs)
    except Exception as exc:  # the row is committed: queued again once Redis is back
        log.warning("webhook %s: recorded, but queueing its task failed (%s); "
                    "it is queued once Redis answers again", point_request.reference,
                    short_error(exc, app[SETTINGS]))
        # It was recorded just before; the margin costs at most a second message for a
        # row nobody took up yet, which that row's lease makes harmless.
        return tried_at - RECORDED_MARGIN
    return None


def task_sender(settings: WebSettings, task: str, countdown: float | None = None
                ) -> Callable[[dict[str, Any]], object]:
    """Queue `task` on the broker, fire-and-forget: the web process's rows are the outcome,
    so no result is kept. The Celery sender is built at the first send. `countdown`: the
    task runs that many seconds after it is queued.

    A Celery app of its own without a result backend: with one, every send subscribes this
    long-lived process to the task's result channel, and with Redis down a send stalls ~20 s
    on backend reconnects.
    """
    senders: list[Any] = []
    policy = {"max_retries": 2, "interval_start": 0, "interval_step": 0.5, "interval_max": 1}

    def send(kwargs: dict[str, Any]) -> object:
        if not senders:
            from celery import Celery

            from worker.faces.celery.app import celery_config

            sender = Celery(f"pointsync-web-{task}", set_as_current=False)
            sender.conf.update(celery_config(settings), result_backend=None, beat_schedule={})
            senders.append(sender)
        return senders[0].send_task(task, kwargs=kwargs, retry_policy=policy,
                                    ignore_result=True, countdown=countdown)

    return send


def celery_enqueue(settings: WebSettings) -> Enqueue:
    """Make sure a `pointsync.book_received` task is queued for a recorded transaction.

    One task books every row recorded by the time it runs (flows/points/batch.py): the
    first row to find no turn mark in Redis takes it and queues the task; the rows after
    it, until that task starts, find the mark and need no message of their own. The task
    starts BOOK_GATHER_SECONDS after it is queued, so a round books the rows recorded
    meanwhile too. The row's arguments are not sent: the task reads the ledger.
    """
    send = task_sender(settings, "pointsync.book_received", countdown=BOOK_GATHER_SECONDS)
    clients: list[redis.Redis] = []

    def enqueue(kwargs: dict[str, str]) -> object:
        if not clients:
            clients.append(redis.Redis.from_url(
                settings.REDIS_URL, socket_timeout=TURN_TIMEOUT,
                socket_connect_timeout=TURN_TIMEOUT))
        turns = clients[0]
        if not turns.set(BOOK_TURN, "1", nx=True, px=BOOK_TURN_TTL_MS):
            return None  # a task is queued and has not read the ledger yet
        try:
            return send({})
        except Exception:  # not queued: the next row (or the resender) takes the turn
            with contextlib.suppress(Exception):
                turns.delete(BOOK_TURN)
            raise

    return enqueue
