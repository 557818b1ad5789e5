"""Log lines for every process: one line per event, text or JSON (LOG_FORMAT), carrying the
Celery task id and the bound run id or reference, with secrets replaced by `***`.

Secret values are read from the environment (and `.env`) directly, not from Settings, so
logging works, and redacts, even when the configuration is broken.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import time
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from functools import lru_cache
from typing import Any
from urllib.parse import unquote, urlsplit

import orjson
from celery._state import get_current_task

FORMATS = ("text", "json")
MASK = "***"

# Settings whose whole value is a secret; the URL settings only in their password.
SECRET_SETTINGS = ("TREAZURE_CLIENT_SECRET", "ENGAGE_API_KEY", "WEBHOOK_SECRET", "WEB_API_KEY",
                   "FLOWER_BASIC_AUTH", "TOGGLE_PASSWORD", "TOGGLE_WEBHOOK_SECRET",
                   "ATREEMO_WEBHOOK_SECRET", "NECTOR_WEBHOOK_SECRET", "CONTLO_API_KEY")
URL_SETTINGS = ("REDIS_URL", "DATABASE_URL")
# Shorter values are not redacted: masking every "ab" in every line would wreck the logs
# and protect nothing (a two-character secret is no secret).
MIN_SECRET_LENGTH = 4

# Fields bound for the code that runs next (a sync's run_id, a transaction's reference).
# Immutable mappings only: a bound dict is shared by the asyncio tasks created after it.
_context: ContextVar[Mapping[str, Any] | None] = ContextVar("pointsync_log_context",
                                                            default=None)


def bind_log_context(**fields: Any) -> None:
    """Add fields (run_id=…, reference=…) to every record logged from here on, in this
    context and in the asyncio tasks it creates afterwards."""
    _context.set({**(_context.get() or {}), **fields})


@contextlib.contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Bind fields for the block only."""
    token = _context.set({**(_context.get() or {}), **fields})
    try:
        yield
    finally:
        _context.reset(token)


def current_log_context() -> Mapping[str, Any]:
    """The fields bound in the current context."""
    return _context.get() or {}


# -- redaction -------------------------------------------------------------------------------

_KEYED = re.compile(
    # client_secret=…, "apikey": "…", apikey: …, password=…, access_token: …, in form
    # bodies, JSON, header dicts and DSNs; the key and separator stay, the value goes.
    r"""(?i)(\b(?:client_secret|apikey|api_key|access_token|refresh_token|password)\b"""
    r"""["']?\s*[:=]\s*["']?)[^\s"',&;}\]]+"""
)
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(?i)\b(Bearer\s+)[A-Za-z0-9\-._~+/]+=*"), rf"\g<1>{MASK}"),
    (re.compile(r"\bwhsec_[A-Za-z0-9+/=_\-]+"), f"whsec_{MASK}"),
    (_KEYED, rf"\g<1>{MASK}"),
    # scheme://user:password@ → scheme://user:***@ (no '/' in the password part, so a
    # host:port/path followed later by an '@' is left alone).
    (re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://[^\s:/@]*:)[^\s@/]+@"), rf"\g<1>{MASK}@"),
)


