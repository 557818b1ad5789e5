"""The doctor's relay rows: each destination (Atreemo, Contlo), the relays' own settings and
their backlog.

Neither destination has a read-only call, and each acts on every event it accepts (an
email, a doubled interaction), so the probes are requests the contract says they refuse
(worker/systems/atreemo/probe.py, contlo/probe.py): nothing is delivered or tracked. A
relay that is not configured is skipped; one that is partly configured is named with what
it lacks (the worker and web would not start), and the other checks go on without it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import httpx
from pydantic import ValidationError

from worker.base.http import error_detail
from worker.base.logs import Redactor
from worker.base.settings import NECTOR_RELAY_SETTINGS, TOGGLE_RELAY_SETTINGS, Settings
from worker.faces.cli.doctor_result import FAIL, OK, SKIP, WARN, Check
from worker.faces.cli.output import age_text
from worker.faces.runtime import get_store
from worker.flows.relays.status import route_status
from worker.store.relays import Relays
from worker.systems.atreemo import probe as atreemo_probe
from worker.systems.contlo import probe as contlo_probe

# Per relay: the settings it needs all of, and the doctor row of its destination.
RELAYS = {"toggle": (TOGGLE_RELAY_SETTINGS, "atreemo"), "nector": (NECTOR_RELAY_SETTINGS, "contlo")}
NAMES = ("atreemo", "contlo", "relay backlog")
# As alerts.yml's PointsyncRelayBehind: an event still undelivered after an hour.
BEHIND_SECONDS = 3600
DOCS = "docs/relays.md"


def partial_relays() -> dict[str, list[str]]:
    """Per relay set only in part, the settings it lacks; {} when the settings load, or
    fail for another reason too (the configuration row says which)."""
    try:
        Settings()
    except ValidationError as exc:
        missing = {str(e["loc"][0]) for e in exc.errors() if e["type"] == "missing"
                   and e["loc"]}
        wrong = [e for e in exc.errors() if not (e["type"] == "missing" and e["loc"])]
        found = {relay: [name for name in names if name in missing]
                 for relay, (names, _) in RELAYS.items()}
        found = {relay: names for relay, names in found.items() if names}
        named = {name for names in found.values() for name in names}
        return found if found and not wrong and named == missing else {}
    return {}


def without_partial_relays(partial: dict[str, list[str]]) -> Settings | None:
    """The settings with each partly set relay turned off, so the other checks can run."""
    if not partial:
        return None
    off = {name: None for relay in partial for name in RELAYS[relay][0]}
    try:
        return Settings(**off)
    except ValidationError:
        return None


async def destination_checks(settings: Settings) -> list[Check]:
    """The Atreemo and Contlo rows: skipped, partly configured, or probed (at once)."""
    partial = partial_relays()
    probes: list[Awaitable[Check]] = []
    for relay, (names, destination) in RELAYS.items():
        if relay in partial:
            probes.append(_done(_partly_set(destination, names, partial[relay])))
        elif not _enabled(settings, relay):
            probes.append(_done(Check(destination, SKIP, f"not configured ({', '.join(names)} "
                                                        "unset): the relay is off")))
        else:
            probes.append(PROBES[destination](settings))
    return list(await asyncio.gather(*probes))


async def _done(check: Check) -> Check:
    return check


def _enabled(settings: Settings, relay: str) -> bool:
    return settings.toggle_relay_enabled if relay == "toggle" else \
        settings.nector_relay_enabled


def _partly_set(destination: str, names: tuple[str, ...], missing: list[str]) -> Check:
    given = [name for name in names if name not in missing]
    return Check(destination, FAIL,
                 f"partly configured: {', '.join(missing)} not set ({', '.join(given)} "
                 "set); the worker and web process will not start like this",
                 f"set {', '.join(missing)}, or unset {', '.join(given)} to leave the relay "
                 f"off ({DOCS})")


async def check_atreemo(settings: Settings, http: httpx.AsyncClient | None = None) -> Check:
    """ATREEMO_WEBHOOK_URL answers, and refuses an unsigned empty post as it should."""
    url = str(settings.ATREEMO_WEBHOOK_URL)
    not_checked = ("not checked: ATREEMO_WEBHOOK_SECRET (only a signed event would test it, "
                   "and Atreemo would process that event)")
    try:
        answer = await atreemo_probe.probe(settings, http)
    except httpx.HTTPError as exc:
        return _unreachable("atreemo", url, exc, "ATREEMO_WEBHOOK_URL", settings)
    status = answer.status_code
    said = _said(answer, settings)
    if status in atreemo_probe.REFUSED:
        emails = ("the five email-trigger events go too (ATREEMO_SENDS_EMAILS)"
                  if settings.ATREEMO_SENDS_EMAILS else
                  "the five email-trigger events are filtered (ATREEMO_SENDS_EMAILS off)")
        return Check("atreemo", OK,
                     f"{url} answers (DNS, connection{_tls(url)}) and refused an unsigned, "
                     f"empty post with {status} as it should; {not_checked}; {emails}")
    if answer.is_success:
        return Check("atreemo", FAIL,
                     f"{url} accepted an unsigned post ({status}): it is not an endpoint that "
                     "checks Toggle-Signature", "check ATREEMO_WEBHOOK_URL with Acteol (the "
                     "Toggle ingestion URL they gave)")
    return _http_failure("atreemo", url, status, said, "ATREEMO_WEBHOOK_URL",
                         "the Toggle ingestion URL Acteol gave")


async def check_contlo(settings: Settings, http: httpx.AsyncClient | None = None) -> Check:
    """CONTLO_API_KEY is not refused, told by a track Contlo must refuse (no contact)."""
    url = str(settings.CONTLO_BASE_URL)
    try:
        answer = await contlo_probe.probe(settings, http)
    except httpx.HTTPError as exc:
        return _unreachable("contlo", url, exc, "CONTLO_BASE_URL", settings)
    status = answer.status_code
    said = _said(answer, settings)
    if status == contlo_probe.KEY_TAKEN:
        return Check("contlo", OK,
                     f"{url} answers (DNS, connection{_tls(url)}) and took CONTLO_API_KEY: a "
                     f"track with neither email nor phone was refused with {status} (not "
                     f"401), so nothing was tracked ({said})")
    if status in (401, 403):
        return Check("contlo", FAIL, f"{url}: {status} {said}",
                     "CONTLO_API_KEY was refused: copy the private API key from Contlo's "
                     "settings")
    if answer.is_success:
        return Check("contlo", WARN,
                     f"{url} accepted a track with neither email nor phone ({status}): the "
                     "key works, but Contlo does not answer as the contract says",
                     f"tell the maintainers: {DOCS} assumes such a track is refused")
    return _http_failure("contlo", url, status, said, "CONTLO_BASE_URL",
                         "Contlo's API host, https://api.contlo.com by default")


PROBES: dict[str, Callable[[Settings], Awaitable[Check]]] = {
    "atreemo": check_atreemo, "contlo": check_contlo}


def _tls(url: str) -> str:
    return ", TLS" if url.startswith("https:") else ""


def _said(answer: httpx.Response, settings: Settings) -> str:
    return Redactor.for_settings(settings).one_line(error_detail(answer), 120)


def _unreachable(name: str, url: str, exc: httpx.HTTPError, variable: str,
                 settings: Settings) -> Check:
    reason = Redactor.for_settings(settings).one_line(str(exc) or type(exc).__name__, 160)
    return Check(name, FAIL, f"{url} cannot be reached: {type(exc).__name__}: {reason}",
                 f"check {variable} and that this host can reach it (DNS, firewall, proxy, "
                 "TLS certificate)")


def _http_failure(name: str, url: str, status: int, said: str, variable: str,
                  meant: str) -> Check:
    detail = f"{url}: {status} {said}"
    if status == 429 or status >= 500:
        return Check(name, WARN, detail, "the service is busy or failing; deliveries are "
                                         "retried; try again later")
    return Check(name, FAIL, detail, f"check {variable} ({meant})")


def check_backlog(settings: Settings) -> Check:
    """The oldest undelivered event per route: a warning once it has waited an hour."""
    if not (settings.toggle_relay_enabled or settings.nector_relay_enabled):
        return Check("relay backlog", SKIP, "no relay is configured")
    routes = [route for route in route_status(Relays(get_store(settings)))
              if _enabled(settings, route["source"])]
    parts, behind = [], []
    for route in routes:
        oldest = route["oldest_undelivered_seconds"]
        waiting = "nothing waiting" if not route["received"] else \
            f"{route['received']} waiting" + (
                f", the oldest {age_text(oldest)}" if oldest is not None else "")
        failed = f", {route['failed']} failed" if route["failed"] else ""
        parts.append(f"{route['source']} → {route['destination']}: {waiting}{failed}")
        if oldest is not None and oldest > BEHIND_SECONDS:
            behind.append(route["route"])
    detail = "; ".join(parts)
    if behind:
        return Check("relay backlog", WARN, f"{detail} (over {age_text(BEHIND_SECONDS)}: "
                     f"{', '.join(behind)})",
                     "see the destination's row above; pointsync relay list --state received "
                     "shows the waiting deliveries, pointsync relay show KEY the last reason")
    return Check("relay backlog", OK, detail)
