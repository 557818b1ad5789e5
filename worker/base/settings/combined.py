"""Settings: every connector's settings on top of the core ones, as the worker's tasks,
the CLI and the web process read them. A connector's own settings are in its module."""

from __future__ import annotations

from worker.base.settings.core import CoreSettings
from worker.base.settings.relays import RelaySettings
from worker.base.settings.toggle import ToggleSettings
from worker.base.settings.treazure_engage import TreazureEngageSettings


# The bases in reverse: pydantic takes the fields (and so the order in which an error
# names them) from the last base first, i.e. core, Treazure/Engage, Toggle, relays.
class Settings(RelaySettings, ToggleSettings, TreazureEngageSettings, CoreSettings):
    """Read from the environment (and `.env`) as CoreSettings is; each connector's
    validators run as its own module defines them."""
