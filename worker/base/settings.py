"""Every knob of the worker, read from the environment (and `.env`) and validated at start-up.

Three layers so that each process demands only what it uses: the broker and store settings
(enough for `celery call`, the CLI's read-only commands and the simulators), the remote
settings every flow needs, and the web process's own secrets.
"""

from __future__ import annotations

import re
import sys
from functools import lru_cache
from typing import Annotated, Literal, NoReturn, TypeVar

from pydantic import (
    AnyHttpUrl,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class ConfigError(Exception):
    """A missing or malformed setting; the message is one line naming each variable."""


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


class Settings(CoreSettings):
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

    # Toggle (gift cards): on when its API user is set; all three or none (see _toggle_set).
    TOGGLE_API_URL: AnyHttpUrl = AnyHttpUrl("https://api.mytoggle.io/graphql")
    TOGGLE_USERNAME: str | None = None
    TOGGLE_PASSWORD: SecretStr | None = None
    TOGGLE_ACCOUNT_ID: int | None = None
    TOGGLE_MERCHANT_ID: int = 26
    TOGGLE_CURRENCY: str = Field("GBP", pattern=r"^[A-Z]{3}$")
    # None: the account's `In-store Gift` product, looked up once.
    TOGGLE_PRODUCT_ID: int | None = None
    # `name=reference,name=reference`: till site names to Toggle site references.
    TOGGLE_SITES: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)
    TOGGLE_VALIDATE_CARD_NUMBER: bool = True
    # The API user's credit budget (contract: 8,000, refilled 5,000 per 10 minutes); another
    # tier, or a simulator, is set here so every process paces itself to the real budget.
    TOGGLE_CREDITS_MAX: float = Field(8000, gt=0)
    TOGGLE_CREDITS_REFILL_PER_SECOND: float = Field(5000 / 600, gt=0)

    # Event relays (issue 13): each on when its settings are set; all or none (_relays_set).
    TOGGLE_WEBHOOK_SECRET: SecretStr | None = None
    ATREEMO_WEBHOOK_URL: AnyHttpUrl | None = None
    ATREEMO_WEBHOOK_SECRET: SecretStr | None = None
    ATREEMO_RATE_LIMIT: float = Field(20, gt=0)
    ATREEMO_SENDS_EMAILS: bool = False
    NECTOR_WEBHOOK_SECRET: SecretStr | None = None
    CONTLO_BASE_URL: AnyHttpUrl = AnyHttpUrl("https://api.contlo.com")
    CONTLO_API_KEY: SecretStr | None = None
    CONTLO_RATE_LIMIT: float = Field(10, gt=0)
    # `topic=Event Name,topic=Event Name`: overrides of the contract's mapping.
    CONTLO_EVENT_NAMES: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)
    RELAY_MAX_AGE_SECONDS: int = Field(259200, ge=60)

    @field_validator("TOGGLE_USERNAME", "TOGGLE_PASSWORD", "TOGGLE_ACCOUNT_ID",
                     "TOGGLE_PRODUCT_ID", "TOGGLE_WEBHOOK_SECRET", "ATREEMO_WEBHOOK_URL",
                     "ATREEMO_WEBHOOK_SECRET", "NECTOR_WEBHOOK_SECRET", "CONTLO_API_KEY",
                     mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # docker-compose passes `${TOGGLE_USERNAME:-}` as an empty string: not set.
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("TOGGLE_SITES", mode="before")
    @classmethod
    def _sites(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        sites: dict[str, str] = {}
        for item in filter(None, (part.strip() for part in value.split(","))):
            name, sep, reference = (text.strip() for text in item.partition("="))
            if not sep or not name or not reference:
                raise ValueError(f"{item!r} is not name=reference")
            if name in sites:
                raise ValueError(f"site {name!r} is mapped twice")
            sites[name] = reference
        return sites

    @field_validator("CONTLO_EVENT_NAMES", mode="before")
    @classmethod
    def _event_names(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        names: dict[str, str] = {}
        for item in filter(None, (part.strip() for part in value.split(","))):
            topic, sep, name = (text.strip() for text in item.partition("="))
            if not sep or not topic or not name:
                raise ValueError(f"{item!r} is not topic=Event Name")
            if topic in names:
                raise ValueError(f"topic {topic!r} is mapped twice")
            names[topic] = name
        return names

    @model_validator(mode="after")
    def _toggle_set(self) -> Settings:
        """Some of Toggle's required settings but not all: stop, naming the missing ones."""
        required = ("TOGGLE_USERNAME", "TOGGLE_PASSWORD", "TOGGLE_ACCOUNT_ID")
        missing = [name for name in required if getattr(self, name) is None]
        if 0 < len(missing) < len(required):
            raise ValidationError.from_exception_data(type(self).__name__, [
                InitErrorDetails(type="missing", loc=(name,), input=None) for name in missing
            ])
        return self

    @model_validator(mode="after")
    def _relays_set(self) -> Settings:
        """Per relay, some of its required settings but not all: stop, naming the missing."""
        missing: list[str] = []
        for required in (TOGGLE_RELAY_SETTINGS, NECTOR_RELAY_SETTINGS):
            absent = [name for name in required if getattr(self, name) is None]
            if 0 < len(absent) < len(required):
                missing += absent
        if missing:
            raise ValidationError.from_exception_data(type(self).__name__, [
                InitErrorDetails(type="missing", loc=(name,), input=None) for name in missing
            ])
        return self

    @property
    def toggle_enabled(self) -> bool:
        return self.TOGGLE_USERNAME is not None

    @property
    def toggle_relay_enabled(self) -> bool:
        """Toggle's webhooks received and relayed to Atreemo."""
        return self.TOGGLE_WEBHOOK_SECRET is not None

    @property
    def nector_relay_enabled(self) -> bool:
        """Nector's webhooks received and relayed to Contlo."""
        return self.NECTOR_WEBHOOK_SECRET is not None


# What each relay needs, all or none.
TOGGLE_RELAY_SETTINGS = ("TOGGLE_WEBHOOK_SECRET", "ATREEMO_WEBHOOK_URL", "ATREEMO_WEBHOOK_SECRET")
NECTOR_RELAY_SETTINGS = ("NECTOR_WEBHOOK_SECRET", "CONTLO_API_KEY")


class WebSettings(Settings):
    WEBHOOK_SECRET: SecretStr
    WEB_API_KEY: SecretStr
    PORT: int = Field(8000, ge=1, le=65535)
    # 127.0.0.1 outside a container; docker-compose.yml sets 0.0.0.0.
    WEB_HOST: str = "127.0.0.1"

    @field_validator("WEB_API_KEY")
    @classmethod
    def _api_key(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().strip():
            raise ValueError("must not be empty (every read request would be refused)")
        return value

    @field_validator("WEBHOOK_SECRET")
    @classmethod
    def _whsec(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().startswith("whsec_"):
            raise ValueError("must be the endpoint's Svix signing secret (whsec_…)")
        return value


_S = TypeVar("_S", bound=CoreSettings)


def _describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        name = ".".join(str(p) for p in item["loc"]) or "settings"
        if item["type"] == "missing":
            parts.append(f"{name} is required but not set")
        else:
            # Never echo the value: it may be a secret.
            parts.append(f"{name} is malformed: {item['msg']}")
    return "; ".join(parts)


def load_settings(cls: type[_S]) -> _S:
    """Settings of this class from the environment, or a ConfigError naming each variable."""
    try:
        return cls()
    except ValidationError as exc:
        raise ConfigError(f"configuration error: {_describe(exc)}") from None


@lru_cache(maxsize=1)
def get_core_settings() -> CoreSettings:
    return load_settings(CoreSettings)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings(Settings)


@lru_cache(maxsize=1)
def get_web_settings() -> WebSettings:
    return load_settings(WebSettings)


def exit_on_config_error(error: ConfigError) -> NoReturn:
    """Stop a process at start-up with the one-line reason (exit status 78, EX_CONFIG)."""
    print(f"pointsync: {error}", file=sys.stderr, flush=True)
    raise SystemExit(78)


def clear_cache() -> None:
    """Forget loaded settings (tests change the environment between cases)."""
    for loader in (get_core_settings, get_settings, get_web_settings):
        loader.cache_clear()
