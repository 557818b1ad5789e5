"""Faults of the Toggle simulator, queued through `/_sim/faults` like the other simulators'.

Target "toggle" hits the next requests whatever they do; a root field name (`createOrder`,
`loginUser`, `Cards`, …) only requests whose first root field it is (checked first)."""

from typing import Any

from sims.errors import bad_request
from sims.faults import Fault, checked_fault
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
    target = spec.get("target", ANY)
    if target not in TARGETS:
        raise bad_request(f"target must be one of {', '.join(sorted(TARGETS))}")
    return target, checked_fault(spec, KINDS)
