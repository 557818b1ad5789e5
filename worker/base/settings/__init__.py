"""Every knob of the worker, read from the environment (and `.env`) and validated at start-up.

Three layers so that each process demands only what it uses: the broker and store settings
(core.py: enough for `celery call`, the CLI's read-only commands and the simulators), the
settings every flow needs (combined.Settings: Treazure and Engage, Toggle, the relays, each
in its own module), and the web process's own secrets (web.py). Environment variables are
the fields' names.
"""

from __future__ import annotations

from worker.base.settings.combined import Settings
from worker.base.settings.core import CoreSettings, is_database_url
from worker.base.settings.loading import (
    ConfigError,
    clear_cache,
    exit_on_config_error,
    get_core_settings,
    get_settings,
    get_web_settings,
    load_settings,
)
from worker.base.settings.relays import NECTOR_RELAY_SETTINGS, TOGGLE_RELAY_SETTINGS
from worker.base.settings.web import WebSettings

__all__ = [
    "NECTOR_RELAY_SETTINGS", "TOGGLE_RELAY_SETTINGS", "ConfigError", "CoreSettings",
    "Settings", "WebSettings", "clear_cache", "exit_on_config_error", "get_core_settings",
    "get_settings", "get_web_settings", "is_database_url", "load_settings",
]
