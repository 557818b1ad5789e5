"""The Toggle simulator's control API, for tests that run it as a process (the in-process
simulator's helpers are in tests/support/toggle.py)."""

from __future__ import annotations

from typing import Any

import httpx


class Toggle:
    """The Toggle simulator's control API."""

    def __init__(self, url: str) -> None:
        self.http = httpx.Client(base_url=url, timeout=30)

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        answer = self.http.post(f"/_sim/{path}", json=body or {})
        answer.raise_for_status()
        return answer.json()

    def orders(self, reference: str) -> list[dict[str, Any]]:
        answer = self.http.get("/_sim/toggle/orders", params={"reference": reference})
        return list(answer.json()["orders"])

    def requests(self, operation: str) -> int:
        return int(self.http.get("/_sim/stats").json()["requests"].get(operation, 0))

    def card(self, number: str) -> dict[str, Any]:
        return dict(self.http.get(f"/_sim/toggle/cards/{number}").json())

    def created_by(self, reference: str) -> dict[str, Any] | None:
        """What a merchant_transaction_reference created (kind, id, line items), or None."""
        answer = self.http.get(f"/_sim/toggle/references/{reference}")
        if answer.status_code == 404:
            return None
        answer.raise_for_status()
        return dict(answer.json())
