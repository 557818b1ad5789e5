"""Treazure and Engage, and the flows between them: the balance sync, point transactions,
points history. Every worker process needs these (the worker's main process aside)."""

from __future__ import annotations

from typing import Literal

from pydantic import AnyHttpUrl, BaseModel, Field, SecretStr


class TreazureEngageSettings(BaseModel):
    TREAZURE_BASE_URL: AnyHttpUrl
    TREAZURE_CLIENT_ID: str = Field(min_length=1)
    TREAZURE_CLIENT_SECRET: SecretStr
    TREAZURE_LOYALTY_ID: str = Field(min_length=1)
    TREAZURE_SCOPE: str = "api_loyaltyvault"
    # A token is renewed this long before Treazure says it expires.
    TREAZURE_TOKEN_MARGIN_SECONDS: int = Field(300, ge=0)
    # Bound on the total time spent waiting for a Balances/Get job to finish.
    TREAZURE_JOB_TIMEOUT_SECONDS: float = Field(900, gt=0)

    ENGAGE_BASE_URL: AnyHttpUrl
    ENGAGE_API_KEY: SecretStr
    ENGAGE_DEFINITION_ID: int = 1
    ENGAGE_API_VERSION: Literal["v2", "v3"] = "v3"
    ENGAGE_RATE_LIMIT: float = Field(50, gt=0)
    ENGAGE_BATCH_SIZE: int = Field(1000, ge=1, le=1000)
    # Balance pushes in flight at once inside one sync; the shared rate limit paces them.
    ENGAGE_PUSH_CONCURRENCY: int = Field(4, ge=1, le=64)
    # A balance Engage refused with ContactNotFound is pushed again by every sync run for
    # this long after its first refusal (until accepted, or a newer balance was sent), so
    # a contact created in Engage a little later comes into step. 0: never retried.
    ENGAGE_NOT_FOUND_RETRY_SECONDS: int = Field(86400, ge=0)

    HTTP_TIMEOUT_SECONDS: float = Field(30, gt=0)
    HTTP_CONNECT_TIMEOUT_SECONDS: float = Field(5, gt=0)
    HTTP_MAX_ATTEMPTS: int = Field(6, ge=1)
    # Upper bound on one backoff pause, whatever Retry-After asks for.
    HTTP_MAX_BACKOFF_SECONDS: float = Field(60, gt=0)

    # A window starts this long before the watermark, so late-visible changes are not missed.
    SYNC_OVERLAP_SECONDS: int = Field(600, ge=0)
    SYNC_LOOKAHEAD_SECONDS: int = Field(7200, ge=0)
    SYNC_FIRST_WINDOW_SECONDS: int = Field(7200, gt=0)
    # The run lock expires this long after its holder stops renewing it (e.g. it was killed).
    SYNC_LOCK_TTL_SECONDS: int = Field(60, ge=2)

    # Point transactions (flow 2). A worker holds a transaction under a lease of this length,
    # renewed every third of it while it works; a killed worker's transaction is taken over
    # by the next sweep once the lease has run out (so within lease + sweep interval).
    POINTS_LEASE_SECONDS: int = Field(20, ge=5)
    # Tries inside one task before the row is let go; it is due again after 1 s doubling per
    # attempt, the task queued again when that is within a minute, else the sweep takes it.
    POINTS_INLINE_ATTEMPTS: int = Field(3, ge=1)
    # Booking tries in all before a transaction ends `failed` (an operator can replay it).
    POINTS_MAX_ATTEMPTS: int = Field(10, ge=1)
    POINTS_RETRY_MAX_SECONDS: float = Field(300, gt=0)
    # After an ambiguous booking, wait this long before reading the history for it. The row is
    # released for the pause and its task queued again for then: no process waits it out.
    POINTS_SETTLE_SECONDS: float = Field(2.0, ge=0)
    # History is read from the first send less this margin (clock skew between us and Treazure).
    POINTS_HISTORY_MARGIN_SECONDS: int = Field(600, ge=0)
    # A received row nobody touched for this long has lost its message: the sweep re-sends it.
    POINTS_STALE_SECONDS: int = Field(120, ge=5)

    # Points history (flow 3): kept this long; refreshed after each successful sync for the
    # contacts it read, in tasks of HISTORY_CHUNK_SIZE contacts, each with at most
    # HISTORY_FETCH_CONCURRENCY requests to Treazure at once.
    HISTORY_RETENTION_DAYS: int = Field(730, ge=1)
    HISTORY_AFTER_SYNC: bool = True
    HISTORY_CHUNK_SIZE: int = Field(500, ge=1, le=10_000)
    HISTORY_FETCH_CONCURRENCY: int = Field(8, ge=1, le=64)
    # A chunk task works this long, then queues what is left: a sync waits at most about
    # this long for a worker process busy with history.
    HISTORY_CHUNK_SECONDS: float = Field(1.0, gt=0)

    USER_AGENT: str = "pointsync/0.1.0"
