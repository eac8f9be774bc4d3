"""``--now`` / ``COMPLAINTFLOW_NOW``: every command on a clock stopped at one instant, so the
demo database (written in simulated time) can be audited from the CLI alone."""

from __future__ import annotations

import json
import re
import shlex
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from complaintflow.cli import main
from tests.unit.test_cli import CS, ENV, FIELDS, expected_error

COUNT = 12


def run(*args: str, env: dict[str, str | None] | None = None) -> Result:
    return CliRunner(env={**ENV, **(env or {})}).invoke(main, list(args))


def ok(result: Result) -> str:
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """A small demo run through the CLI; its JSON summary."""
    path = tmp_path_factory.mktemp("demo") / "demo.db"
    doc = json.loads(ok(run("demo", "--db", str(path), "--count", str(COUNT), "--json")))
    return path, doc


def _argv(command: str) -> list[str]:
    words = shlex.split(command)
    assert words[0] == "complaintflow"
    return words[1:]


def test_the_demo_prints_where_it_stopped_and_what_an_auditor_runs(
    demo: tuple[Path, dict[str, Any]],
) -> None:
    path, doc = demo
    now = doc["auditor"]["now"]
    assert now == doc["simulated"]["end"]
    commands = doc["auditor"]["commands"]
    assert commands[0] == f"complaintflow --db {path} --now {now} audit verify --deep"
    assert all(f"--now {now} " in c for c in commands)
    assert any(" audit replay TS-2026-" in c and " --at " in c for c in commands)


def test_the_demo_table_output_names_the_commands(tmp_path: Path) -> None:
    path = tmp_path / "demo.db"
    out = ok(run("demo", "--db", str(path), "--count", "3"))
    stopped = re.search(r"the demo stopped its clock at (\S+);", out)
    assert stopped is not None
    assert f"complaintflow --db {path} --now {stopped[1]} audit verify --deep" in out


def test_every_printed_command_runs_cleanly_on_the_demo_database(
    demo: tuple[Path, dict[str, Any]],
) -> None:
    _, doc = demo
    for command in doc["auditor"]["commands"]:
        ok(run(*_argv(command)))


def test_deep_verification_on_the_demo_clock_is_clean_and_on_a_later_one_is_not(
    demo: tuple[Path, dict[str, Any]],
) -> None:
    path, doc = demo
    now = doc["auditor"]["now"]
    report = json.loads(
        ok(run("--db", str(path), "--now", now, "--json", "audit", "verify", "--deep"))
    )
    assert report["ok"] is True and report["findings"] == []
    # the same database seen a year later: deadlines came due with no scheduler running
    later = run(
        "--db",
        str(path),
        "--json",
        "audit",
        "verify",
        "--deep",
        env={"COMPLAINTFLOW_NOW": "2027-03-30T18:00+08:00"},
    )
    assert later.exit_code == 1
    kinds = {f["kind"] for f in json.loads(later.stdout)["findings"]}
    assert kinds == {"missed_breach", "missed_warning"}


def test_timers_on_the_demo_clock_are_not_absurdly_overdue(
    demo: tuple[Path, dict[str, Any]],
) -> None:
    path, doc = demo
    now = datetime.fromisoformat(doc["auditor"]["now"])
    span = timedelta(days=doc["simulated"]["days"])
    listed = json.loads(
        ok(
            run(
                "--db",
                str(path),
                "--now",
                now.isoformat(),
                "--json",
                "timers",
                "list",
                "--limit",
                "10000",
            )
        )
    )
    assert listed["items"]
    for item in listed["items"]:
        if item["due_at"] is None:
            continue
        due = datetime.fromisoformat(item["due_at"])
        assert now - due < span, item  # overdue at most since the demo began
        if item["breached_at"] is None and item["status"] == "running":
            assert due > now, item  # the scheduler fired everything due before it stopped


