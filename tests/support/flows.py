"""What flow tests share: the fake remotes' state and the parts a flow is given."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from worker.base.settings import Settings
from worker.store.database import Store
from worker.systems.engage.client import EngageClient
from worker.systems.treazure.client import TreazureClient

TREAZURE = "https://acme.posengine.test.cloud"
ENGAGE = "https://acme.voyado.test"
JOB = "/api/v1.0/LoyaltyVault/Balances/Jobs/job-1"


@dataclass
class FakeRemotes:
    """Treazure's balances job and Engage's balances endpoint, answered in memory."""

    pages: list[list[dict[str, Any]]] = field(default_factory=list)
    jobs: list[dict[str, Any]] = field(default_factory=list)
    pushes: list[list[dict[str, Any]]] = field(default_factory=list)
    engage: dict[str, float] = field(default_factory=dict)
    not_found: set[str] = field(default_factory=set)
    engage_fail: int = 0
    # False: keep no rows and no call history (respx records every request and answer).
    pushes_kept: bool = True
    forget: list[Any] = field(default_factory=list)  # the respx router, to clear its history

    def add_page(self, *items: tuple[str, float, str]) -> None:
        self.pages.append([
            {"accountNumber": cid, "loyaltyPointDefinitionId": "points", "balance": balance,
             "mutatedAt": at} for cid, balance, at in items
        ])

    def pushed_contacts(self) -> list[str]:
        return [row["contactId"] for push in self.pushes for row in push]


@dataclass
class Parts:
    settings: Settings
    store: Store
    redis: Any
    treazure: TreazureClient
    engage: EngageClient
