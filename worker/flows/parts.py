"""The parts a flow works with, built once per process by runtime.remote()."""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

from worker.base.settings import Settings
from worker.store.database import Store
from worker.store.pushguard import PushGuard
from worker.systems.engage.client import EngageClient
from worker.systems.toggle.client import ToggleClient
from worker.systems.treazure.client import TreazureClient


@dataclass
class Parts:
    settings: Settings
    store: Store
    redis: Redis
    treazure: TreazureClient
    engage: EngageClient
    guard: PushGuard
    # Gift cards: present only where TOGGLE_* is configured.
    toggle: ToggleClient | None = None
