"""How many Celery messages wait on the Redis broker, read straight from its keys.

kombu emulates priorities on Redis with one list per priority step (celery.py sets
`queue_order_strategy: priority`, steps 0..9, `sep: ":"`): priority 0 is the list named
like the queue itself, priority p > 0 the list `QUEUE:p` (kombu's `Channel._q_for_pri`).
Messages delivered to a worker but not yet acknowledged (acks late: running tasks, and the
one each process prefetched) leave the lists for kombu's `unacked` hash.
"""

from __future__ import annotations

from redis import Redis

# Must match broker_transport_options in celery.py (a unit test checks that they do).
PRIORITY_STEPS = tuple(range(10))
SEP = ":"
UNACKED_KEY = "unacked"  # kombu's default `unacked_key`; celery.py does not change it


def priority_keys(queue: str) -> list[str]:
    """The Redis lists that hold one logical queue, highest priority (0) first."""
    return [f"{queue}{SEP}{step}" if step else queue for step in PRIORITY_STEPS]


def celery_queues() -> tuple[str, ...]:
    """The queues celery.py declares. Imported late: importing worker.faces.celery.app builds the
    Celery app from the settings, which a process should have validated first."""
    from worker.faces.celery.app import DEFAULT_QUEUE, HISTORY_QUEUE

    return (DEFAULT_QUEUE, HISTORY_QUEUE)


def queue_depths(redis: Redis, queues: tuple[str, ...] | None = None) -> dict[str, int]:
    """Messages waiting per queue (default: celery.py's), summed over its priority lists,
    in one round trip."""
    queues = celery_queues() if queues is None else queues
    pipe = redis.pipeline(transaction=False)
    for queue in queues:
        for key in priority_keys(queue):
            pipe.llen(key)
    lengths = iter(pipe.execute())
    return {queue: sum(next(lengths) for _ in PRIORITY_STEPS) for queue in queues}


def unacked_count(redis: Redis) -> int:
    """Messages handed to workers and not yet acknowledged, over every queue."""
    return int(redis.hlen(UNACKED_KEY))
