"""Queue depths read from the broker's Redis keys: on fakeredis, and on a real Redis filled
by real Celery sends (so kombu's key names are checked, not assumed)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import fakeredis
import pytest
import redis
from celery import Celery

from worker.base.settings import CoreSettings
from worker.faces.celery.app import DEFAULT_QUEUE, HISTORY_QUEUE, celery_config
from worker.faces.celery.queues import (
    PRIORITY_STEPS,
    SEP,
    celery_queues,
    priority_keys,
    queue_depths,
    unacked_count,
)

# A database of its own: the test empties it before and after.
REAL_REDIS = os.environ.get("QUEUES_TEST_REDIS_URL", "redis://127.0.0.1:6379/7")


def test_priority_keys_follow_kombus_naming() -> None:
    assert priority_keys("celery") == ["celery"] + [f"celery:{p}" for p in range(1, 10)]


def test_the_priority_layout_is_the_one_celery_py_configures() -> None:
    options = celery_config(CoreSettings())["broker_transport_options"]
    assert options["queue_order_strategy"] == "priority"
    assert tuple(options["priority_steps"]) == PRIORITY_STEPS
    assert options["sep"] == SEP


def test_the_default_queues_are_celery_pys() -> None:
    assert celery_queues() == (DEFAULT_QUEUE, HISTORY_QUEUE)


def test_depths_sum_every_priority_list_of_each_queue() -> None:
    fake = fakeredis.FakeRedis()
    fake.lpush("celery", "a", "b")
    fake.lpush("celery:3", "c")
    fake.lpush("celery:9", "d")
    fake.lpush("pointsync.history:9", "e", "f", "g")
    fake.lpush("other", "x")  # not one of ours
    fake.lpush("celery:10", "y")  # not a priority step

    assert queue_depths(fake) == {"celery": 4, "pointsync.history": 3}
    assert queue_depths(fake, ("other",)) == {"other": 1}


def test_empty_broker_has_zero_depths_and_nothing_unacked() -> None:
    fake = fakeredis.FakeRedis()
    assert queue_depths(fake) == {"celery": 0, "pointsync.history": 0}
    assert unacked_count(fake) == 0


def test_unacked_counts_the_fields_of_kombus_hash() -> None:
    fake = fakeredis.FakeRedis()
    fake.hset("unacked", mapping={"tag-1": "m1", "tag-2": "m2"})
    assert unacked_count(fake) == 2


@pytest.fixture
def real_redis() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REAL_REDIS)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture
def sender() -> Iterator[Celery]:
    """The worker's broker configuration, pointed at the test's database."""
    app = Celery("pointsync-queues-test", set_as_current=False)
    app.conf.update(celery_config(CoreSettings(REDIS_URL=REAL_REDIS)), beat_schedule={})
    yield app
    app.close()


def test_real_sends_at_every_priority_are_all_counted(
    real_redis: redis.Redis, sender: Celery
) -> None:
    for priority in (None, 0, 4, 9, 9):
        options = {} if priority is None else {"priority": priority}
        sender.send_task("pointsync.sync_balances", **options)
    sender.send_task("pointsync.fetch_history", kwargs={"contact_id": "c"}, priority=9)
    sender.send_task("pointsync.purge_history")  # routed to the history queue

    keys = {key.decode() for key in real_redis.keys("*") if not key.startswith(b"_kombu")}
    assert keys == {"celery", "celery:4", "celery:9", "pointsync.history",
                    "pointsync.history:9"}
    assert queue_depths(real_redis) == {"celery": 5, "pointsync.history": 2}


def test_a_delivered_unacked_message_moves_from_the_queue_to_unacked(
    real_redis: redis.Redis, sender: Celery
) -> None:
    sender.send_task("pointsync.sync_balances", priority=9)
    sender.send_task("pointsync.sync_balances")
    with sender.connection_for_read() as connection:
        channel = connection.default_channel
        message = channel.basic_get(DEFAULT_QUEUE, no_ack=False)  # as a worker takes one
        assert message is not None

        assert queue_depths(real_redis)[DEFAULT_QUEUE] == 1
        assert unacked_count(real_redis) == 1

        message.ack()
        assert unacked_count(real_redis) == 0
