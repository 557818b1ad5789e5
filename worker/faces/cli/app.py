"""The `pointsync` operator CLI: the root command, its command groups, and the plugins that
add commands from outside worker/ (entry points in the group `pointsync.cli`)."""

from __future__ import annotations

import logging
from importlib.metadata import entry_points

import typer

from worker.base.logs import configure_logging
from worker.base.settings import ConfigError, exit_on_config_error, get_core_settings
from worker.faces.cli import doctor, history, migrate, reconcile, sync, web
from worker.faces.cli.giftcards import giftcard_cli
from worker.faces.cli.output import console
from worker.faces.cli.points import points_cli
from worker.faces.cli.relays import relay_cli
from worker.faces.runtime import prepare_store

PLUGIN_GROUP = "pointsync.cli"

cli = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="pointsync: Treazure → Engage point sync, operated from a terminal.")
db_cli = typer.Typer(no_args_is_help=True, help="The worker's own database.")


@db_cli.command("upgrade")
def db_upgrade() -> None:
    """Create or upgrade the schema to the newest migration."""
    prepare_store(get_core_settings().DATABASE_URL)
    console.print("database schema is up to date")


def add_plugins(root: typer.Typer) -> None:
    """Each entry point in `pointsync.cli` names a function that adds its commands to the
    root. One whose module is not installed (an image without the tools) adds nothing."""
    for entry in entry_points(group=PLUGIN_GROUP):
        try:
            register = entry.load()
        except ModuleNotFoundError as exc:
            if exc.name is None or not (entry.module + ".").startswith(exc.name + "."):
                raise  # the plugin is there but broken: say so
            continue
        register(root)


# The order here is the order of `pointsync --help`.
cli.command()(sync.status)
cli.command()(sync.sync)
cli.command("history")(history.history)
cli.command()(web.web)
add_plugins(cli)
cli.command()(migrate.migrate)
cli.command()(reconcile.reconcile)
cli.command()(doctor.doctor)
cli.add_typer(db_cli, name="db")
cli.add_typer(points_cli, name="points")
cli.add_typer(giftcard_cli, name="giftcard")
cli.add_typer(relay_cli, name="relay")


def _configure_logging() -> None:
    """LOG_FORMAT as everywhere else; at WARNING at least, since a terminal has the
    progress bars and summaries for what the flows log at INFO."""
    settings = get_core_settings()
    level = max(logging.getLevelName(settings.LOG_LEVEL), logging.WARNING)
    configure_logging(settings.LOG_FORMAT, logging.getLevelName(level))


def main() -> None:
    try:
        _configure_logging()
        cli()
    except ConfigError as exc:
        exit_on_config_error(exc)


if __name__ == "__main__":
    main()
