"""migrate / reconcile / doctor: the parts that need no remote service — argument checks
before any request, the contacts file, the import files' layout, drift rules, and how the
doctor classifies a failure. The commands against the simulators are in
tests/integration/test_cli_operations.py."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from tests.support.unit import API_KEY, CLIENT_SECRET, cli_database
from worker.base.http import RemoteError
from worker.base.settings import Settings
from worker.faces.cli import doctor_checks
from worker.faces.cli.app import cli
from worker.faces.cli.reconcile import read_contacts_file
from worker.flows.migrate import IMPORT_COLUMNS, _write_files
from worker.flows.reconcile import Reading

A = "6c1e2f4a-0b1c-4d2e-9f00-1a2b3c4d5e6f"
B = "7d2f3a5b-1c2d-4e3f-8a11-2b3c4d5e6f70"
runner = CliRunner()


@pytest.fixture
def database_file(env: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[str]:
    yield from cli_database(env, tmp_path, REDIS_URL="redis://127.0.0.1:1/0")


# -- the contacts file -------------------------------------------------------------------


def test_contacts_file_takes_ids_csv_columns_comments_and_a_bom(tmp_path: Path) -> None:
    path = tmp_path / "c.txt"
    path.write_text(f"\ufeff# export of 2026-11-20\n{A}\n\n  {B};1250.50\n{A},again # dup\n",
                    encoding="utf-8")
    assert read_contacts_file(str(path)) == [A, B, A]


def test_contacts_file_refuses_a_bad_id_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "c.txt"
    path.write_text(f"{A}\n# fine\n6c1e-not-a-guid\n")
    with pytest.raises(typer.BadParameter, match=r"c\.txt line 3: contact_id: "):
        read_contacts_file(str(path))


def test_contacts_file_without_ids_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.txt"
    path.write_text("# nothing here\n\n")
    with pytest.raises(typer.BadParameter, match="holds no contact id"):
        read_contacts_file(str(path))


# -- argument checks before anything is sent ---------------------------------------------


def test_reconcile_takes_contacts_or_sample_not_both(database_file: str, tmp_path: Path) -> None:
    path = tmp_path / "c.txt"
    path.write_text(A)
    result = runner.invoke(cli, ["reconcile", "--contacts", str(path), "--sample", "5"])
    assert result.exit_code == 2
    assert "give --contacts or --sample, not both" in result.output


def test_reconcile_without_synced_contacts_asks_for_a_file(database_file: str) -> None:
    result = runner.invoke(cli, ["reconcile"])
    assert result.exit_code == 1
    assert "no contact has been synced yet: give --contacts FILE" in result.output


@pytest.mark.parametrize(("args", "message"), [
    (["--since", "yesterday"], "since: must be an ISO-8601 time"),
    (["--since", "2026-11-01T00:00:00"], "since: must name its timezone"),
    (["--csv", "out", "--rows-per-file", "20001"], "less than or equal to 20000"),
    (["--csv", "out", "--rows-per-file", "0"], "greater than or equal to 1"),
])
def test_migrate_refuses_bad_arguments(database_file: str, args: list[str], message: str,
                                       tmp_path: Path) -> None:
    result = runner.invoke(cli, ["migrate", *args])
    assert result.exit_code == 2
    assert message in " ".join(result.output.replace("│", " ").split())
    assert not (tmp_path / "out").exists()


# -- the import files --------------------------------------------------------------------


def newest(rows: list[tuple[str, int, int, str]]) -> sqlite3.Connection:
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE b (contact TEXT PRIMARY KEY, cents INTEGER, us INTEGER, at TEXT)")
    db.executemany("INSERT INTO b VALUES (?, ?, ?, ?)", rows)
    return db


def test_import_files_split_at_the_row_limit_in_contact_order(tmp_path: Path) -> None:
    ids = [f"00000000-0000-4000-8000-{i:012d}" for i in range(7)]
    db = newest([(cid, i * 150 - 300, i, "2026-11-21T09:14:03Z")
                 for i, cid in reversed(list(enumerate(ids)))])
    written = _write_files(db, tmp_path, 3, 3, "2026-11-22T00:00:00Z")
    assert [(path.name, rows) for path, rows in written] == [
        ("points-import-00001.csv", 3), ("points-import-00002.csv", 3),
        ("points-import-00003.csv", 1)]
    first = (tmp_path / "points-import-00001.csv").read_bytes().decode("utf-8")
    lines = first.split("\r\n")
    assert lines[0] == ";".join(IMPORT_COLUMNS)
    assert lines[1] == (f"{ids[0]};contactId;3;-3.00;adjustment;2026-11-21T09:14:03Z;"
                        "2026-11-22T00:00:00Z;;pointsync;Balance migrated from Treazure;"
                        "pointsync;")
    assert lines[3].split(";")[3] == "0.00" and lines[4] == ""
    last = (tmp_path / "points-import-00003.csv").read_text().splitlines()
    assert last[1].startswith(f"{ids[6]};contactId;3;6.00;")


def test_no_balance_means_no_file(tmp_path: Path) -> None:
    assert _write_files(newest([]), tmp_path, 1, 20_000, "now") == []
    assert list(tmp_path.iterdir()) == []


# -- drift -------------------------------------------------------------------------------


@pytest.mark.parametrize(("treazure", "engage", "drift"), [
    (Decimal("12.50"), Decimal("12.5"), None),
    (Decimal("12.50"), Decimal("12.49"), "differs"),
    (Decimal("0"), None, "missing in Engage"),
    (None, Decimal("3"), "unknown in Treazure"),
    (None, None, None),
])
def test_drift_rules(treazure: Decimal | None, engage: Decimal | None,
                     drift: str | None) -> None:
    assert Reading(A, treazure, engage).drift == drift


# -- the doctor's findings ---------------------------------------------------------------


def test_doctor_names_a_missing_setting_and_skips_what_needs_it(env: pytest.MonkeyPatch) -> None:
    env.delenv("ENGAGE_API_KEY")
    checks, core, full = doctor_checks.check_configuration()
    assert full is None and core is not None
    assert checks[0].status == doctor_checks.FAIL
    assert checks[0].detail == "ENGAGE_API_KEY is required but not set"


def test_doctor_warns_when_only_the_web_settings_are_missing(env: pytest.MonkeyPatch) -> None:
    checks, _core, full = doctor_checks.check_configuration()
    assert full is not None
    assert [c.status for c in checks] == [doctor_checks.OK, doctor_checks.WARN]
    assert "WEBHOOK_SECRET" in checks[1].detail


@pytest.mark.parametrize(("status", "level", "fix"), [
    (401, doctor_checks.FAIL, "were refused"),
    (None, doctor_checks.FAIL, "check TREAZURE_BASE_URL and that this host can reach it"),
    (503, doctor_checks.WARN, "try again later"),
    (404, doctor_checks.FAIL, "is it the tenant's API host?"),
])
def test_doctor_classifies_remote_failures(env: pytest.MonkeyPatch, status: int | None,
                                           level: str, fix: str) -> None:
    settings = Settings()  # type: ignore[call-arg]
    error = RemoteError("treazure", f"HTTP {status}: echoes {CLIENT_SECRET} and {API_KEY}",
                        status)
    check = doctor_checks._remote_failure("treazure", error, settings.TREAZURE_BASE_URL,
                                   refused="credentials were refused")
    assert (check.status, fix in check.fix) == (level, True)
    assert CLIENT_SECRET not in check.detail and API_KEY not in check.detail


def test_doctor_hides_passwords_in_urls() -> None:
    from worker.base.settings import CoreSettings

    settings = CoreSettings(REDIS_URL="redis://:hunter2@127.0.0.1:1/0",
                            DATABASE_URL="postgresql+psycopg://ps:hunter2@127.0.0.1:1/ps")
    redis_check = doctor_checks.check_redis(settings)
    database_check = doctor_checks.check_database(settings)
    assert redis_check.status == database_check.status == doctor_checks.FAIL
    assert redis_check.detail.startswith("redis://:***@127.0.0.1:1/0 does not answer")
    assert database_check.detail.startswith("postgresql+psycopg://ps:***@127.0.0.1:1/ps: ")
    assert "hunter2" not in redis_check.detail + database_check.detail


def test_the_report_says_which_drift_heal_leaves(capsys: pytest.CaptureFixture[str]) -> None:
    from worker.faces.cli.reconcile import _print_report
    from worker.flows.reconcile import ReconcileReport

    report = ReconcileReport(checked=3, drift=[Reading(A, Decimal("5"), Decimal("4")),
                                               Reading(B, None, Decimal("3"))])
    _print_report(report)
    out = capsys.readouterr().out
    assert "differs" in out and "unknown in Treazure" in out
    assert "checked 3: 2 drifting" in out
    assert "1 contact(s) have points in Engage but no account in Treazure" in out
