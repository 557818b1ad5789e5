"""docker-compose.yml and the Procfile are checked against the real CLI and settings: no
Docker engine runs here, so a typo in a command or a variable would otherwise surface only
at deployment."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from sims import senders
from sims.harness import BIN
from sims.relays import atreemo, contlo
from tests.support.unit import BASE_ENV
from worker.base.settings import Settings, WebSettings

pytestmark = pytest.mark.integration  # starts processes

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
OURS = ("worker", "history", "beat", "web", "flower")
# ${NAME:-default} → default; ${NAME:?message} and ${NAME} → a placeholder value.
_VARIABLE = re.compile(r"\$\{([A-Z_]+)(?::-([^}]*)|:\?[^}]*)?\}")


def expanded(text: str) -> str:
    return _VARIABLE.sub(lambda m: m.group(2) if m.group(2) is not None else "user:secret", text)


def procfile() -> dict[str, list[str]]:
    """Each process's command; a leading `: "${VAR:?…}" && exec` guard is left out (see
    procfile_guards)."""
    entries = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        name, _, command = line.partition(":")
        words = shlex.split(expanded(command))
        if words[0] == ":":
            words = words[words.index("&&") + 1:]
            words = words[1:] if words[0] == "exec" else words
        entries[name.strip()] = words
    return entries


def procfile_guards() -> dict[str, list[str]]:
    """Variables a Procfile line refuses to start without (`: "${VAR:?message}" && …`)."""
    guards = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        name, _, command = line.partition(":")
        if command.strip().startswith(":"):
            guard = command.split("&&", 1)[0]
            guards[name.strip()] = re.findall(r"\$\{([A-Z_]+):\?", guard)
    return guards


def flower_options_known(args: list[str]) -> bool:
    """Flower hands options it does not know on to tornado, so `--help` accepts anything:
    check its options against the ones flower defines instead."""
    import flower.options  # noqa: F401  (defines them)
    from tornado.options import options

    after = args[args.index("flower") + 1:]
    names = [a[2:].split("=", 1)[0].replace("_", "-") for a in after if a.startswith("--")]
    return all(name in options._options for name in names)


def accepted(command: list[str]) -> subprocess.CompletedProcess[str]:
    """Run the command's own parser on it: every option must be known (`--help` appended
    exits 0 only when everything before it parses)."""
    program, *args = command
    if "flower" in args and not flower_options_known(args):
        return subprocess.CompletedProcess(command, 2, "", f"unknown flower option in {args}")
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([str(BIN / program), *args, "--help"], capture_output=True,
                          text=True, timeout=60, env=env)


def test_compose_runs_every_process_with_health_checks_and_restarts() -> None:
    assert set(OURS) | {"redis", "postgres", "sim"} <= set(SERVICES)
    for name in (*OURS, "redis", "postgres"):
        assert SERVICES[name].get("restart") == "unless-stopped", name
    for name in ("redis", "postgres", "worker", "history", "web", "flower"):
        assert SERVICES[name]["healthcheck"]["test"], name
    assert SERVICES["sim"]["profiles"] == ["demo"]


def test_compose_redis_never_evicts_and_persists() -> None:
    command = SERVICES["redis"]["command"]
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"
    assert command[command.index("--appendonly") + 1] == "yes"
    assert SERVICES["redis"]["volumes"]


def test_compose_passes_only_settings_that_exist() -> None:
    known = set(WebSettings.model_fields)
    for name in OURS:
        extra = {"FLOWER_BASIC_AUTH"} if name == "flower" else set()  # Flower's own
        assert set(SERVICES[name]["environment"]) <= known | extra, name
    web = SERVICES["web"]["environment"]
    assert web["WEB_HOST"] == "0.0.0.0" and {"WEBHOOK_SECRET", "WEB_API_KEY"} <= set(web)


# Every relay setting (docs/relays.md): web receives the webhooks, the workers deliver.
RELAY_SETTINGS = sorted(name for name in Settings.model_fields if name.startswith(
    ("TOGGLE_WEBHOOK_", "ATREEMO_", "NECTOR_", "CONTLO_", "RELAY_")))


def compose_settings(service: str, **variables: str) -> Settings:
    """The settings a service gets from compose when .env holds `variables` (and valid
    Treazure and Engage settings: placeholders would not parse)."""
    given = {name: expanded(str(value)) for name, value in
             SERVICES[service]["environment"].items() if name in Settings.model_fields}
    return Settings(**{**given, **BASE_ENV, **variables})


def demo_comment() -> dict[str, str]:
    """The NAME=value pairs the comment above the `sim` service tells the operator to set."""
    lines = (ROOT / "docker-compose.yml").read_text().splitlines()
    at = lines.index("  sim:")
    block = []
    while lines[at - 1].startswith("  #"):
        at -= 1
        block.append(lines[at])
    return dict(re.findall(r"\b([A-Z_]+)=(\S+)", "\n".join(block)))


def option(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def test_compose_passes_every_relay_setting_to_web_and_the_workers() -> None:
    assert len(RELAY_SETTINGS) == 11  # a new one is passed here too
    for name in ("web", "worker", "history", "beat"):
        assert set(RELAY_SETTINGS) <= set(SERVICES[name]["environment"]), name
        # Left unset in .env, every relay is off and the settings still load.
        settings = compose_settings(name)
        assert not settings.toggle_relay_enabled and not settings.nector_relay_enabled
        assert not settings.toggle_enabled


def test_the_demo_comment_turns_both_relays_on_against_the_sim_service() -> None:
    sim = SERVICES["sim"]["command"]
    settings = compose_settings("web", **demo_comment())

    assert settings.toggle_relay_enabled and settings.nector_relay_enabled
    atreemo_url, contlo_url = settings.ATREEMO_WEBHOOK_URL, settings.CONTLO_BASE_URL
    assert atreemo_url is not None and atreemo_url.host == contlo_url.host == "sim"
    assert str(atreemo_url.port) == option(sim, "--atreemo-port")
    assert atreemo_url.path == atreemo.PATH
    assert str(contlo_url.port) == option(sim, "--contlo-port")
    for port in (option(sim, "--atreemo-port"), option(sim, "--contlo-port")):
        assert f"{port}:{port}" in SERVICES["sim"]["ports"]
    # The simulators' own secret and key, and the source secrets the signed sender uses.
    secret = settings.ATREEMO_WEBHOOK_SECRET
    key = settings.CONTLO_API_KEY
    assert secret is not None and secret.get_secret_value() == atreemo.SECRET
    assert key is not None and key.get_secret_value() == contlo.API_KEY
    for name, value in (("TOGGLE_WEBHOOK_SECRET", senders.TOGGLE_WEBHOOK_SECRET),
                        ("NECTOR_WEBHOOK_SECRET", senders.NECTOR_WEBHOOK_SECRET)):
        assert getattr(settings, name).get_secret_value() == value


def test_procfile_and_compose_name_the_same_processes() -> None:
    assert set(procfile()) == set(OURS)
    main, history = procfile()["worker"], procfile()["history"]
    assert main[main.index("-Q") + 1] == "celery"
    assert history[history.index("-Q") + 1] == "pointsync.history"
    compose_history = SERVICES["history"]["command"]
    assert compose_history[compose_history.index("-Q") + 1] == "pointsync.history"



def test_flower_takes_its_password_from_the_environment_and_needs_one() -> None:
    # On the command line `ps` would show the password; Flower reads FLOWER_BASIC_AUTH.
    assert not any("basic-auth" in word for word in procfile()["flower"])
    assert procfile_guards() == {"flower": ["FLOWER_BASIC_AUTH"]}
    compose = SERVICES["flower"]
    assert not any("basic-auth" in word for word in compose["command"])
    assert compose["environment"]["FLOWER_BASIC_AUTH"].startswith("${FLOWER_BASIC_AUTH:?")


@pytest.mark.parametrize("name", OURS)
def test_every_procfile_command_parses_with_the_real_cli(name: str) -> None:
    done = accepted(procfile()[name])
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.parametrize("name", [*OURS, "sim"])
def test_every_compose_command_parses_with_the_real_cli(name: str) -> None:
    done = accepted([expanded(part) for part in SERVICES[name]["command"]])
    assert done.returncode == 0, done.stderr[-2000:]


def test_a_mistyped_option_is_caught() -> None:
    # The check itself: an unknown option does not parse.
    assert accepted(["celery", "-A", "worker", "worker", "--concurency", "2"]).returncode != 0
    assert accepted(["pointsync", "web", "--port", "1"]).returncode != 0
    assert accepted(["celery", "-A", "worker", "flower", "--basic_auth=a:b"]).returncode == 0
    assert accepted(["celery", "-A", "worker", "flower", "--basic-oauth=a:b"]).returncode != 0


def test_the_image_holds_every_package_the_compose_commands_need() -> None:
    # The demo profile's `sim` service runs `pointsync sim`, a plugin from sims/: an image
    # built without it would start and have no such command.
    copied = {line.split()[1] for line in (ROOT / "Dockerfile").read_text().splitlines()
              if line.startswith("COPY ")}
    assert {"worker", "sims"} <= copied
