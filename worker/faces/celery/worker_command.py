"""`python -m worker.faces.celery.worker_command [options]`: the worker that
`celery -A worker worker [options]` starts (the same app, options, signals and banner),
without the rest of Celery's command line.

The `celery` command imports all its subcommands and plugins before it reads `-A`:
Flower's (tornado, prometheus_client), the amqp shell's (click_repl, prompt_toolkit),
pygments. None of them runs in a worker, yet they take about 12 MB in its main process and
the same again in every pool child forked from it (idle at --concurrency 2, summed RSS
185.8 → 150.3 MB). Beat and the other commands stay with `celery -A worker …`.
"""

from __future__ import annotations

import sys

from celery import maybe_patch_concurrency


def main(argv: list[str] | None = None) -> None:
    """Run the worker command with `argv` (default: this process's arguments); exits."""
    args = sys.argv[1:] if argv is None else argv
    # As the `celery` command does first: -P gevent/eventlet patch before anything loads.
    maybe_patch_concurrency(["celery", "worker", *args])
    from celery.bin.base import CLIContext
    from celery.bin.worker import worker

    from worker import app

    # What the `celery` group does before its worker subcommand: the app's own options
    # (faces/celery/app.py adds a hidden one) and the context the command reads.
    worker.params.extend(app.user_options.get("worker", []))
    worker.main(args=args, prog_name="celery worker",
                obj=CLIContext(app=app, no_color=False, workdir=None))


if __name__ == "__main__":
    main()