def test_replay_at_an_instant_on_the_demo_database(demo: tuple[Path, dict[str, Any]]) -> None:
    path, doc = demo
    now = doc["auditor"]["now"]
    replayed = json.loads(
        ok(
            run(
                "--db",
                str(path),
                "--now",
                now,
                "--json",
                "audit",
                "replay",
                "TS-2026-000001",
                "--at",
                "2026-03-03T10:00+08:00",
            )
        )
    )
    assert replayed["number"] == "TS-2026-000001"
    assert replayed["at"] == "2026-03-03T10:00:00+08:00"
    assert all(e["occurred_at"] <= "2026-03-03T10:00:00+08:00" for e in replayed["events"])


def test_now_is_the_clock_of_every_write(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    args = [a for f in FIELDS for a in ("--field", f)]
    # naive: the rules' time zone (Asia/Shanghai)
    doc = json.loads(
        ok(run("--db", str(db), "--now", "2026-03-03T10:00", "--json", "submit", *CS, *args))
    )
    assert doc["received_at"] == "2026-03-03T10:00:00+08:00"
    doc = json.loads(
        ok(
            run(
                "--db",
                str(db),
                "--json",
                "fire",
                doc["number"],
                "record",
                *CS,
                "--set",
                "readback_confirmed=true",
                env={"COMPLAINTFLOW_NOW": "2026-03-03T02:30Z"},
            )
        )
    )
    assert doc["updated_at"] == "2026-03-03T10:30:00+08:00"
    listed = json.loads(ok(run("--db", str(db), "--json", "rules", "list")))
    assert listed["rulesets"][0]["loaded_at"] == "2026-03-03T10:00:00+08:00"


def test_now_must_be_an_iso_time_and_is_checked_first(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    err = expected_error(run("--db", str(db), "--now", "yesterday", "timers", "list"))
    assert "--now: 'yesterday' is not an ISO 8601 time" in err
    err = expected_error(
        run("--db", str(db), "timers", "list", env={"COMPLAINTFLOW_NOW": "30.3.2026"})
    )
    assert "--now: '30.3.2026' is not an ISO 8601 time" in err
    assert not db.exists()


def test_now_is_refused_where_time_must_pass(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    err = expected_error(
        run("--db", str(db), "--now", "2026-03-03T10:00+08:00", "scheduler", "run"), 2
    )
    assert "scheduler tick" in err
    err = expected_error(
        run("--now", "2026-03-03T10:00+08:00", "demo", "--db", str(tmp_path / "d.db")), 2
    )
    assert "own simulated clock" in err
    assert not db.exists() and not (tmp_path / "d.db").exists()


@pytest.mark.slow
def test_the_readme_gives_what_the_default_demo_prints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``complaintflow demo`` as the README runs it (default size, default file): the
    commands the README lists for auditing it are the ones it prints, and they succeed."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text("utf-8")
    section = readme[readme.index("### Auditing the demo database") :]
    listed = re.search(r"```\n(.+?)\n```", section, re.S)
    assert listed is not None
    monkeypatch.chdir(tmp_path)
    doc = json.loads(ok(run("demo", "--json")))
    assert doc["count"] == 300 and doc["verification"]["ok"] is True
    printed = doc["auditor"]["commands"]
    expected = listed[1].splitlines()
    assert [c.split(" audit replay ")[0] for c in printed] == [
        c.split(" audit replay ")[0] for c in expected
    ]
    for command in expected:
        ok(run(*_argv(command)))


@pytest.mark.parametrize("args", [
    ["--now", "9999-12-31T23:59:59+00:00", "timers", "list"],
    ["--now", "0001-01-01T00:00", "timers", "list"],
    ["audit", "verify", "--deep", "--since", "0001-01-01T00:00+00:00"],
])
def test_times_near_the_limits_of_datetime_are_refused(
        demo: tuple[Path, dict[str, Any]], args: list[str]) -> None:
    """Before: exit 1 with an OverflowError traceback from a time-zone conversion."""
    path, _ = demo
    result = run("--db", str(path), *args)
    assert result.exit_code == 1
    assert "between the years 1000 and 9000" in result.output
    assert "Traceback" not in result.output and "OverflowError" not in result.output
