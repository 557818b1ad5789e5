"""Treazure's asynchronous balances jobs: a snapshot of matching log entries, paged later."""

import time
import uuid
from array import array
from dataclasses import dataclass


@dataclass(slots=True)
class Job:
    entries: array  # log positions that matched the window when the job started
    expires_at: float  # time.monotonic() after which the result is gone (410)
    running_polls: int  # result polls still to be answered 202 Running

    def expired(self) -> bool:
        return time.monotonic() >= self.expires_at

    def expire(self) -> None:
        self.expires_at = float("-inf")
        self.entries = array("q")  # the result is gone: free a snapshot of up to millions


class Jobs:
    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}

    def start(self, entries: array, ttl: float, running_polls: int) -> str:
        job_id = str(uuid.uuid4())
        self._jobs[job_id] = Job(entries, time.monotonic() + ttl, running_polls)
        return job_id

    def get(self, job_id: str) -> Job | None:
        job = self._jobs.get(job_id)
        if job is not None and job.expired():
            job.expire()
        return job

    def expire_all(self) -> None:
        for job in self._jobs.values():
            job.expire()
