"""The operator CLI against the simulators, as an operator runs it: `pointsync` subprocesses
with the worker's environment, a real Redis, a SQLite store and the simulators over HTTP."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from celery import Celery
from sqlalchemy import func, select

from sims.guids import seeded_ids
from sims.harness import BIN, CeleryProcess, Simulators
from sims.relays import atreemo, contlo
from tests.support.integration import Sim, wait_for
from worker.base.point_request import validate_request
from worker.store.contacts import contact_balances
from worker.store.database import Store
from worker.store.ledger import Ledger

pytestmark = pytest.mark.integration

CLI = str(BIN / "pointsync")
UNKNOWN = "0000beef-0000-4000-8000-000000000000"


def run_cli(env: dict[str, str], *args: str, timeout: float = 120,
            stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, *args], env={**os.environ, **env, "COLUMNS": "160"},
                          capture_output=True, text=True, timeout=timeout, input=stdin)


def json_of(done: subprocess.CompletedProcess[str]) -> Any:
    assert done.stdout, done.stderr
    return json.loads(done.stdout)


def sent_rows(store: Store) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(contact_balances).where(
            contact_balances.c.sent_mutated_us.is_not(None))).scalar_one())


def engage_set(sim: Sim, balances: dict[str, str]) -> None:
    """Someone changes balances in Engage behind the worker's back (drift)."""
    rows = [{"contactId": cid, "amount": float(amount), "definitionId": 1,
             "timeStamp": "2026-01-01T00:00:00Z"} for cid, amount in balances.items()]
    response = httpx.post(f"{sim.urls.engage}/api/v3/point-accounts/balances", json=rows,
                          headers={"apikey": "sim-key", "User-Agent": "drift-test/1"})
    assert response.status_code == 202, response.text


def engage_items(sim: Sim) -> int:
    """Balances Engage applied: counted before its answer leaves, so ahead of the caller's."""
    return int(sim.stats()["engage_push_items"])


def engage_holds_no_push(sim: Sim) -> bool:
    """Every push that reached Engage applied (none held by its latency any more)."""
    stats = sim.stats()
    return int(stats["arrived"].get("engage.balances", 0)) == stats["engage_push_requests"]


# -- migrate -----------------------------------------------------------------------------


def test_migrate_copies_every_balance_and_sets_the_watermark(
    sim: Sim, worker_env: dict[str, str], store: Store
) -> None:
    # 2,500 accounts, 2,400 of them last changed 30 days ago: a scheduled sync never reads
    # those, the go-live copy must.
    sim.post("seed", {"contacts": 2500, "changed": 100})
    done = run_cli(worker_env, "migrate", "--json")
    assert done.returncode == 0, done.stderr
    summary = json_of(done)
    assert (summary["status"], summary["pushed"], summary["fetched"]) == ("succeeded", 2500, 2500)
    assert summary["window_from"].startswith("1970-01-01")
    assert sim.compare() | {"mismatches": []} == {"checked": 2500, "mismatch_count": 0,
                                                  "mismatches": []}
    (run,) = store.recent_runs()
    assert run["kind"] == "migrate"
    # The hourly sync starts where the copy began: no gap, no second full copy.
    assert store.watermark() == run["started_at"]
    status = json_of(run_cli(worker_env, "status", "--json"))
    assert status["runs"][0]["kind"] == "migrate" and 0 <= status["lag_seconds"] < 60

    again = json_of(run_cli(worker_env, "migrate", "--json"))
    assert (again["pushed"], again["unchanged"]) == (0, 2500)


