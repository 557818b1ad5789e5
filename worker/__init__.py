"""pointsync: Treazure → Engage point sync on Celery.

`celery -A worker …` finds `app` here. It is built on first access, not on import, so that
importing any module below the faces (worker.base.money, say) builds no Celery app and
reads no settings.
"""

from __future__ import annotations

import sys
from types import ModuleType
from typing import TYPE_CHECKING, Any, cast

# httpx's package imports its command-line tool whenever rich, pygments and click are
# installed (typer brings them): about 3 MB in every process, each Celery pool child
# included, for a tool no pointsync process runs. Marked as absent, httpx defines a stub
# in its place (None in sys.modules makes an import fail with ImportError). No effect where
# httpx was imported before this package.
sys.modules.setdefault("httpx._main", cast(ModuleType, None))

if TYPE_CHECKING:
    from celery import Celery

    app: Celery

__all__ = ["app"]


def __getattr__(name: str) -> Any:
    if name == "app":
        from worker.faces.celery.app import app

        return app
    raise AttributeError(f"module 'worker' has no attribute {name!r}")
