"""Everything the two simulated APIs share, and how to get at it from a request."""

import random

from aiohttp import web

from sims.config import SimConfig
from sims.faults import Faults
from sims.follower import Follower
from sims.jobs import Jobs
from sims.ledger import Ledger
from sims.ratelimit import RateLimiter
from sims.stats import Stats
from sims.tokens import Tokens


class SimState:
    def __init__(self, config: SimConfig) -> None:
        self._startup_config = config
        self.reset()

    def reset(self) -> None:
        """Empty books, no faults, no tokens or jobs, and the configuration the sim started with."""
        self.config = self._startup_config
        self.ledger = Ledger()
        self.follower = Follower()
        self.jobs = Jobs()
        self.tokens = Tokens()
        self.faults = Faults()
        self.stats = Stats()
        self.limiter = RateLimiter()
        self.rng = random.Random(0)  # fixed seed: random mutations repeat run after run
        self.fault_rng = random.Random(1)  # faults drawn by fault_shares, also repeatable

    def open_accounts(
        self,
        ids: list[str],
        cents: list[int],
        stamps_us: list[int],
        engage_known: bytes,
        engage_cents: list[int],
    ) -> None:
        """Create accounts in Treazure and, where `engage_known` says so, contacts in Engage."""
        self.ledger.open_accounts(ids, cents, stamps_us)
        self.follower.add(engage_known, engage_cents)  # same order: one position for both


STATE = web.AppKey("state", SimState)
