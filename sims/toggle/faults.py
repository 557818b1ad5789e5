"""Faults of the Toggle simulator, queued through `/_sim/faults` like the other simulators'.

Target "toggle" hits the next requests whatever they do; a root field name (`createOrder`,
`loginUser`, `Cards`, …) only requests whose first root field it is (checked first)."""

from typing import Any

from sims.errors import bad_request
from sims.faults import Fault
from sims.toggle.schema import SCHEMA

# status: answer `status`, apply nothing; latency: wait `seconds`, then serve; drop: close
# without answering or applying; drop_after_apply: apply, then close instead of answering;
# throttle: answer Throttled (429) and apply nothing.
KINDS = frozenset({"status", "latency", "drop", "drop_after_apply", "throttle"})
ANY = "toggle"
TARGETS = frozenset(
    {ANY, *SCHEMA.query_type.fields, *SCHEMA.mutation_type.fields}  # type: ignore[union-attr]
)


def parse_toggle_fault(spec: dict[str, Any]) -> tuple[str, Fault]:
    target, kind = spec.get("target", ANY), spec.get("kind")
    if target not in TARGETS:
        raise bad_request(f"target must be one of {', '.join(sorted(TARGETS))}")
    if kind not in KINDS:
        raise bad_request(f"kind must be one of {', '.join(sorted(KINDS))}")
    fault = Fault(kind=kind, remaining=spec.get("count", 1), status=spec.get("status", 503),
                  body=spec.get("body", "json"), seconds=spec.get("seconds", 0.5))
    if type(fault.remaining) is not int or fault.remaining < 1:
        raise bad_request("count must be an integer >= 1")
    if type(fault.status) is not int or not 100 <= fault.status <= 599:
        raise bad_request("status must be an HTTP status code")
    if fault.body not in ("json", "text", "html"):
        raise bad_request("body must be one of html, json, text")
    if type(fault.seconds) not in (int, float) or fault.seconds < 0:
        raise bad_request("seconds must be a number >= 0")
    return target, fault
