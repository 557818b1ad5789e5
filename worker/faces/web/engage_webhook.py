"""POST /webhooks/engage: Engage's signed `loyalty.addPoints`, recorded before it is
answered.

A delivery is answered `202` only once its ledger row is committed; the task that books it
is queued afterwards, and a row whose message was lost is finished by the resender or the
scheduled sweep. The route knows the signature scheme only as a SignatureVerifier.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from aiohttp import web

from worker.base.arguments import InvalidArgument
from worker.base.point_request import PointRequest, validate_request
from worker.base.signatures import BadSignature, SignatureVerifier
from worker.faces.web.context import LEDGER, Refused, blocking, refuse
from worker.faces.web.queueing import SOURCE, UNSENT, queue_recorded
from worker.flows.points.record import record
from worker.store.ledger import Ledger
from worker.systems.engage.webhooks import (
    ADD_POINTS,
    BadEvent,
    event_payload,
    event_reference,
    parse_event,
)

log = logging.getLogger("pointsync.web")

REUSED = "reference: already used for a different transaction"
VERIFIER: web.AppKey[SignatureVerifier] = web.AppKey("verifier")


async def engage_webhook(request: web.Request) -> web.Response:
    body = await request.read()
    try:
        try:
            request.app[VERIFIER].verify(body, request.headers)
            event = parse_event(body)
            if event["eventType"] != ADD_POINTS:
                return web.json_response({"ignored": event["eventType"]})
            payload = event_payload(event)
            reference = event_reference(event, request.headers)
        except BadSignature as exc:
            refuse(401, str(exc))
        except BadEvent as exc:
            refuse(400, str(exc))
        status, answer, unsent = await blocking(
            request.app, _record_and_queue, request.app, payload, reference)
    except Refused as refused:
        log.warning("webhook refused (%s): %s", refused.status, refused.error)
        return web.json_response({"error": refused.error}, status=refused.status)
    if unsent is not None:
        request.app[UNSENT].note(unsent)
    return web.json_response(answer, status=status)


def _record_and_queue(
    app: web.Application, payload: dict[str, Any], reference: str
) -> tuple[int, dict[str, Any], datetime | None]:
    """(status, answer, since when rows wait for the resender or None): the row committed,
    then its booking queued, in one trip to the thread pool."""
    status, answer, queue = _record(app[LEDGER], payload, reference)
    return status, answer, None if queue is None else queue_recorded(app, queue)


def _record(
    ledger: Ledger, payload: dict[str, Any], reference: str
) -> tuple[int, dict[str, Any], PointRequest | None]:
    """(status, answer, request to queue or None), with the row committed."""
    contact, description = payload.get("contactId"), payload.get("description")
    try:
        point_request = validate_request(contact, payload.get("amount"), description, reference)
    except InvalidArgument as exc:
        reason = str(exc)
        row, _ = ledger.record_invalid(
            reference, contact if isinstance(contact, str) else "", description, SOURCE, reason)
        if row.amount_cents is not None:  # the reference belongs to a valid transaction
            refuse(409, REUSED)
        log.warning("webhook %s refused: %s", reference, reason)
        return 422, {"error": reason, "reference": reference}, None
    try:
        row, created = record(ledger.store, point_request, SOURCE, expect_new=True)
    except InvalidArgument:
        refuse(409, REUSED)
    log.info("webhook %s: %s %s points for %s (%s)", reference,
             "recorded" if created else "redelivered", point_request.amount,
             point_request.contact_id, row.state)
    answer = {"reference": row.reference, "state": row.state, "duplicate": not created}
    return 202, answer, None if row.final else point_request
