"""The broker and store settings: enough for `celery call`, the CLI's read-only commands,
the simulators, and the Celery app itself (a worker's main process runs no task)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class CoreSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=True
    )

    REDIS_URL: str = "redis://localhost:6379/0"
    DATABASE_URL: str = "sqlite:///pointsync.db"
    LOG_LEVEL: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    LOG_FORMAT: Literal["text", "json"] = "text"

    SYNC_INTERVAL_SECONDS: int = Field(3600, ge=10)
    # Longest a task may run before Celery kills it; the broker's visibility timeout sits above.
    TASK_TIME_LIMIT_SECONDS: int = Field(3600, ge=60)
    # How often beat runs the sweep that finishes point transactions whose message was lost.
    POINTS_SWEEP_INTERVAL_SECONDS: int = Field(30, ge=5)
    # How often beat applies HISTORY_RETENTION_DAYS.
    HISTORY_PURGE_INTERVAL_SECONDS: int = Field(86400, ge=60)

    @field_validator("REDIS_URL")
    @classmethod
    def _redis_scheme(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value

    @field_validator("DATABASE_URL")
    @classmethod
    def _database_url(cls, value: str) -> str:
        if not is_database_url(value):
            raise ValueError("is not an SQLAlchemy URL (e.g. sqlite:///pointsync.db)")
        return value


# SQLAlchemy's own URL grammar (sqlalchemy.engine.url._parse_url), matched here rather than
# by importing SQLAlchemy (about 11 MB): the Celery worker's main process validates its
# settings but never opens the store, and every pool child forked from it would carry
# those pages. A unit test holds this to make_url's verdict.
_DATABASE_URL = re.compile(
    r"""
        (?P<name>[\w\+]+)://
        (?:
            (?P<username>[^:/]*)
            (?::(?P<password>[^@]*))?
        @)?
        (?:
            (?:
                \[(?P<ipv6host>[^/\?]+)\] |
                (?P<ipv4host>[^/:\?]+)
            )?
            (?::(?P<port>[^/\?]*))?
        )?
        (?:/(?P<database>[^\?]*))?
        (?:\?(?P<query>.*))?
    """,
    re.X,
)


def is_database_url(value: str) -> bool:
    """Whether SQLAlchemy's make_url would accept `value` (its port must read as an int)."""
    match = _DATABASE_URL.match(value)
    if match is None:
        return False
    port = match.group("port")
    if port is not None:  # `host:` with no digits is refused too
        try:
            int(port)
        except ValueError:
            return False
    return True
