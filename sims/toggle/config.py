"""The Toggle simulator's tunable behaviour, set at start-up or live through `/_sim/config`."""

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Self

from sims.checks import Check, integer, text, updated
from sims.errors import bad_request

# The contract's numbers: 8,000 credits at most, 5,000 restored every 10 minutes.
DEFAULT_MAX_CREDITS = 8000
DEFAULT_REFILL_PER_SECOND = 5000 / 600
DEFAULT_SITES = {"london": "EPOS-LDN-1", "manchester": "EPOS-MAN-1", "leeds": "EPOS-LDS-1"}


@dataclass(frozen=True)
class ToggleConfig:
    username: str = "sim-toggle"
    password: str = "sim-toggle-secret"
    user_id: int = 17
    account_id: int = 1001
    currency: str = "GBP"
    credits_max: int = DEFAULT_MAX_CREDITS
    credits_refill_per_second: float = DEFAULT_REFILL_PER_SECOND
    token_ttl: float = 3600.0  # seconds a token lives (the contract's 60 minutes)
    # Past this share of its life a token is replaced: the answer carries X-Authorization.
    token_refresh_after: float = 0.5
    token_grace: float = 60.0  # seconds a replaced token keeps working (0: not at all)
    sites: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_SITES))

    def updated(self, changes: Mapping[str, Any]) -> Self:
        """A copy with `changes` applied; refuses unknown names and out-of-range values."""
        return updated(self, changes, _CHECKS)

    def as_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "sites": dict(self.sites)}

    def sites_setting(self) -> str:
        """The worker's TOGGLE_SITES value for these sites (`name=reference,…`)."""
        return ",".join(f"{name}={ref}" for name, ref in self.sites.items())


def _number(maximum: float | None = None) -> Callable[[str, Any], float]:
    def check(name: str, value: Any) -> float:
        if type(value) not in (int, float) or value < 0 or (maximum and value > maximum):
            bound = f" and <= {maximum}" if maximum else ""
            raise bad_request(f"{name} must be a number >= 0{bound}")
        return float(value)

    return check


def _sites(name: str, value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
        isinstance(key, str) and isinstance(ref, str) and key and ref for key, ref in value.items()
    ):
        raise bad_request(f"{name} must map site names to unit_epos_reference strings")
    return dict(value)


_CHECKS: dict[str, Check] = {
    "username": text,
    "password": text,
    "user_id": integer(1),
    "account_id": integer(1),
    "currency": text,
    "credits_max": integer(1),
    "credits_refill_per_second": _number(),
    "token_ttl": _number(),
    "token_refresh_after": _number(1.0),
    "token_grace": _number(),
    "sites": _sites,
}
