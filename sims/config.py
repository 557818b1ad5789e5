"""The sim's tunable behaviour, changed at start-up (CLI) or live through `/_sim/config`."""

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Self

from sims.checks import Check, integer, text, updated
from sims.errors import bad_request
from sims.faults import is_chance_kind
from sims.targets import TARGETS


@dataclass(frozen=True)
class SimConfig:
    engage_rate_limit: int = 50  # Engage requests admitted per sliding second per apikey
    job_running_polls: int = 1  # result polls answered 202 Running before the first page
    job_retry_after: str | None = "0.1"  # Retry-After on those 202s; None sends no header
    page_size: int = 5000  # items per balances result page
    job_ttl: float = 3600.0  # seconds a balances job's result stays available (then 410)
    token_ttl: float = 3600.0  # seconds a Treazure access token stays valid
    loyalty_id: str = "points"  # Treazure loyaltyPointDefinitionId
    definition_id: int = 1  # Engage point definitionId
    client_id: str = "sim-client"
    client_secret: str = "sim-secret"
    api_key: str = "sim-key"  # Engage apikey
    latency: Mapping[str, float] = field(default_factory=dict)  # target → seconds per request
    # target → {fault kind → share of requests}: each request draws at most one fault
    # (queued faults go first); kinds: drop, drop_after_apply, status_<code> (e.g. status_503).
    fault_shares: Mapping[str, Mapping[str, float]] = field(default_factory=dict)

    def updated(self, changes: Mapping[str, Any]) -> Self:
        """A copy with `changes` applied; refuses unknown names and out-of-range values."""
        return updated(self, changes, _CHECKS)

    def as_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "latency": dict(self.latency),
                "fault_shares": {t: dict(kinds) for t, kinds in self.fault_shares.items()}}


def _seconds(name: str, value: Any) -> float:
    if type(value) not in (int, float) or value < 0:
        raise bad_request(f"{name} must be a number of seconds >= 0")
    return float(value)


def _retry_after(name: str, value: Any) -> str | None:
    # Sent verbatim as the header, so a number is kept in its shortest text form ("0.1", "2").
    if value is None or isinstance(value, str):
        return value
    return text(name, format(_seconds(name, value), "g"))


def _latency(name: str, value: Any) -> dict[str, float]:
    if not isinstance(value, dict) or not set(value) <= TARGETS:
        raise bad_request(f"{name} must map targets ({', '.join(sorted(TARGETS))}) to seconds")
    return {target: _seconds(f"{name}.{target}", delay) for target, delay in value.items()}


def _fault_shares(name: str, value: Any) -> dict[str, dict[str, float]]:
    if not isinstance(value, dict) or not set(value) <= TARGETS:
        raise bad_request(f"{name} must map targets ({', '.join(sorted(TARGETS))}) to shares")
    return {target: _shares(f"{name}.{target}", kinds) for target, kinds in value.items()}


def _shares(name: str, value: Any) -> dict[str, float]:
    if not isinstance(value, dict) or not all(map(is_chance_kind, value)):
        raise bad_request(f"{name} must map fault kinds (drop, drop_after_apply, "
                          "status_<code>) to shares")
    shares = {kind: _seconds(f"{name}.{kind}", share) for kind, share in value.items()}
    if sum(shares.values()) > 1:
        raise bad_request(f"{name}: the shares add up to more than 1")
    return shares


_CHECKS: dict[str, Check] = {
    "engage_rate_limit": integer(1),
    "job_running_polls": integer(0),
    "job_retry_after": _retry_after,
    "page_size": integer(1),
    "job_ttl": _seconds,
    "token_ttl": _seconds,
    "loyalty_id": text,
    "definition_id": integer(0),
    "client_id": text,
    "client_secret": text,
    "api_key": text,
    "latency": _latency,
    "fault_shares": _fault_shares,
}
