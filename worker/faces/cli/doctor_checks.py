"""The checks behind `pointsync doctor`: each thing the worker depends on and says how to fix it.

Every check runs even when an earlier one failed (a broken Redis says nothing about
Engage's key), except those that need a setting that is missing. No check writes anything
anywhere, and no secret is ever printed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import redis
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from worker.base.http import Rejected, RemoteError
from worker.base.logs import Redactor
from worker.base.settings import ConfigError, CoreSettings, Settings, WebSettings, load_settings
from worker.faces.cli import doctor_relays
from worker.faces.cli.doctor_result import FAIL, OK, SKIP, WARN, Check, as_dicts
from worker.faces.cli.output import age_text
from worker.faces.runtime import get_store
from worker.store.engine import make_engine, utcnow
from worker.store.schema import migrations_config
from worker.systems.engage.client import EngageClient
from worker.systems.toggle.client import ToggleClient
from worker.systems.treazure.client import TreazureClient

__all__ = ["FAIL", "OK", "SKIP", "WARN", "Check", "as_dicts", "run_all"]

NOBODY = "00000000-0000-0000-0000-000000000000"  # a contact id no tenant has
TIMEOUT_SECONDS = 10.0


def load(cls: type[CoreSettings]) -> CoreSettings | ConfigError:
    try:
        return load_settings(cls)
    except ConfigError as exc:  # its text starts "configuration error: "; the table says so
        return ConfigError(str(exc).removeprefix("configuration error: "))


SET_IT = "set the variable in the environment or in .env (README: Running it for real)"


def check_configuration() -> tuple[list[Check], CoreSettings | None, Settings | None]:
    core = load(CoreSettings)
    if isinstance(core, ConfigError):
        return [Check("configuration", FAIL, str(core), SET_IT)], None, None
    full = load(Settings)
    checks: list[Check] = []
    if isinstance(full, ConfigError):
        # A relay set only in part stops the worker, but says nothing of the rest: the
        # other checks run with that relay off, and its destination's row names what lacks.
        relays_off = doctor_relays.without_partial_relays(doctor_relays.partial_relays())
        if relays_off is None:
            return [Check("configuration", FAIL, str(full), SET_IT)], core, None
        checks.append(Check("configuration", FAIL, str(full),
                            f"set the relay's missing settings, or unset its others to leave "
                            f"it off ({doctor_relays.DOCS})"))
        full = relays_off
    else:
        checks.append(Check("configuration", OK, "every setting the worker needs is valid"))
    assert isinstance(full, Settings)
    web = load(WebSettings)
    if isinstance(web, ConfigError):
        checks.append(Check("web configuration", WARN, str(web),
                            "only the web process needs WEBHOOK_SECRET and WEB_API_KEY; set "
                            "them where it runs"))
    else:
        checks.append(Check("web configuration", OK, "WEBHOOK_SECRET and WEB_API_KEY are set"))
    return checks, full, full


def check_redis(settings: CoreSettings) -> Check:
    client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=3,
                                  socket_timeout=3)
    where = Redactor()(settings.REDIS_URL)
    try:
        client.ping()
    except redis.RedisError as exc:
        return Check("redis", FAIL, f"{where} does not answer: {type(exc).__name__}",
                     "start Redis or fix REDIS_URL")
    try:
        try:
            policy = client.config_get("maxmemory-policy").get("maxmemory-policy")
        except redis.ResponseError:  # CONFIG is disabled on some managed services
            return Check("redis", WARN, f"{where} answers; its eviction policy cannot be read",
                         "make sure maxmemory-policy is noeviction: an evicted message is a "
                         "lost sync or transaction")
        if policy != "noeviction":
            return Check("redis", FAIL,
                         f"{where} answers, but maxmemory-policy is {policy}: Redis may evict "
                         "queued messages and locks",
                         "redis-cli CONFIG SET maxmemory-policy noeviction (and set it in "
                         "redis.conf)")
        return Check("redis", OK, f"{where} answers; maxmemory-policy noeviction")
    finally:
        client.close()


def check_database(settings: CoreSettings) -> Check:
    # Local: alembic takes ~0.3 s to import, and every other command starts without it.
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    where = Redactor()(settings.DATABASE_URL)
    engine = make_engine(settings.DATABASE_URL)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
            current = MigrationContext.configure(conn).get_current_revision()
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0][:200]
        return Check("database", FAIL, f"{where}: {reason}",
                     "start the database or fix DATABASE_URL")
    finally:
        engine.dispose()
    head = ScriptDirectory.from_config(migrations_config()).get_current_head()
    if current != head:
        return Check("database", FAIL,
                     f"{where} answers; schema is at {current or 'nothing'}, the code needs "
                     f"{head}", "pointsync db upgrade (workers also upgrade when they start)")
    return Check("database", OK, f"{where} answers; schema at {head}")


async def check_treazure(settings: Settings) -> Check:
    quick = _quick(settings)
    # The token is asked for directly: the one shared in Redis may predate a changed secret.
    async with TreazureClient(quick, Redis.from_url(quick.REDIS_URL)) as treazure:
        return await _probe(
            "treazure", treazure.request_token(), settings.TREAZURE_BASE_URL,
            ok=lambda lifetime: f"issued a token (valid {timedelta(seconds=int(lifetime))})",
            refused="TREAZURE_CLIENT_ID / TREAZURE_CLIENT_SECRET were refused: check them "
                    "with Cow Hills (the secret can be reset, not read back)")


async def check_toggle(settings: Settings) -> Check:
    """Only where Toggle is configured: a fresh login (not shared: the check writes no
    token) and the credits left in the shared bucket, which the login's answer settles."""
    if not settings.toggle_enabled:
        return Check("toggle", SKIP, "not configured (TOGGLE_USERNAME and the rest unset)")
    quick = _quick(settings)
    redis_client = Redis.from_url(quick.REDIS_URL)
    try:
        return await _toggle_login_and_credits(settings, quick, redis_client)
    except (redis.RedisError, OSError) as exc:
        # Every Toggle request takes its credits from the budget all processes share in Redis.
        return Check("toggle", WARN, f"not checked: Redis cannot be reached "
                     f"({type(exc).__name__}), and the shared credit budget lives there",
                     "see the redis check")
    finally:
        await redis_client.aclose()


