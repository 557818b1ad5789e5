"""Card numbers masked in what Celery shows of a task's arguments: the headers a sender
writes (Flower, the worker's log and events read them), the `task-sent` event, and a
received message from a sender that did not mask them."""

from __future__ import annotations

import base64
import json
import os
import uuid
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import redis
from celery import Celery, signals
from celery.utils.saferepr import saferepr

from worker.faces.celery.masking import (
    MaskingAMQP,
    MaskingRequest,
    mask_published_headers,
    mask_text,
)

NUMBER = "6301190000000010001"
SHOWN = "6301 19•• •••• ••• 0001"
ALIAS = "4111222233334444"  # a card moved from another provider, found by its alias
REDIS_URL = os.environ.get("IT_REDIS_URL", "redis://127.0.0.1:6379/3")


def headers_for(task: str, body: tuple[Any, ...]) -> dict[str, Any]:
    """Protocol 2's headers as Celery's AMQP class writes them (the full reprs)."""
    return {"task": task, "id": "t-1", "argsrepr": saferepr(body[0], 1024),
            "kwargsrepr": saferepr(body[1], 1024)}


def test_the_publish_handler_masks_the_card_argument_by_name_and_position() -> None:
    by_name = ((), {"card_reference": ALIAS, "value": "-5.00", "site": "london"}, {})
    kwargs_call = headers_for("pointsync.adjust_gift_card", by_name)
    assert ALIAS in kwargs_call["kwargsrepr"]
    mask_published_headers(sender="pointsync.adjust_gift_card", headers=kwargs_call,
                           body=by_name)
    by_position = ((NUMBER,), {}, {})
    positional = headers_for("pointsync.gift_card_balance", by_position)
    mask_published_headers(sender="pointsync.gift_card_balance", headers=positional,
                           body=by_position)
    assert ALIAS not in kwargs_call["kwargsrepr"] and "4444" in kwargs_call["kwargsrepr"]
    assert "'site': 'london'" in kwargs_call["kwargsrepr"]  # the rest as Celery shows it
    assert positional["argsrepr"] == repr((SHOWN,))


def test_an_issued_number_in_any_other_task_is_masked_and_other_digits_are_kept() -> None:
    body = ((), {"description": f"card {NUMBER}", "contact_id": "12345678901234567890"}, {})
    headers = headers_for("pointsync.add_points", body)
    mask_published_headers(sender="pointsync.add_points", headers=headers, body=body)
    assert NUMBER not in headers["kwargsrepr"] and SHOWN in headers["kwargsrepr"]
    assert "12345678901234567890" in headers["kwargsrepr"]
    # A body that is not protocol 2's tuple: the strings themselves are masked.
    other = {"task": "x", "argsrepr": f"('{NUMBER}',)", "kwargsrepr": "{}"}
    mask_published_headers(sender="x", headers=other, body=b"{}")
    assert other["argsrepr"] == f"('{SHOWN}',)"
    assert mask_text(NUMBER + "9") == NUMBER + "9"  # a longer run of digits is not a card


@pytest.fixture
def queue() -> Iterator[tuple[redis.Redis, str]]:
    connection = redis.Redis.from_url(REDIS_URL)
    name = f"masking-test-{uuid.uuid4().hex}"
    yield connection, name
    connection.delete(name)
    connection.close()


def test_a_real_send_puts_masked_reprs_on_the_broker(queue: tuple[redis.Redis, str]) -> None:
    connection, name = queue
    # A plain app (Celery's own AMQP class): the publish handler alone does the masking.
    signals.before_task_publish.connect(mask_published_headers, weak=False)
    sender = Celery("masking-test", broker=REDIS_URL)
    try:
        sender.send_task("pointsync.adjust_gift_card", queue=name, kwargs={
            "card_reference": NUMBER, "value": "-5.00", "site": "london", "reference": "R"})
    finally:
        sender.close()
    (raw,) = connection.lrange(name, 0, -1)
    message = json.loads(raw)
    assert NUMBER not in message["headers"]["kwargsrepr"]
    assert SHOWN in message["headers"]["kwargsrepr"]
    # The task still gets the full number: only what is shown is masked.
    _args, kwargs, _ = json.loads(base64.b64decode(message["body"]))
    assert kwargs["card_reference"] == NUMBER


def test_the_sent_event_is_built_from_masked_reprs() -> None:
    app = Celery("masking-test", amqp=MaskingAMQP, set_as_current=False)
    message = app.amqp.create_task_message(
        "t-1", "pointsync.gift_card_balance", (NUMBER,), {}, create_sent_event=True)
    assert message.sent_event["args"] == repr((SHOWN,))
    assert message.headers["argsrepr"] == repr((SHOWN,))
    assert message.body[0] == (NUMBER,)
    # A caller's own repr is kept, any issued number in it masked.
    own = app.amqp.create_task_message(
        "t-2", "pointsync.adjust_gift_card", (), {"card_reference": NUMBER},
        kwargsrepr=f"{{'card': '{NUMBER}'}}")
    assert own.headers["kwargsrepr"] == f"{{'card': '{SHOWN}'}}"


def _noop(*_: Any, **__: Any) -> None:
    return None


def received(task: str, body: tuple[Any, ...], argsrepr: str, kwargsrepr: str) -> Any:
    """A message as a sender outside pointsync wrote it: the full number in its reprs."""
    headers = {"task": task, "id": "t-1", "argsrepr": argsrepr, "kwargsrepr": kwargsrepr}
    message = SimpleNamespace(headers=headers, body=body, payload=body,
                              content_type="application/json", content_encoding="utf-8",
                              delivery_info={}, properties={})
    app = Celery("masking-test", set_as_current=False)
    return MaskingRequest(message, app=app, task=app.task(name=task, shared=False)(_noop),
                          decoded=True, body=body, headers=headers)


def test_the_worker_masks_a_foreign_senders_reprs_on_arrival() -> None:
    till = received("pointsync.gift_card_balance", ((ALIAS,), {}, {}), f"('{ALIAS}',)", "{}")
    other = received("other.task", ((), {"n": NUMBER}, {}), "()", f"{{'n': '{NUMBER}'}}")
    assert ALIAS not in till.argsrepr and "4444" in till.argsrepr
    assert till.args == [ALIAS] or till.args == (ALIAS,)  # the task still gets it whole
    assert other.kwargsrepr == f"{{'n': '{SHOWN}'}}"
    assert NUMBER not in repr(other) and ALIAS not in str(till.info(safe=True))


def test_a_callers_own_repr_is_kept_with_its_numbers_masked() -> None:
    body = ((), {"card_reference": NUMBER, "note": "private"}, {})
    headers = headers_for("pointsync.adjust_gift_card", body)
    headers["kwargsrepr"] = f"{{'card_reference': '{NUMBER}', 'note': '(left out)'}}"
    mask_published_headers(sender="pointsync.adjust_gift_card", headers=headers, body=body)
    assert headers["kwargsrepr"] == f"{{'card_reference': '{SHOWN}', 'note': '(left out)'}}"
