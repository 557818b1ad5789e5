"""A redis-server of a test's own, on a free port, that the test stops and starts again (a
Redis outage, as a restart or a network cut looks to its clients)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from sims.harness import free_port, redis_answers, stop
from tests.support.integration import wait_for


class RedisServer:
    """Persistent (append-only file in `workdir`), as in production: what was in Redis
    before the outage is there after it (the beat lock, schedules, queued messages)."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server")
        assert binary is not None, "redis-server is needed for the Redis outage tests"
        self.binary, self.workdir, self.port = binary, workdir, free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
             "--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: redis_answers(self.url), 20, "the test's redis-server")

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
            self.proc = None
        wait_for(lambda: not redis_answers(self.url), 20, "the test's redis-server to stop")
