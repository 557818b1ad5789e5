"""Names of the simulated endpoints: the keys of faults, latency settings and request stats."""

TREAZURE_TARGETS = (
    "treazure.token",
    "treazure.balances_start",
    "treazure.balances_result",
    "treazure.transaction",
    "treazure.history",
    "treazure.account",
)
ENGAGE_TARGETS = ("engage.balances", "engage.accounts")
TARGETS = frozenset(TREAZURE_TARGETS + ENGAGE_TARGETS)


def is_engage(target: str) -> bool:
    return target in ENGAGE_TARGETS
