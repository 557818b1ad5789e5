"""Log lines: one per event, JSON or text, with task and run ids, and no secret in them."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from celery import Celery
from celery._state import _task_stack

from worker.base import logs
from worker.base.logs import (
    bind_log_context,
    configure_logging,
    current_log_context,
    log_context,
    use_format,
)

log = logging.getLogger("pointsync.test")

SECRET_ENV = {
    "TREAZURE_CLIENT_SECRET": "tz-cs-Q7mW2pL9",
    "ENGAGE_API_KEY": "eng-ak-X4vB8nR1",
    "WEBHOOK_SECRET": "whsec_c2VjcmV0LWZvci13ZWJob29r",
    "WEB_API_KEY": "web-ak-H3jK6tY0",
    "FLOWER_BASIC_AUTH": "ops:fl-pw-Z9xC5",
    "REDIS_URL": "redis://:rd-pw-M2nB7@127.0.0.1:6379/0",
    "DATABASE_URL": "postgresql+psycopg://pointsync:db-pw-%40K8s@db:5432/pointsync",
}
# What must never appear, for each setting (DATABASE_URL's password decoded too).
SECRET_VALUES = {
    "TREAZURE_CLIENT_SECRET": ["tz-cs-Q7mW2pL9"],
    "ENGAGE_API_KEY": ["eng-ak-X4vB8nR1"],
    "WEBHOOK_SECRET": ["whsec_c2VjcmV0LWZvci13ZWJob29r", "c2VjcmV0LWZvci13ZWJob29r"],
    "WEB_API_KEY": ["web-ak-H3jK6tY0"],
    "FLOWER_BASIC_AUTH": ["ops:fl-pw-Z9xC5", "fl-pw-Z9xC5"],
    "REDIS_URL": ["rd-pw-M2nB7"],
    "DATABASE_URL": ["db-pw-%40K8s", "db-pw-@K8s"],
}
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.fixture(autouse=True)
def no_bound_fields() -> Iterator[None]:
    """A test's binds end with it (pytest runs every test in one context)."""
    token = logs._context.set(None)
    yield
    logs._context.reset(token)