def secret_values(environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """The configured secret values, from the environment and `.env` (the environment wins)."""
    env = dict(_dotenv_values()) if environ is None else {}
    env.update(os.environ if environ is None else environ)
    found: set[str] = set()
    for name in SECRET_SETTINGS:
        value = env.get(name) or ""
        found.add(value)
        if name == "FLOWER_BASIC_AUTH":  # user:password[,user:password…]
            found.update(pair.partition(":")[2] for pair in value.split(","))
        elif name == "WEBHOOK_SECRET":  # the signing key proper follows the prefix
            found.add(value.removeprefix("whsec_"))
    for name in URL_SETTINGS:
        with contextlib.suppress(ValueError):
            password = urlsplit(env.get(name) or "").password or ""
            found.update((password, unquote(password)))
    return tuple(sorted((v for v in found if len(v) >= MIN_SECRET_LENGTH), key=len,
                        reverse=True))


def _dotenv_values() -> dict[str, str]:
    try:
        from dotenv import dotenv_values

        return {k: v for k, v in dotenv_values(".env").items() if v is not None}
    except Exception:  # an unreadable .env must not stop logging
        return {}


@lru_cache(maxsize=8)
def _exact(values: tuple[str, ...]) -> re.Pattern[str] | None:
    # Longest first, so a value containing another is masked whole.
    return re.compile("|".join(map(re.escape, values))) if values else None


def settings_secrets(settings: Any) -> dict[str, str]:
    """A settings object's secret and URL settings as plain text, named as in the
    environment (for `secret_values`); settings it does not have are left out."""
    found: dict[str, str] = {}
    for name in (*SECRET_SETTINGS, *URL_SETTINGS):
        value: Any = getattr(settings, name, None)
        # pydantic's SecretStr, read by its method: logging (loaded in the worker's main
        # process) does not import pydantic (see faces/celery/settings_apart.py).
        if callable(reveal := getattr(value, "get_secret_value", None)):
            value = reveal()
        if value is not None:
            found[name] = str(value)
    return found


class Redactor:
    """Replaces secret values and secret-shaped text with `***`.

    The one redaction of the project: log lines, remote errors as they are made
    (worker/http.py), and what the web process, the CLI and doctor show. Masking masked
    text again changes nothing.
    """

    def __init__(self, values: tuple[str, ...] | None = None) -> None:
        self.exact = _exact(secret_values() if values is None else values)

    @classmethod
    def for_settings(cls, settings: Any) -> Redactor:
        """Masks the secrets of these settings (not those of the environment or `.env`)."""
        return cls(secret_values(settings_secrets(settings)))

    def __call__(self, text: str) -> str:
        if self.exact is not None:
            text = self.exact.sub(MASK, text)
        for pattern, replacement in _PATTERNS:
            text = pattern.sub(replacement, text)
        return text

    def one_line(self, text: str, limit: int) -> str:
        """`text` masked, on one line, cut to `limit` characters (masked before the cut,
        so no part of a secret is left to show)."""
        return " ".join(self(text).split())[:limit]


def default_redactor() -> Redactor:
    """The Redactor for this process's environment and `.env`, made once (again only
    when the environment's secrets or the working directory change)."""
    return _redactor_for(os.getcwd(), tuple(os.environ.get(name) for name in
                                            (*SECRET_SETTINGS, *URL_SETTINGS)))


@lru_cache(maxsize=4)
def _redactor_for(_cwd: str, _environ: tuple[str | None, ...]) -> Redactor:
    return Redactor()


# -- record enrichment and formatting --------------------------------------------------------


class ContextFilter(logging.Filter):
    """Puts the Celery task (id, name) and the bound context on each record as it is
    emitted; it never drops a record. Cheap: runs only for records that reach a handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        task_id = task_name = None
        task = get_current_task()
        request = getattr(task, "request", None) if task is not None else None
        if request is not None and getattr(request, "id", None):
            task_id, task_name = request.id, task.name
        else:
            # Celery's "Task … received" line is logged outside the task, with its data.
            data = getattr(record, "data", None)
            if isinstance(data, dict) and data.get("id"):
                task_id, task_name = data.get("id"), data.get("name")
        record.task_id = task_id
        record.task_name = task_name
        record.log_context = current_log_context()
        return True


def _iso_utc(created: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + \
        f".{int(created % 1 * 1000):03d}Z"


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    """task_id, task_name and the bound context, for records that went through the filter
    (or not: a formatter used without the filter still works)."""
    fields: dict[str, Any] = {}
    task_id = getattr(record, "task_id", None)
    if task_id:
        fields["task_id"] = task_id
        fields["task_name"] = getattr(record, "task_name", None)
    fields.update(getattr(record, "log_context", None) or {})
    return fields


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, task and context fields, exc."""

    def __init__(self, redactor: Redactor | None = None) -> None:
        super().__init__()
        self.redact = redactor or Redactor()

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": _iso_utc(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": self.redact(record.getMessage()),
        }
        for key, value in _fields(record).items():
            entry.setdefault(key, value)
        exc = self._exception_text(record)
        if exc:
            entry["exc"] = self.redact(exc)
        # default=str: a bound value of any type still makes a line, never an error.
        return orjson.dumps(entry, default=str).decode()

    def _exception_text(self, record: logging.LogRecord) -> str:
        parts = []
        if record.exc_info:
            parts.append(self.formatException(record.exc_info))
        elif record.exc_text:
            parts.append(record.exc_text)
        if record.stack_info:
            parts.append(self.formatStack(record.stack_info))
        return "\n".join(parts)


class TextFormatter(logging.Formatter):
    """`<ts> LEVEL logger [task_id=… run_id=…]: message`, tracebacks included, on one line."""

    def __init__(self, redactor: Redactor | None = None) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s%(context)s: %(message)s")
        self.redact = redactor or Redactor()

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return _iso_utc(record.created)

    def format(self, record: logging.LogRecord) -> str:
        fields = _fields(record)
        fields.pop("task_name", None)  # Celery's own lines name the task already
        record.context = (" [" + " ".join(f"{k}={v}" for k, v in fields.items()) + "]"
                          if fields else "")
        line = self.redact(super().format(record))
        # One event, one line: a traceback or a multi-line message is escaped.
        return line.replace("\r", "\\r").replace("\n", "\\n")


def make_formatter(fmt: str = "text", redactor: Redactor | None = None) -> logging.Formatter:
    """The formatter for LOG_FORMAT `fmt` ("text" or "json")."""
    if fmt not in FORMATS:
        raise ValueError(f"LOG_FORMAT must be one of {', '.join(FORMATS)}, not {fmt!r}")
    return JsonFormatter(redactor) if fmt == "json" else TextFormatter(redactor)


def use_format(logger: logging.Logger, fmt: str = "text") -> None:
    """Give every handler of `logger` our formatter and filter (for handlers someone else
    made, such as Celery's, so that --logfile and --loglevel keep working)."""
    formatter = make_formatter(fmt)
    for handler in logger.handlers:
        if isinstance(handler, logging.NullHandler):
            continue
        handler.setFormatter(formatter)
        if not any(isinstance(f, ContextFilter) for f in handler.filters):
            handler.addFilter(ContextFilter())


def configure_logging(fmt: str = "text", level: str = "INFO") -> None:
    """The root logger gets one stderr handler in the given format and level; any handler
    it had is removed (calling it twice leaves one handler)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        with contextlib.suppress(Exception):
            handler.close()
    root.addHandler(logging.StreamHandler(sys.stderr))
    use_format(root, fmt)
    root.setLevel(level.upper())
