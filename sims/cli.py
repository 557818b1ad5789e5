"""The tools' `pointsync` commands, `sim` and `demo`: a plugin of the operator CLI (entry
point group `pointsync.cli` in pyproject.toml), so worker/ never imports sims/."""

from __future__ import annotations

from typing import Annotated

import typer


def sim(
    host: str = "127.0.0.1",
    treazure_port: int = 8101,
    engage_port: int = 8102,
    toggle_port: int = 8103,
    atreemo_port: Annotated[int, typer.Option(
        help="Atreemo's ingestion endpoint: ATREEMO_WEBHOOK_URL is its URL plus "
             "/ingest/toggle.")] = 8104,
    contlo_port: Annotated[int, typer.Option(help="Contlo's API: CONTLO_BASE_URL.")] = 8105,
    seed_contacts: Annotated[int, typer.Option(help="Accounts to create at start.")] = 0,
    seed_changed: Annotated[int | None, typer.Option(help="How many changed lately.")] = None,
) -> None:
    """Run the Treazure, Engage and Toggle simulators and the relays' destinations, Atreemo
    and Contlo (demo, tests, benchmark). Port 0: any free port."""
    # Local: this module is loaded by every `pointsync` command; the simulators' web stack
    # is loaded only by the command that runs them.
    from sims.server import run

    run(host, treazure_port, engage_port, seed_contacts, seed_changed, toggle_port,
        atreemo_port, contlo_port)


def demo(
    contacts: Annotated[int, typer.Option(help="Contacts seeded in the simulators.")] = 50_000,
) -> None:
    """The main job end to end on embedded defaults: Redis, simulators, worker, beat, a sync."""
    # Local, as above: the demo's harness loads Celery and the simulators.
    from sims.demo import run_demo

    raise typer.Exit(run_demo(contacts))


def register(cli: typer.Typer) -> None:
    """Adds `sim` and `demo` to the `pointsync` root command."""
    cli.command()(sim)
    cli.command()(demo)
