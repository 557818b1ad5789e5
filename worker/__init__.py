"""pointsync: Treazure → Engage point sync on Celery. `celery -A worker …` finds `app` here."""

from worker.celery import app

__all__ = ["app"]
