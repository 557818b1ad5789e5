"""The Celery app and its reliability settings, as one commented dict."""

from __future__ import annotations

import sys
from typing import Any

from celery import Celery, signals
from kombu import Queue

from worker.faces.celery.masking import mask_published_headers
from worker.faces.celery.schedule import beat_schedule
from worker.faces.celery.settings_apart import CeleryInputs, checked_database_url, core_values

DEFAULT_QUEUE = "celery"
HISTORY_QUEUE = "pointsync.history"
RESULT_EXPIRES_SECONDS = 6 * 3600
HISTORY_TASKS = ("pointsync.fetch_history", "pointsync.fetch_history_batch",
                 "pointsync.refresh_history", "pointsync.purge_history")


def celery_config(settings: CeleryInputs) -> dict[str, Any]:
    hard = settings.TASK_TIME_LIMIT_SECONDS
    # Above the hard limit, so a running task's message is never handed to a second worker.
    visibility = hard + 600
    return {
        "broker_url": settings.REDIS_URL,
        "result_backend": settings.REDIS_URL,
        # Priorities on Redis (0 is served first): history refreshes go in at the lowest,
        # so a sync or a point transaction never waits behind thousands of them.
        "broker_transport_options": {
            "visibility_timeout": visibility,
            "queue_order_strategy": "priority",
            "priority_steps": list(range(10)),
            "sep": ":",
        },
        "result_backend_transport_options": {"visibility_timeout": visibility},
        "broker_connection_retry_on_startup": True,
        # History work has a queue of its own. A worker started without -Q takes both
        # queues; in production `-Q celery` on the main workers and `-Q pointsync.history`
        # on history workers (Procfile, compose) mean a sync never waits for history.
        "task_default_queue": DEFAULT_QUEUE,
        "task_queues": [Queue(DEFAULT_QUEUE), Queue(HISTORY_QUEUE)],
        "task_routes": {name: {"queue": HISTORY_QUEUE} for name in HISTORY_TASKS},
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        # Ack after the task ran: a worker that dies mid-task leaves its message to another.
        "task_acks_late": True,
        # Every pointsync task is idempotent, so a task whose child died is requeued.
        "task_reject_on_worker_lost": True,
        # One message at a time per process: long syncs do not hoard short tasks.
        "worker_prefetch_multiplier": 1,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        # Soft < hard, both above the HTTP timeouts (seconds), both below visibility.
        "task_soft_time_limit": hard - 60,
        "task_time_limit": hard,
        "task_track_started": True,
        # Redis runs with noeviction and also carries the broker and the locks: a result
        # is kept only where somebody reads it (a sync's summary, a history fetch, a
        # `celery call`), for hours, not days. Tasks sent at traffic's pace (bookings from
        # the web and the sweep, drains, sweeps, history chunks) keep none (tasks.py).
        "result_expires": RESULT_EXPIRES_SECONDS,
        # Task events for Flower: every task shows with its (secret-free) arguments.
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        # A child that has grown past ~500 MB is replaced after its task: memory creep is
        # bounded without restarting children every few seconds under a stream of point
        # transactions (a fresh child rebuilds its clients and pays a slow first request).
        "worker_max_memory_per_child": 500_000,  # KiB
        # One beat at a time: redbeat holds a lock in Redis; a second beat waits on it.
        # Beat rides out a Redis outage (see beat.OutageTolerantScheduler).
        "beat_scheduler": "worker.faces.celery.beat.OutageTolerantScheduler",
        "redbeat_redis_url": settings.REDIS_URL,
        "redbeat_key_prefix": "pointsync:redbeat:",
        "redbeat_lock_timeout": 300,
        "beat_max_loop_interval": 5,
        "beat_schedule": beat_schedule(settings),
        "timezone": "UTC",
        "enable_utc": True,
    }


def create_app() -> Celery:
    settings = core_values()  # read apart: pydantic stays out of the worker (settings_apart)
    # Card numbers masked wherever Celery shows arguments (masking.py: sent, received).
    celery_app = Celery("pointsync", include=["worker.faces.celery.tasks",
                                              "worker.faces.celery.giftcard_tasks",
                                              "worker.faces.celery.relay_tasks"],
                        amqp="worker.faces.celery.masking:MaskingAMQP",
                        task_cls="worker.faces.celery.masking:MaskingTask")
    celery_app.conf.update(celery_config(settings))
    return celery_app


app = create_app()


