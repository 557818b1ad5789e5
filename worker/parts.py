"""The parts a flow works with, built once per process by runtime.remote()."""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

from worker.engage import EngageClient
from worker.pushguard import PushGuard
from worker.settings import Settings
from worker.store import Store
from worker.treazure import TreazureClient


@dataclass
class Parts:
    settings: Settings
    store: Store
    redis: Redis
    treazure: TreazureClient
    engage: EngageClient
    guard: PushGuard