async def _toggle_login_and_credits(settings: Settings, quick: Settings, redis_client: Redis
                                    ) -> Check:
    async with ToggleClient(quick, redis_client) as toggle:
        check = await _probe(
            "toggle", toggle._session.login(), settings.TOGGLE_API_URL,
            ok=lambda _: "logged in",
            refused="TOGGLE_USERNAME / TOGGLE_PASSWORD were refused: check the API user "
                    "in Toggle's portal")
        if check.status != OK:
            return check
        left = await toggle.credits()
    if left < 1:
        return Check("toggle", WARN, f"{check.detail}; no credits left now ({left:.0f})",
                     "a burst of gift cards is under way or the budget is spent; cards wait "
                     "for credits (they refill every second)")
    return Check("toggle", OK, f"{check.detail}; {left:.0f} credits left")


class _NoLimit:
    """One request does not need the shared rate limit (and must not need Redis)."""

    async def acquire(self) -> None:
        return None


async def check_engage(settings: Settings) -> Check:
    quick = _quick(settings)
    async with EngageClient(quick, _NoLimit()) as engage:
        return await _probe(
            "engage", engage.get_balance(NOBODY), settings.ENGAGE_BASE_URL,
            ok=lambda _: f"accepted the apikey (API {settings.ENGAGE_API_VERSION})",
            refused="ENGAGE_API_KEY was refused: create or copy the key under "
                    "Administration → API connections in Engage")


async def _probe(name: str, call: Awaitable[Any], base: Any, ok: Callable[[Any], str],
                 refused: str) -> Check:
    """One request: an ok row with what it said, or the failure with its fix."""
    try:
        answer = await call
    except RemoteError as exc:
        return _remote_failure(name, exc, base, refused)
    return Check(name, OK, f"{base} {ok(answer)}")