def _require_full_settings(**_: Any) -> None:
    """Worker and beat refuse to start on a missing or malformed setting, in one line."""
    database_url = checked_database_url()
    from worker.faces.schema_apart import prepare_schema_apart

    # In a child process: the worker and its pool children never hold Alembic, and the
    # worker itself (which runs no task) never loads SQLAlchemy.
    prepare_schema_apart(database_url)


def _after_fork(**_: Any) -> None:
    """A new pool child drops its parent's connections and clients, if the parent had any:
    where the worker never loaded the runtime (it runs no task) there is nothing to drop,
    and importing it here would load the store and clients into an idle child. The child
    runs the flows, so its collector runs less often (base/memory.tune_collector)."""
    from worker.base.memory import tune_collector

    tune_collector()
    runtime = sys.modules.get("worker.faces.runtime")
    if runtime is not None:
        runtime.reset_after_fork()


def _before_fork(**_: Any) -> None:
    """Just before the worker forks a pool child: what is garbage goes now, and what is
    left is frozen (gc.freeze), so the children's collections never write to the objects
    they share with this process (each write would copy a page into the child); free
    heap memory goes back to the system, so no child starts out holding it."""
    import gc

    from worker.base.memory import trim_heap

    gc.collect()
    gc.freeze()
    trim_heap()


# After these tasks a pool child hands back what they held (runtime.release_memory): a sync
# fills two SQLite page caches and the heap with a run's worth of rows, which the point
# transactions the child runs next do not need; hourly, reconnecting costs nothing.
RELEASE_AFTER = frozenset({"pointsync.sync_balances"})


def _release_after_long_task(sender: Any = None, **_: Any) -> None:
    if getattr(sender, "name", None) in RELEASE_AFTER:
        from worker.faces.runtime import release_memory

        release_memory()


def _quiet_http_logs(**_: Any) -> None:
    """httpx logs every request at INFO: at a hundred transactions a second that is
    thousands of lines, and measurable CPU. Failures are logged by the flows themselves."""
    import logging

    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _format_celery_logs(logger: Any = None, **_: Any) -> None:
    """Celery's own handlers (stderr or --logfile, at --loglevel) stay; every line they write,
    Celery's included, takes LOG_FORMAT, the task id, the bound run id, and masked secrets."""
    from celery.utils.log import get_multiprocessing_logger

    from worker.base.logs import use_format

    fmt = core_values().LOG_FORMAT
    # The root logger, then Celery's task logger (it does not propagate), and the pool's
    # multiprocessing logger, which Celery sets up beside the root without a signal.
    for target in (logger, get_multiprocessing_logger()):
        if target is not None:
            use_format(target, fmt)


def _early_worker_logs(**_: Any) -> None:
    """Celery sets up logging only after its privilege check, whose SecurityWarning (as
    root) would be printed raw over several lines: until Celery's setup, warnings and
    errors take LOG_FORMAT too (INFO lines stay dropped there, as before)."""
    import logging

    from worker.base.logs import configure_logging

    configure_logging(core_values().LOG_FORMAT, "WARNING")
    logging.captureWarnings(True)


def _no_banner_in_json(ctx: Any, _param: Any, _value: Any) -> None:
    """The worker's and beat's start-up banners are printed, not logged: in JSON mode they
    would be the only lines that are not JSON, so there they are left out, as with
    `celery -q`. Run as the callback of a hidden option of those two commands, because
    Click calls it after the CLI context exists and before the command reads `quiet`."""
    if core_values().LOG_FORMAT == "json" and ctx.obj is not None:
        ctx.obj.quiet = True


def _hook_banner_option(celery_app: Celery) -> None:
    import click

    for command in ("worker", "beat"):
        celery_app.user_options[command].add(click.Option(
            ["--pointsync-log-format-hook"], is_flag=True, hidden=True, expose_value=False,
            callback=_no_banner_in_json,
        ))


_hook_banner_option(app)
signals.after_setup_logger.connect(_quiet_http_logs, weak=False)
signals.after_setup_logger.connect(_format_celery_logs, weak=False)
signals.after_setup_task_logger.connect(_format_celery_logs, weak=False)
signals.celeryd_init.connect(_early_worker_logs, weak=False)
signals.worker_init.connect(_require_full_settings, weak=False)
signals.beat_init.connect(_require_full_settings, weak=False)
signals.worker_before_create_process.connect(_before_fork, weak=False)
signals.worker_process_init.connect(_after_fork, weak=False)
signals.task_postrun.connect(_release_after_long_task, weak=False)
signals.before_task_publish.connect(mask_published_headers, weak=False)
