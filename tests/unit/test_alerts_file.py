"""alerts.yml: well-formed Prometheus rules, each telling the operator what to run, and using
only metrics that a real /metrics render exposes (renaming a metric breaks this test)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from worker.base.point_request import PointRequest
from worker.base.telemetry import RESPONSES_KEY
from worker.faces.web.metrics import render
from worker.store.database import Store
from worker.store.engine import make_engine
from worker.store.ledger import Ledger
from worker.store.schema import upgrade_schema

ROOT = Path(__file__).resolve().parents[2]
RULES: list[dict[str, Any]] = [
    rule for group in yaml.safe_load((ROOT / "alerts.yml").read_text())["groups"]
    for rule in group["rules"]]
METRIC = re.compile(r"\bpointsync_[a-z0-9_]+")
DURATION = re.compile(r"[0-9]+[smhd]")
COMMAND = re.compile(r"`pointsync [a-z]+[^`]*`")
CONTACT = "6c1e2f4a-0b1c-4d2e-9f00-1a2b3c4d5e6f"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """A store with every kind of thing a metric is about: runs and ledger rows."""
    engine = make_engine(f"sqlite:///{tmp_path / 'alerts.db'}")
    upgrade_schema(engine)
    store = Store(engine)
    started = datetime.now(UTC) - timedelta(hours=1)
    run_id = store.start_run(started_at=started, window_from=started, window_to=started,
                             explicit_window=False, task_id=None)
    store.update_run(run_id, status="succeeded", finished_at=started, duration_seconds=1)
    Ledger(store).record(PointRequest(contact_id=CONTACT, amount_cents=1, description="x",
                                      reference="r"), "task")
    yield store
    engine.dispose()


def exposed_names(store: Store) -> set[str]:
    redis = fakeredis.FakeRedis()
    redis.hset(RESPONSES_KEY, "engage:429", 1)
    text = render(store, redis).decode()
    return {sample.name for family in text_string_to_metric_families(text)
            for sample in family.samples}


def test_there_are_rules_for_what_operators_must_hear_about() -> None:
    assert {rule["alert"] for rule in RULES} >= {
        "PointsyncMetricsDown", "PointsyncSyncLagging", "PointsyncLastSyncFailed",
        "PointsyncPointTransactionsFailed", "PointsyncPointTransactionsStuck",
        "PointsyncEngageThrottling"}


@pytest.mark.parametrize("rule", RULES, ids=[rule["alert"] for rule in RULES])
def test_each_rule_is_complete_and_names_a_command(rule: dict[str, Any]) -> None:
    assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}
    assert re.fullmatch(r"Pointsync[A-Za-z]+", rule["alert"])
    assert isinstance(rule["expr"], str) and rule["expr"].strip()
    assert "for" not in rule or DURATION.fullmatch(rule["for"])
    assert rule["labels"]["severity"] in ("page", "warning")
    annotations = rule["annotations"]
    assert annotations["summary"] and annotations["description"]
    assert COMMAND.search(annotations["description"]), "say what the operator should run"


def test_every_metric_an_alert_uses_is_one_metrics_exposes(store: Store) -> None:
    exposed = exposed_names(store)
    used = {name for rule in RULES for name in METRIC.findall(rule["expr"])}

    assert used, "the rules use pointsync metrics"
    assert used <= exposed, f"not exposed by /metrics: {sorted(used - exposed)}"


def test_the_rules_cover_the_commands_the_issue_names() -> None:
    text = " ".join(rule["annotations"]["description"] for rule in RULES)
    for command in ("pointsync status", "pointsync points failed", "pointsync points replay REF"):
        assert command in text
