"""Queued faults: each is consumed by the next `count` requests to its target."""

import random
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sims.errors import bad_request
from sims.targets import TARGETS

# status: answer `status` and apply nothing; latency: wait `seconds`, then serve normally;
# drop: close the connection without answering, apply nothing; drop_after_apply: serve
# (apply the write) but close the connection instead of answering; expire: answer 410.
KINDS = frozenset({"status", "latency", "drop", "drop_after_apply", "expire"})
BODIES = frozenset({"json", "text", "html"})


@dataclass(slots=True)
class Fault:
    kind: str
    remaining: int
    status: int = 503
    retry_after: str | None = None
    body: str = "json"
    seconds: float = 0.5


class Faults:
    def __init__(self) -> None:
        self._queues: dict[str, deque[Fault]] = {}

    def add(self, target: str, fault: Fault) -> None:
        self._queues.setdefault(target, deque()).append(fault)

    def take(self, target: str) -> Fault | None:
        """The fault for this request to `target`, if one is queued (first queued, first used)."""
        queue = self._queues.get(target)
        if not queue:
            return None
        fault = queue[0]
        fault.remaining -= 1
        if fault.remaining == 0:
            queue.popleft()
        return fault

    def clear(self) -> None:
        self._queues.clear()

    def pending(self) -> int:
        return sum(fault.remaining for queue in self._queues.values() for fault in queue)


# Kinds a request may draw by chance (SimConfig.fault_shares): the status is in the name.
CHANCE_KINDS = frozenset({"drop", "drop_after_apply"})
STATUS_PREFIX = "status_"


def is_chance_kind(kind: object) -> bool:
    if not isinstance(kind, str):
        return False
    if kind in CHANCE_KINDS:
        return True
    code = kind.removeprefix(STATUS_PREFIX)
    return kind.startswith(STATUS_PREFIX) and code.isdigit() and 100 <= int(code) <= 599


def drawn_fault(shares: Mapping[str, float], rng: random.Random) -> Fault | None:
    """A fault drawn with the configured shares (checked by is_chance_kind), or None."""
    if not shares:
        return None
    roll = rng.random()
    for kind, share in shares.items():
        if roll < share:
            if kind.startswith(STATUS_PREFIX):
                return Fault("status", 1, status=int(kind.removeprefix(STATUS_PREFIX)))
            return Fault(kind, 1)
        roll -= share
    return None


def checked_fault(spec: dict[str, Any], kinds: frozenset[str]) -> Fault:
    """The fault a `/_sim/faults` body asks for (kind, count, status, retry_after, body,
    seconds), of one of `kinds`; refuses anything unknown or out of range."""
    kind = spec.get("kind")
    if kind not in kinds:
        raise bad_request(f"kind must be one of {', '.join(sorted(kinds))}")
    fault = Fault(
        kind=kind,
        remaining=spec.get("count", 1),
        status=spec.get("status", 503),
        retry_after=spec.get("retry_after"),
        body=spec.get("body", "json"),
        seconds=spec.get("seconds", 0.5),
    )
    if type(fault.remaining) is not int or fault.remaining < 1:
        raise bad_request("count must be an integer >= 1")
    if type(fault.status) is not int or not 100 <= fault.status <= 599:
        raise bad_request("status must be an HTTP status code")
    if fault.retry_after is not None and not isinstance(fault.retry_after, str):
        fault.retry_after = str(fault.retry_after)  # "retry_after": 2 means the header "2"
    if fault.body not in BODIES:
        raise bad_request(f"body must be one of {', '.join(sorted(BODIES))}")
    if type(fault.seconds) not in (int, float) or fault.seconds < 0:
        raise bad_request("seconds must be a number >= 0")
    return fault


def parse_fault(spec: dict[str, Any]) -> tuple[str, Fault]:
    """(target, fault) from a `/_sim/faults` body; refuses anything unknown or out of range."""
    target = spec.get("target")
    if target not in TARGETS:
        raise bad_request(f"target must be one of {', '.join(sorted(TARGETS))}")
    fault = checked_fault(spec, KINDS)
    if fault.kind == "expire" and target != "treazure.balances_result":
        raise bad_request("kind expire only applies to treazure.balances_result")
    return target, fault
