"""pointsync: Treazure → Engage point sync on Celery.

`celery -A worker …` finds `app` here. It is built on first access, not on import, so that
importing any module below the faces (worker.base.money, say) builds no Celery app and
reads no settings.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from celery import Celery

    app: Celery

__all__ = ["app"]


def __getattr__(name: str) -> Any:
    if name == "app":
        from worker.faces.celery.app import app

        return app
    raise AttributeError(f"module 'worker' has no attribute {name!r}")
