"""Card numbers masked in what Celery shows of a task's arguments (Flower, events, logs).

`pointsync.adjust_gift_card` and `pointsync.gift_card_balance` take the full card number
(the till needs it). Celery shows a task's arguments through the `argsrepr`/`kwargsrepr`
the SENDER writes into the message headers (protocol 2), and through the `task-sent` event
it builds from the same strings. Three hooks, each cheap:

- `MaskingAMQP` (the app's `amqp` class): the reprs are computed masked when the message
  is built, so the headers and the `task-sent` event agree. A `before_task_publish` handler
  alone cannot reach that event: Celery builds it before the signal and does not pass it.
- `mask_published_headers` (`before_task_publish`): rewrites the headers of every message
  our processes send, whatever built them: the last word before the broker.
- `MaskingRequest` (the tasks' Request class): the worker's "Task … received" log line and
  its `task-received` event use the message's reprs; a message from a sender outside
  pointsync (another language, a raw `celery call`) gets its numbers masked there too.
  The message body itself carries the full number: whoever reads the broker's queue sees
  it, as the task needs it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from celery import Task
from celery.app.amqp import AMQP
from celery.utils.saferepr import saferepr
from celery.worker.request import Request

from worker.systems.toggle.cards import mask_card_number

CARD_ARGUMENT = "card_reference"
# Tasks whose first positional argument is a card number (interface.md).
CARD_TASKS = frozenset({"pointsync.adjust_gift_card", "pointsync.gift_card_balance"})
# Celery's own bounds for the reprs (celery.app.amqp.AMQP.argsrepr_maxsize).
REPR_MAXSIZE = 1024
# A number Toggle issued, anywhere in a text (not part of a longer run of digits).
_ISSUED_NUMBER = re.compile(r"(?<!\d)63011900\d{11}(?!\d)")


def mask_text(text: str) -> str:
    """Every issued card number in `text` masked (aliases are masked by argument name)."""
    return _ISSUED_NUMBER.sub(lambda found: mask_card_number(found.group()), text)


def masked_arguments(
    name: str, args: Sequence[Any] | None, kwargs: Mapping[str, Any] | None,
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Copies of the arguments with the card number masked (by name or position)."""
    shown_args = tuple(args or ())
    shown_kwargs = dict(kwargs or {})
    if name in CARD_TASKS and shown_args and isinstance(shown_args[0], str):
        shown_args = (mask_card_number(shown_args[0]), *shown_args[1:])
    if isinstance(shown_kwargs.get(CARD_ARGUMENT), str):
        shown_kwargs[CARD_ARGUMENT] = mask_card_number(shown_kwargs[CARD_ARGUMENT])
    return shown_args, shown_kwargs


def masked_reprs(
    name: str, args: Sequence[Any] | None, kwargs: Mapping[str, Any] | None,
    maxlevels: int = 3,
) -> tuple[str, str]:
    """The `argsrepr`/`kwargsrepr` Celery would write, with card numbers masked."""
    shown_args, shown_kwargs = masked_arguments(name, args, kwargs)
    return (mask_text(saferepr(shown_args, REPR_MAXSIZE, maxlevels=maxlevels)),
            mask_text(saferepr(shown_kwargs, REPR_MAXSIZE, maxlevels=maxlevels)))


def mask_published_headers(
    sender: str | None = None, body: Any = None, headers: dict[str, Any] | None = None,
    **_: Any,
) -> None:
    """`before_task_publish`: rewrite the headers' reprs in place (Celery publishes this
    very dict). The body of protocol 2 is still `(args, kwargs, embed)` here."""
    if not headers:
        return
    name = str(headers.get("task") or sender or "")
    if isinstance(body, tuple) and len(body) >= 2:
        masked = masked_reprs(name, body[0], body[1])
        for key, values, shown in zip(("argsrepr", "kwargsrepr"), body[:2], masked,
                                      strict=True):
            # Celery's own repr of the arguments is rebuilt masked; a caller's own repr
            # (it may leave out more than card numbers) is kept, its numbers masked.
            if headers.get(key) in (None, saferepr(values, REPR_MAXSIZE)):
                headers[key] = shown
    for key in ("argsrepr", "kwargsrepr"):
        if isinstance(headers.get(key), str):
            headers[key] = mask_text(headers[key])


class MaskingAMQP(AMQP):
    """Messages built with masked reprs, so the `task-sent` event shows no number."""

    def as_task_v2(self, task_id: str, name: str, args: Any = None, kwargs: Any = None,
                   *rest: Any, argsrepr: str | None = None, kwargsrepr: str | None = None,
                   **options: Any) -> Any:
        levels = self.app.conf.task_repr_maxlevels
        shown_args, shown_kwargs = masked_reprs(name, args, kwargs, levels)
        # A caller's own reprs are kept, with any issued number in them masked.
        argsrepr = mask_text(argsrepr) if argsrepr is not None else shown_args
        kwargsrepr = mask_text(kwargsrepr) if kwargsrepr is not None else shown_kwargs
        return super().as_task_v2(task_id, name, args, kwargs, *rest, argsrepr=argsrepr,
                                  kwargsrepr=kwargsrepr, **options)


class MaskingRequest(Request):
    """The worker's view of a received message, with the reprs masked once on arrival:
    its "received" log line, `task-received` event and `inspect` answers read them."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self._type in CARD_TASKS:
            self._argsrepr, self._kwargsrepr = masked_reprs(self._type, self.args, self.kwargs)
        else:
            self._argsrepr = mask_text(str(self._argsrepr))
            self._kwargsrepr = mask_text(str(self._kwargsrepr))


class MaskingTask(Task):
    """The app's task base: received messages go through MaskingRequest."""

    Request = "worker.faces.celery.masking:MaskingRequest"