@pytest.fixture
def root_logging(clean_env: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """configure_logging changes the root logger: put pytest's handlers back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    clean_env.delenv("FLOWER_BASIC_AUTH", raising=False)
    yield clean_env
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def lines(capsys: pytest.CaptureFixture[str]) -> Callable[[], list[str]]:
    """The lines written to stderr so far."""
    return lambda: capsys.readouterr().err.splitlines()


def records(lines: list[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in lines]


@pytest.fixture
def in_task() -> Iterator[Callable[[str], None]]:
    """Run what follows as if inside a Celery task with the given id (Celery's task stack)."""
    app = Celery("test-logs", set_as_current=False)

    @app.task(name="pointsync.sync_balances")
    def sync_balances() -> None: ...

    pushed = []

    def enter(task_id: str) -> None:
        sync_balances.push_request(id=task_id)
        _task_stack.push(sync_balances)
        pushed.append(sync_balances)

    yield enter
    for task in pushed:
        _task_stack.pop()
        task.pop_request()


# -- JSON -----------------------------------------------------------------------------------


def test_json_line_has_the_fields(root_logging: Any, lines: Callable[[], list[str]]) -> None:
    configure_logging("json", "INFO")
    with log_context(run_id=42, reference="pts-77"):
        log.info("sync run %s started", 42)
    log.debug("below the level")

    (entry,) = records(lines())
    assert ISO_UTC.match(entry["ts"])
    assert entry["level"] == "INFO"
    assert entry["logger"] == "pointsync.test"
    assert entry["message"] == "sync run 42 started"
    assert (entry["run_id"], entry["reference"]) == (42, "pts-77")
    assert "task_id" not in entry and "exc" not in entry


def test_json_has_the_celery_task(root_logging: Any, lines: Callable[[], list[str]],
                                  in_task: Callable[[str], None]) -> None:
    configure_logging("json")
    logging.getLogger("celery.worker.strategy").info(
        "Task %(name)s[%(id)s] received", {"id": "t-received", "name": "pointsync.add_points"},
        extra={"data": {"id": "t-received", "name": "pointsync.add_points"}})
    in_task("t-123")
    bind_log_context(run_id=5)
    log.info("inside the task")

    received, inside = records(lines())
    assert (received["task_id"], received["task_name"]) == ("t-received",
                                                            "pointsync.add_points")
    assert (inside["task_id"], inside["task_name"]) == ("t-123", "pointsync.sync_balances")
    assert inside["run_id"] == 5


def test_json_one_line_per_record_with_newlines_and_exceptions(
    root_logging: Any, lines: Callable[[], list[str]]
) -> None:
    configure_logging("json")
    log.warning("first line\nsecond line\r\nthird")
    try:
        raise ValueError("broken\nover two lines")
    except ValueError:
        log.exception("the run failed")

    written = lines()
    assert len(written) == 2
    multi, failed = records(written)
    assert multi["message"] == "first line\nsecond line\r\nthird"
    assert failed["message"] == "the run failed" and failed["level"] == "ERROR"
    assert failed["exc"].startswith("Traceback (most recent call last):")
    assert "ValueError: broken\nover two lines" in failed["exc"]


# -- text -----------------------------------------------------------------------------------


def test_text_line_names_task_and_run(root_logging: Any, lines: Callable[[], list[str]],
                                      in_task: Callable[[str], None]) -> None:
    configure_logging("text", "INFO")
    log.info("before the task")
    in_task("t-9")
    with log_context(run_id=12):
        log.info("sync run %s started", 12)

    before, inside = lines()
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z INFO pointsync.test: "
                    r"before the task$", before)
    assert inside.endswith(" INFO pointsync.test [task_id=t-9 run_id=12]: sync run 12 started")


def test_text_one_line_per_record(root_logging: Any, lines: Callable[[], list[str]]) -> None:
    configure_logging("text")
    log.warning("first line\nsecond line")
    try:
        raise KeyError("missing")
    except KeyError:
        log.exception("failed")

    multi, failed = lines()
    assert multi.endswith("first line\\nsecond line")
    assert "failed\\nTraceback (most recent call last):\\n" in failed
    assert failed.endswith("KeyError: 'missing'")


def test_configure_twice_leaves_one_handler_and_rejects_unknown_formats(
    root_logging: Any, lines: Callable[[], list[str]]
) -> None:
    configure_logging("text")
    configure_logging("json", "warning")
    log.info("dropped")
    log.warning("kept")
    assert [entry["message"] for entry in records(lines())] == ["kept"]
    with pytest.raises(ValueError, match="LOG_FORMAT"):
        configure_logging("yaml")


def test_use_format_keeps_someone_elses_handler(root_logging: Any) -> None:
    """Celery's handlers (stderr or --logfile) keep their stream and level."""
    stream = io.StringIO()
    logger = logging.getLogger("pointsync.test.celery-like")
    handler = logging.StreamHandler(stream)
    handler.setLevel(logging.WARNING)
    logger.addHandler(handler)
    logger.propagate = False
    try:
        use_format(logger, "json")
        use_format(logger, "json")  # the signal may come twice: still one filter
        logger.info("dropped by the handler's level")
        with log_context(run_id=3):
            logger.warning("Task x[abc] succeeded")
    finally:
        logger.removeHandler(handler)
    assert logger.handlers == [] and len(handler.filters) == 1
    (entry,) = records(stream.getvalue().splitlines())
    assert entry["message"] == "Task x[abc] succeeded" and entry["run_id"] == 3


# -- redaction ------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["json", "text"])
@pytest.mark.parametrize("name", sorted(SECRET_ENV))
def test_configured_secrets_are_masked(
    root_logging: pytest.MonkeyPatch, lines: Callable[[], list[str]], name: str, fmt: str
) -> None:
    root_logging.setenv(name, SECRET_ENV[name])
    configure_logging(fmt)
    for value in SECRET_VALUES[name]:
        log.error("%s is %s (repr %r)", name, value, {"value": value})
        try:
            raise RuntimeError(f"refused with {value}")
        except RuntimeError:
            log.exception("failed")

    output = "\n".join(lines())
    assert output.count("***") >= 2 * len(SECRET_VALUES[name])
    for value in SECRET_VALUES[name]:
        assert value not in output


def test_secrets_from_a_dotenv_file_are_masked(
    root_logging: pytest.MonkeyPatch, lines: Callable[[], list[str]]
) -> None:
    """Settings may come from `.env` (pydantic-settings reads it): those values too."""
    with open(".env", "w") as dotenv:  # clean_env made tmp_path the working directory
        dotenv.write("ENGAGE_API_KEY=dotenv-ak-T6gF2\n")
    configure_logging("json")
    log.error("key dotenv-ak-T6gF2 refused")
    assert records(lines())[0]["message"] == "key *** refused"


@pytest.mark.parametrize(("text", "masked"), [
    ("Authorization: Bearer eyJhbGciOi.J9pay-load_x.sig==", "Authorization: Bearer ***"),
    ("{'Authorization': 'bearer abc.def'}", "{'Authorization': 'bearer ***'}"),
    ("secret whsec_bm90LWNvbmZpZ3VyZWQ= given", "secret whsec_*** given"),
    ("grant_type=client_credentials&client_secret=s3cr3t-x&scope=api",
     "grant_type=client_credentials&client_secret=***&scope=api"),
    ('{"client_secret": "s3cr3t-y"}', '{"client_secret": "***"}'),
    ("apikey: ak-hdr-1", "apikey: ***"),
    ('{"apikey": "ak-json-2", "x": 1}', '{"apikey": "***", "x": 1}'),
    ("{'apikey': 'ak-repr-3'}", "{'apikey': '***'}"),
    ('{"access_token": "tok-4", "expires_in": 3600}',
     '{"access_token": "***", "expires_in": 3600}'),
    ("connect amqp://guest:pw-url-5@rabbit:5672// failed",
     "connect amqp://guest:***@rabbit:5672// failed"),
    ("redis://:pw-url-6@cache:6379/0", "redis://:***@cache:6379/0"),
])
def test_secret_shapes_are_masked(
    root_logging: Any, lines: Callable[[], list[str]], text: str, masked: str
) -> None:
    configure_logging("json")
    log.error(text)
    assert records(lines())[0]["message"] == masked


@pytest.mark.parametrize("text", [
    "redis://127.0.0.1:6379/0 is down; mail ops@example.com",
    "password is wrong for contact 3f2b",
    "Basic authentication enabled",
    "sync run 4 succeeded: {'fetched': 50, 'pushed': 50}",
    "sweep: 2 transaction(s) sent again",
])
def test_ordinary_text_is_left_alone(
    root_logging: pytest.MonkeyPatch, lines: Callable[[], list[str]], text: str
) -> None:
    root_logging.setenv("WEB_API_KEY", "ab")  # too short to mask without wrecking lines
    configure_logging("json")
    log.error(text)
    assert records(lines())[0]["message"] == text


# -- context --------------------------------------------------------------------------------


def test_log_context_restores_and_binding_reaches_later_asyncio_tasks() -> None:
    async def child(seen: list[Any]) -> None:
        seen.append(dict(current_log_context()))

    async def run() -> list[Any]:
        seen: list[Any] = []
        await asyncio.create_task(child(seen))  # created before the bind: no run_id
        bind_log_context(run_id=9)
        await asyncio.gather(child(seen), child(seen))
        with log_context(reference="pts-1"):
            await child(seen)
        await child(seen)
        return seen

    with log_context(lane="a"):
        seen = asyncio.run(run())
        assert current_log_context() == {"lane": "a"}  # the run's bind stayed in the run
    assert current_log_context() == {}
    assert seen == [
        {"lane": "a"},
        {"lane": "a", "run_id": 9}, {"lane": "a", "run_id": 9},
        {"lane": "a", "run_id": 9, "reference": "pts-1"},
        {"lane": "a", "run_id": 9},
    ]


def test_a_redactor_for_settings_masks_their_secrets_without_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """The web process's settings may not come from the environment (its tests build them)."""
    from pydantic import SecretStr

    monkeypatch.chdir(tmp_path)  # no .env
    for name in SECRET_ENV:
        monkeypatch.delenv(name, raising=False)
    settings = type("Settings", (), {
        name: value if name.endswith("_URL") else SecretStr(value)
        for name, value in SECRET_ENV.items()})()
    text = " | ".join(SECRET_ENV.values()) + " | Bearer abc.def"

    masked = logs.Redactor.for_settings(settings).one_line(text, 10_000)

    assert not [v for values in SECRET_VALUES.values() for v in values if v in masked]
    assert masked.endswith("Bearer ***")
    assert logs.Redactor()(text) != masked  # the environment alone knows none of them
