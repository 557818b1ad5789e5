"""Just before the worker forks a pool child: garbage collected, the rest frozen (so the
children's collections do not copy the pages they share), free heap handed back."""

from __future__ import annotations

import gc

import pytest
from celery import signals

import worker.faces.celery.app  # noqa: F401  (connects the worker's signal handlers)
from worker.base.memory import M_ARENA_MAX, _libc, set_malloc_option, trim_heap


def test_before_a_child_is_forked_the_objects_are_frozen() -> None:
    assert gc.get_freeze_count() == 0
    try:
        signals.worker_before_create_process.send(sender=None)
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


@pytest.mark.skipif(_libc() is None, reason="not glibc")
def test_the_malloc_knobs_answer_on_glibc() -> None:
    trim_heap()  # whether anything was free to hand back depends on the heap
    assert set_malloc_option(M_ARENA_MAX, 8) is True