def test_migrate_resumes_after_ctrl_c_without_pushing_again(
    sim: Sim, worker_env: dict[str, str], store: Store
) -> None:
    sim.post("seed", {"contacts": 3000, "changed": 0})
    # Small batches, each answered slowly: the copy takes seconds, so it can be interrupted.
    batch, lanes = 50, 4
    env = {**worker_env, "ENGAGE_BATCH_SIZE": str(batch),
           "ENGAGE_PUSH_CONCURRENCY": str(lanes)}
    sim.post("faults", {"target": "engage.balances", "kind": "latency", "seconds": 0.15,
                        "count": 1000})
    proc = subprocess.Popen([CLI, "migrate"], env={**os.environ, **env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: engage_items(sim) >= 600, 60, "Engage applying 600 balances")
        # Ctrl-C reaching a CLI that a loaded machine has not run for a while: the pushes
        # in flight are applied, their answers still unread.
        os.kill(proc.pid, signal.SIGSTOP)
        wait_for(lambda: engage_holds_no_push(sim), 30, "Engage applying what it holds")
        proc.send_signal(signal.SIGINT)
        os.kill(proc.pid, signal.SIGCONT)
        _out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "run `pointsync migrate` again to resume" in err
    (first,) = store.recent_runs()
    assert (first["status"], first["error"]) == ("failed", "cancelled")
    recorded, applied = sent_rows(store), engage_items(sim)
    # What the CLI saw Engage accept was written down on the way out: all Engage applied
    # but the batches whose answers it never read (one in flight per lane at the most; the
    # resume sends those again, unchanged).
    assert 600 <= applied < 3000
    assert applied - lanes * batch <= recorded <= applied
    assert first["pushed"] == recorded

    httpx.delete(f"{sim.urls.engage}/_sim/faults")
    resumed = run_cli(env, "migrate", "--json")
    assert resumed.returncode == 0, resumed.stderr
    summary = json_of(resumed)
    assert summary["status"] == "succeeded"
    assert (summary["pushed"], summary["unchanged"]) == (3000 - recorded, recorded)
    assert sim.compare()["mismatch_count"] == 0 and sim.compare()["checked"] == 3000


def test_migrate_resumes_after_engage_failed_it(
    sim: Sim, worker_env: dict[str, str], store: Store
) -> None:
    sim.post("seed", {"contacts": 2000, "changed": 0})
    env = {**worker_env, "ENGAGE_BATCH_SIZE": "100", "HTTP_MAX_ATTEMPTS": "2"}
    # The 6th push onwards fails for good: the run stops, keeping what went through.
    sim.post("faults", {"target": "engage.balances", "kind": "latency", "seconds": 0,
                        "count": 5})
    sim.post("faults", {"target": "engage.balances", "kind": "status", "status": 503,
                        "count": 1000})
    failed = run_cli(env, "migrate", "--json")
    assert failed.returncode == 1
    first = json_of(failed)
    assert first["status"] == "failed" and "503" in first["error"]
    assert 0 < first["pushed"] < 2000 and sent_rows(store) == first["pushed"]

    httpx.delete(f"{sim.urls.engage}/_sim/faults")
    resumed = run_cli(env, "migrate")
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming: migration run {first['run_id']} (failed) pushed {first['pushed']:,}" \
        in resumed.stdout
    last = store.recent_runs(1)[0]
    assert (last["pushed"], last["unchanged"]) == (2000 - first["pushed"], first["pushed"])
    assert sim.compare()["mismatch_count"] == 0


def test_migrate_csv_writes_engage_import_files(
    sim: Sim, worker_env: dict[str, str], tmp_path: Path
) -> None:
    ids = sim.post("seed", {"contacts": 2500, "changed": 10})["count"]
    assert ids == 2500
    out = tmp_path / "import"
    out.mkdir()
    (out / "points-import-00009.csv").write_text("left by an older export")
    done = run_cli(worker_env, "migrate", "--csv", str(out), "--rows-per-file", "1000",
                   "--json")
    assert done.returncode == 0, done.stderr
    summary = json_of(done)
    assert summary["files"] == ["points-import-00001.csv", "points-import-00002.csv",
                                "points-import-00003.csv"]
    assert (summary["rows"], summary["removed_old_files"]) == (2500, 1)
    assert sorted(p.name for p in out.iterdir()) == summary["files"]  # no scratch left
    rows: list[list[str]] = []
    for name, expected in zip(summary["files"], (1000, 1000, 500), strict=True):
        raw = (out / name).read_bytes()
        assert not raw.startswith(b"\xef\xbb\xbf")  # UTF-8 without a byte-order mark
        lines = list(csv.reader(raw.decode("utf-8").splitlines(), delimiter=";"))
        assert lines[0] == ["Key", "KeyType", "PointDefinitionId", "Amount",
                            "TransactionType", "TransactionDate", "CreatedOn", "ValidTo",
                            "CreatedBy", "Description", "Source",
                            "ExpireAfterMonthsInactive"]
        assert len(lines) - 1 == expected
        rows += lines[1:]
    assert len({row[0] for row in rows}) == 2500  # one row per contact
    assert {(row[1], row[2], row[4], row[7], row[11]) for row in rows} == {
        ("contactId", "1", "adjustment", "", "")}
    for row in rows[::250]:  # amounts are Treazure's balances, exactly
        account = httpx.get(f"{sim.urls.treazure}/_sim/treazure/account/{row[0]}").json()
        assert row[3] == f"{float(account['balance']):.2f}"
        assert row[5].endswith("Z") and row[6].endswith("Z")
    assert sim.stats()["engage_push_requests"] == 0  # nothing was pushed


# -- reconcile ---------------------------------------------------------------------------


def test_reconcile_finds_injected_drift_and_heals_it(
    sim: Sim, worker_env: dict[str, str], store: Store, tmp_path: Path
) -> None:
    sim.post("seed", {"contacts": 400, "changed": 400})
    seeded = seeded_ids(0, 400)
    assert run_cli(worker_env, "migrate", "--json").returncode == 0
    # Drift of both kinds: Engage edited by hand (the worker's records say it is in step,
    # so no sync would repair it), and Treazure changed since the copy.
    edited = seeded[:3]
    engage_set(sim, dict.fromkeys(edited, "1.00"))
    changed = sim.post("mutate_random", {"count": 4})["contacts"]
    drifting = set(edited) | set(changed)
    contacts = tmp_path / "contacts.txt"
    contacts.write_text("# contacts to check\n" + "\n".join(seeded[:40] + changed + [UNKNOWN])
                        + "\n\n")

    found = run_cli(worker_env, "reconcile", "--contacts", str(contacts), "--json")
    assert found.returncode == 1, found.stderr
    report = json_of(found)
    assert {d["contact_id"] for d in report["drift"]} == drifting
    assert report["unknown"] == [UNKNOWN] and report["errors"] == {}
    assert report["checked"] == len(set(seeded[:40]) | set(changed)) + 1
    for drift in report["drift"]:
        account = httpx.get(f"{sim.urls.treazure}/_sim/treazure/account/"
                            f"{drift['contact_id']}").json()
        assert float(drift["treazure"]) == pytest.approx(float(account["balance"]), abs=0)
        if drift["contact_id"] in edited:
            assert drift["engage"] == "1.00"
    assert sim.compare()["mismatch_count"] == len(drifting)

    healed = run_cli(worker_env, "reconcile", "--contacts", str(contacts), "--heal")
    assert healed.returncode == 0, healed.stdout + healed.stderr
    assert f"pushed {len(drifting)}" in healed.stdout
    assert sim.compare()["mismatch_count"] == 0
    heal_run = store.recent_runs(1)[0]
    assert (heal_run["kind"], heal_run["status"], heal_run["pushed"]) == (
        "heal", "succeeded", len(drifting))

    clean = run_cli(worker_env, "reconcile", "--sample", "50", "--json")
    assert clean.returncode == 0, clean.stderr
    assert json_of(clean)["drift"] == [] and json_of(clean)["checked"] == 50


def test_reconcile_refuses_a_bad_contacts_file_before_any_request(
    sim: Sim, worker_env: dict[str, str], tmp_path: Path
) -> None:
    contacts = tmp_path / "contacts.txt"
    contacts.write_text(f"{UNKNOWN}\n\nnot-a-guid\n")
    done = run_cli(worker_env, "reconcile", "--contacts", str(contacts))
    assert done.returncode == 2
    assert "line 3" in done.stderr and "contact_id" in done.stderr
    assert sim.stats()["arrived"] == {}


# -- doctor ------------------------------------------------------------------------------


def doctor(env: dict[str, str]) -> tuple[int, dict[str, dict[str, str]]]:
    done = run_cli(env, "doctor", "--json")
    return done.returncode, {check["name"]: check for check in json_of(done)}


def relay_records(sims: Simulators) -> tuple[int, int]:
    """How many events the Atreemo and Contlo simulators have accepted."""
    return (httpx.get(f"{sims.atreemo}{atreemo.DELIVERIES}").json()["count"],
            httpx.get(f"{sims.contlo}{contlo.EVENTS}").json()["count"])


def test_doctor_passes_against_working_services(
    sim: Sim, worker_env: dict[str, str], store: Store
) -> None:
    accepted = relay_records(sim.urls)
    code, checks = doctor(worker_env)
    assert code == 0
    for name in ("configuration", "redis", "database", "treazure", "engage"):
        assert checks[name]["status"] == "ok", checks[name]
    assert checks["workers"]["status"] == "warn"  # none runs in this test
    assert "token" in checks["treazure"]["detail"]
    # Both relays are on (the simulators' env): each destination probed, nothing delivered.
    for name in ("atreemo", "contlo", "relay backlog"):
        assert checks[name]["status"] == "ok", checks[name]
    assert "nothing was tracked" in checks["contlo"]["detail"]
    assert relay_records(sim.urls) == accepted


def test_doctor_names_what_is_wrong_and_how_to_fix_it(
    sim: Sim, worker_env: dict[str, str], store: Store, tmp_path: Path
) -> None:
    wrong_key = "wrong-engage-key-5d1f"
    old_schema = tmp_path / "empty.db"
    envs = {
        "wrong": {**worker_env, "ENGAGE_API_KEY": wrong_key,
                  "TREAZURE_CLIENT_SECRET": "wrong-secret-9a7e",
                  "CONTLO_API_KEY": "wrong-contlo-key-20c4",
                  "REDIS_URL": "redis://127.0.0.1:1/0"},
        "missing": {**{k: v for k, v in worker_env.items() if k != "TREAZURE_BASE_URL"},
                    "TREAZURE_BASE_URL": ""},
        # A relay set in part: named, and everything else is still checked.
        "partial": {k: v for k, v in worker_env.items() if k != "ATREEMO_WEBHOOK_SECRET"},
        "old_schema": {**worker_env, "DATABASE_URL": f"sqlite:///{old_schema}"},
    }
    # Each run is a process of its own that mostly waits on the network: side by side.
    with ThreadPoolExecutor(len(envs)) as pool:
        ran = dict(zip(envs, pool.map(doctor, envs.values()), strict=True))

    code, checks = ran["wrong"]
    assert code == 1
    assert checks["contlo"]["status"] == "fail" and "CONTLO_API_KEY" in checks["contlo"]["fix"]
    assert "wrong-contlo-key-20c4" not in json.dumps(checks)
    assert checks["engage"]["status"] == "fail" and "ENGAGE_API_KEY" in checks["engage"]["fix"]
    assert "401" in checks["engage"]["detail"]
    assert checks["treazure"]["status"] == "fail"
    assert "TREAZURE_CLIENT_SECRET" in checks["treazure"]["fix"]
    assert checks["redis"]["status"] == "fail" and "REDIS_URL" in checks["redis"]["fix"]
    assert checks["workers"]["status"] == "skip"
    assert checks["database"]["status"] == "ok"
    assert wrong_key not in json.dumps(checks) and "wrong-secret-9a7e" not in json.dumps(checks)

    code, checks = ran["missing"]
    assert code == 1
    assert checks["configuration"]["status"] == "fail"
    assert "TREAZURE_BASE_URL" in checks["configuration"]["detail"]
    assert checks["treazure"]["status"] == checks["engage"]["status"] == "skip"
    assert checks["redis"]["status"] == "ok"

    code, checks = ran["partial"]
    assert code == 1
    assert checks["configuration"]["status"] == checks["atreemo"]["status"] == "fail"
    assert "ATREEMO_WEBHOOK_SECRET not set" in checks["atreemo"]["detail"]
    assert checks["treazure"]["status"] == checks["contlo"]["status"] == "ok"

    _code, checks = ran["old_schema"]
    assert checks["database"]["status"] == "fail"
    assert "pointsync db upgrade" in checks["database"]["fix"]


# -- status and sync ---------------------------------------------------------------------


def test_status_shows_failed_transactions_and_queue_depths(
    sim: Sim, worker_env: dict[str, str], store: Store, client: Celery
) -> None:
    ledger = Ledger(store)
    request = validate_request(UNKNOWN, "10", "goodwill", "ref-failed-1")
    ledger.record(request, "cli")
    ledger.fail("ref-failed-1", "Treazure: HTTP 404: unknown account")
    for _ in range(3):
        client.send_task("pointsync.sweep_points")  # no worker runs: they wait
    client.send_task("pointsync.refresh_history", kwargs={"run_id": 1},
                     queue="pointsync.history")
    status = json_of(run_cli(worker_env, "status", "--json"))
    assert status["point_transactions"] == {"received": 0, "booked": 0, "applied": 0,
                                            "failed": 1}
    assert status["failed_transactions"][0]["reference"] == "ref-failed-1"
    assert status["queues"]["waiting"] == {"celery": 3, "pointsync.history": 1}
    assert status["lag_seconds"] is None
    text = run_cli(worker_env, "status")
    assert text.returncode == 0
    assert "ref-failed-1" in text.stdout and "unknown account" in text.stdout
    assert "waiting celery 3, pointsync.history 1" in text.stdout
    assert "no scheduled sync has succeeded yet" in text.stdout


def test_sync_wait_shows_progress_and_the_summary(
    sim: Sim, start_worker: Callable[..., CeleryProcess], worker_env: dict[str, str]
) -> None:
    sim.post("seed", {"contacts": 1500})
    start_worker()
    done = run_cli(worker_env, "sync", "--wait")
    assert done.returncode == 0, done.stderr
    assert "sync run 1 succeeded" in done.stderr  # the bar's last state
    assert "read 1,500" in done.stderr and "pushed 1,500" in done.stderr
    assert "1,500" in done.stdout and "succeeded" in done.stdout


def test_sync_wait_gives_up_after_its_timeout(
    sim: Sim, worker_env: dict[str, str]
) -> None:
    done = run_cli(worker_env, "sync", "--wait", "--timeout", "1")  # no worker runs
    assert done.returncode == 2
    assert "still running after 1 s" in done.stderr
