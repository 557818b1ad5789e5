"""The destinations, as the delivery flow sees them: `screen` an event (filtered, or failed
without a call, or None to send it), then `send` it once; sending raises worker.base.http's
Retryable / Ambiguous / Rejected as the destination's client does.

Atreemo gets Toggle's envelope byte for byte; Contlo one track call mapped from Nector's
body (worker/systems/contlo/mapping.py).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from worker.store.outbox import FAILED
from worker.store.relays import FILTERED, EventRow
from worker.systems.contlo.mapping import ContloCall, NoContact, contlo_call_for
from worker.systems.toggle.webhooks import CRM_TYPES, EMAIL_TRIGGERS

ATREEMO, CONTLO = "atreemo", "contlo"


@dataclass(frozen=True)
class Screened:
    """An event that ends without a call: `filtered` or `failed`, and why."""

    state: str
    reason: str


class Destination(Protocol):
    name: str

    def screen(self, event: EventRow) -> Screened | None: ...

    async def send(self, event: EventRow) -> None: ...


class AtreemoSender(Protocol):
    async def deliver(self, raw_body: bytes) -> None: ...


class ContloSender(Protocol):
    async def track(self, event: str, email: str | None, phone: str | None,
                    properties: dict[str, Any], profile_properties: dict[str, Any]) -> None: ...


class Atreemo:
    name = ATREEMO

    def __init__(self, client: AtreemoSender, sends_emails: bool) -> None:
        self.client = client
        self.sends_emails = sends_emails

    def screen(self, event: EventRow) -> Screened | None:
        if event.topic in EMAIL_TRIGGERS and not self.sends_emails:
            return Screened(FILTERED, "an email trigger, and ATREEMO_SENDS_EMAILS is off "
                                      "(Toggle sends that email)")
        if event.topic not in CRM_TYPES:
            return Screened(FILTERED, f"{event.topic} is not one of the CRM integration's "
                                      "event types")
        return None

    async def send(self, event: EventRow) -> None:
        await self.client.deliver(event.body)


class Contlo:
    name = CONTLO

    def __init__(self, client: ContloSender, names: Mapping[str, str] | None = None) -> None:
        self.client = client
        self.names = names

    def _call(self, event: EventRow) -> ContloCall | NoContact:
        return contlo_call_for(json.loads(event.body), event.topic, self.names)

    def screen(self, event: EventRow) -> Screened | None:
        call = self._call(event)
        return Screened(FAILED, call.reason) if isinstance(call, NoContact) else None

    async def send(self, event: EventRow) -> None:
        call = self._call(event)
        assert isinstance(call, ContloCall)  # screened before
        await self.client.track(call.event, call.email, call.phone, call.properties,
                                call.profile_properties)