def check_lag(settings: Settings) -> Check:
    watermark = get_store(settings).watermark()
    if watermark is None:
        return Check("sync lag", WARN, "no scheduled sync has succeeded yet",
                     "start beat (celery -A worker beat) and a worker, or run "
                     "pointsync migrate at go-live")
    lag = (utcnow() - watermark).total_seconds()
    if lag > 2 * settings.SYNC_INTERVAL_SECONDS:
        return Check("sync lag", WARN,
                     f"the last successful scheduled sync started {age_text(lag)} ago",
                     "check beat and the workers are running (pointsync status shows recent "
                     "runs and their errors)")
    return Check("sync lag", OK, f"the last successful scheduled sync started {age_text(lag)} ago")


def check_workers(settings: CoreSettings) -> Check:
    # Local: building the Celery app reads the settings, which the configuration check may
    # just have found broken; only this check needs it.
    from worker.faces.celery.app import app

    try:
        answers = app.control.ping(timeout=1.0)
    except Exception as exc:  # the broker itself is down: the redis check says so
        return Check("workers", SKIP, f"cannot ask the workers: {type(exc).__name__}")
    if not answers:
        return Check("workers", WARN, "no worker answered a ping within 1 s",
                     "start one: celery -A worker worker -Q celery (Procfile: worker)")
    names = sorted(name for answer in answers for name in answer)
    return Check("workers", OK, f"{len(names)} answered: {', '.join(names)[:200]}")


def run_all() -> list[Check]:
    checks, core, full = check_configuration()
    needs = "not checked: the configuration is incomplete"
    checks.append(check_redis(core) if core else Check("redis", SKIP, needs))
    checks.append(check_database(core) if core else Check("database", SKIP, needs))
    if full is None:
        checks += [Check(name, SKIP, needs) for name in ("treazure", "engage", "sync lag",
                                                         *doctor_relays.NAMES)]
    else:
        checks += asyncio.run(_remote_checks(full))
        database_ok = next(c for c in checks if c.name == "database").status == OK
        unusable = "the database is not usable"
        checks.append(check_lag(full) if database_ok else Check("sync lag", SKIP, unusable))
        checks.append(doctor_relays.check_backlog(full) if database_ok else
                      Check("relay backlog", SKIP, unusable))
    redis_ok = next(c for c in checks if c.name == "redis").status in (OK, WARN)
    checks.append(check_workers(core) if core and redis_ok else
                  Check("workers", SKIP, "Redis is not usable"))
    return checks


async def _remote_checks(settings: Settings) -> list[Check]:
    calls: list[Callable[[Settings], Awaitable[Check]]] = [check_treazure, check_engage]
    if settings.toggle_enabled:
        calls.append(check_toggle)
    services, relays = await asyncio.gather(
        asyncio.gather(*(call(settings) for call in calls)),
        doctor_relays.destination_checks(settings))
    return [*services, *relays]


def _quick(settings: Settings) -> Settings:
    # One attempt with a short timeout: the doctor reports, it does not ride out faults.
    return settings.model_copy(update={
        "HTTP_MAX_ATTEMPTS": 1,
        "HTTP_TIMEOUT_SECONDS": min(settings.HTTP_TIMEOUT_SECONDS, TIMEOUT_SECONDS)})


def _remote_failure(name: str, exc: RemoteError, base: Any, refused: str) -> Check:
    detail = f"{base}: {Redactor().one_line(exc.reason, 200)}"  # a body may echo a key
    variable = {"treazure": "TREAZURE_BASE_URL", "toggle": "TOGGLE_API_URL"}.get(
        name, "ENGAGE_BASE_URL")
    if exc.status in (401, 403) or (name == "treazure" and exc.status == 400) \
            or (name == "toggle" and isinstance(exc, Rejected)):  # a GraphQL refusal is a 200
        return Check(name, FAIL, detail, refused)
    if exc.status is None:
        return Check(name, FAIL, detail,
                     f"check {variable} and that this host can reach it (DNS, firewall, proxy)")
    if exc.status == 429 or exc.status >= 500:
        return Check(name, WARN, detail, "the service is busy or failing; try again later")
    return Check(name, FAIL, detail, f"check {variable} (is it the tenant's API host?)")

