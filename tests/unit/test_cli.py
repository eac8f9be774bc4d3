"""The ``complaintflow`` command through click's CliRunner, on a SQLite file per test."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from complaintflow.cli import main
from complaintflow.rules.loader import default_rules_text

ENV = {
    "COLUMNS": "200",
    "COMPLAINTFLOW_DB": None,
    "COMPLAINTFLOW_RULES": None,
    "COMPLAINTFLOW_ACTOR": None,
    "COMPLAINTFLOW_ROLES": None,
    "COMPLAINTFLOW_DEPARTMENT": None,
}
CS = ["--actor", "li.na", "--role", "customer_service"]
SALES = ["--actor", "chen.rep", "--role", "sales_rep"]
FIELDS = [
    "customer_name=华东机电有限公司",
    "contact_person=张伟",
    "phone=13812345678",
    "email=zhang.wei@example.cn",
    "channel=phone",
    "product_name=YE3 三相异步电机",
    "category=product_quality",
    "description=电机运行时异响, 温升偏高",
    "claimed_amount=2000",
    "customer_demand=repair,apology",
]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "complaints.db"


def cli(db: Path, *args: str, env: dict[str, str | None] | None = None) -> Result:
    runner = CliRunner(env={**ENV, **(env or {})})
    return runner.invoke(main, ["--db", str(db), *args])


def cli_json(db: Path, *args: str, code: int = 0) -> Any:
    result = cli(db, "--json", *args)
    assert result.exit_code == code, result.output
    return json.loads(result.stdout)


def ok(result: Result) -> str:
    assert result.exit_code == 0, result.output
    return result.stdout


def submit(db: Path, *extra: str) -> str:
    args = [a for f in FIELDS for a in ("--field", f)]
    doc = cli_json(db, "submit", *CS, *args, *extra)
    number: str = doc["number"]
    return number


def expected_error(result: Result, code: int = 1) -> str:
    """An expected error: the exit code, a message on stderr, no traceback."""
    assert result.exit_code == code, result.output
    assert result.exc_info is not None and result.exc_info[0] is SystemExit
    assert "Traceback" not in result.output
    return result.stderr


# -- the group ------------------------------------------------------------------------------


def test_help_lists_every_command(db: Path) -> None:
    out = ok(cli(db, "--help"))
    for name in (
        "init",
        "db",
        "submit",
        "fire",
        "show",
        "history",
        "list",
        "rules",
        "audit",
        "timers",
        "scheduler",
        "outbox",
        "demo",
    ):
        assert name in out
    for group, commands in (
        ("audit", ("verify", "replay", "export", "check-export", "timeline")),
        ("rules", ("check", "schema", "list", "show", "diff", "migrate")),
        ("timers", ("list", "show", "recompute", "extend")),
        ("scheduler", ("run", "tick")),
        ("outbox", ("claim", "ack")),
    ):
        out = ok(cli(db, group, "--help"))
        for name in commands:
            assert f"  {name} " in out, (group, name)


def test_python_dash_m_runs_the_cli() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "complaintflow", "--help"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "Usage: complaintflow" in result.stdout


def test_a_bare_path_is_a_sqlite_file(db: Path) -> None:
    doc = cli_json(db, "db", "upgrade")
    assert db.exists()
    assert doc["database"] == f"sqlite:///{db}"
    assert doc["revision"] == doc["head"]


def test_db_url_from_the_environment(tmp_path: Path) -> None:
    target = tmp_path / "from-env.db"
    runner = CliRunner(env={**ENV, "COMPLAINTFLOW_DB": f"sqlite:///{target}"})
    result = runner.invoke(main, ["db", "upgrade"])
    assert result.exit_code == 0, result.output
    assert "at revision" in result.stdout and "(head)" in result.stdout
    assert target.exists()


def test_a_database_url_it_cannot_use_is_a_clear_error(tmp_path: Path) -> None:
    result = CliRunner(env=ENV).invoke(main, ["--db", "nosuchdb://x/y", "db", "upgrade"])
    assert "unsupported database 'nosuchdb'" in expected_error(result)
    result = CliRunner(env=ENV).invoke(main, ["--db", "postgresql://u@h:port/db", "list"])
    assert "cannot use database 'postgresql://u@h:port/db'" in expected_error(result)


# -- init -----------------------------------------------------------------------------------


def test_init_writes_the_default_rules_and_refuses_to_overwrite(db: Path, tmp_path: Path) -> None:
    target = tmp_path / "my-rules.yaml"
    doc = cli_json(db, "init", "--rules-out", str(target))
    assert set(doc) == {"database", "revision", "rules"}
    assert target.read_text("utf-8") == default_rules_text()
    assert db.exists()

    target.write_text("edited", "utf-8")
    err = expected_error(cli(db, "init", "--rules-out", str(target)))
    assert "exists" in err and "--force" in err
    assert target.read_text("utf-8") == "edited"

    ok(cli(db, "init", "--rules-out", str(target), "--force"))
    assert target.read_text("utf-8") == default_rules_text()


def test_init_writes_to_the_current_directory_by_default(
    db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    out = ok(cli(db, "init"))
    assert (tmp_path / "complaintflow-rules.yaml").exists()
    assert "rules check complaintflow-rules.yaml" in out


def test_the_written_rules_are_used_with_dash_dash_rules(db: Path, tmp_path: Path) -> None:
    target = tmp_path / "rules.yaml"
    ok(cli(db, "init", "--rules-out", str(target)))
    number = submit(db)
    shown = cli_json(db, "--rules", str(target), "show", number)
    assert shown["complaint"]["number"] == number


# -- submit, fire, show, history, list ------------------------------------------------------


def test_round_trip_submit_fire_show_history_list(db: Path) -> None:
    number = submit(db)
    assert number.startswith("TS-")

    fired = cli_json(
        db,
        "fire",
        number,
        "record",
        *CS,
        "--set",
        "readback_confirmed=true",
        "--comment",
        "已复述确认",
    )
    assert fired["state"] == "recorded" and fired["state_label"] == "登记"
    assert fired["version"] == 2
    fired = cli_json(
        db,
        "fire",
        number,
        "confirm",
        *CS,
        "--set",
        "responsible_department=quality",
        "--set",
        "handler=wang.qa",
        "--expected-version",
        "2",
        "--idempotency-key",
        "k-1",
    )
    assert fired["state"] == "confirmed" and fired["handler"] == "wang.qa"
    # the same idempotency key again returns the first result instead of failing
    again = cli_json(
        db,
        "fire",
        number,
        "confirm",
        *CS,
        "--set",
        "responsible_department=quality",
        "--set",
        "handler=wang.qa",
        "--expected-version",
        "2",
        "--idempotency-key",
        "k-1",
    )
    assert again["version"] == 3

    shown = cli_json(db, "show", number, *CS)
    complaint = shown["complaint"]
    assert complaint["state"] == "confirmed" and complaint["version"] == 3
    assert complaint["received_at"].endswith("+08:00")
    assert complaint["fields"]["customer_demand"] == ["repair", "apology"]
    triggers = {t["trigger"]: t for t in shown["triggers"]}
    assert set(triggers["submit_report"]) == {
        "trigger",
        "label",
        "to",
        "allowed",
        "check",
        "reason",
        "needs_fields",
    }
    assert triggers["submit_report"]["allowed"] is False
    assert triggers["submit_report"]["check"] == "role"

    events = cli_json(db, "history", number, *CS)["events"]
    assert [e["seq"] for e in events] == [1, 2, 3]
    assert [e["trigger"] for e in events] == [None, "record", "confirm"]
    assert events[1]["payload"]["comment"] == "已复述确认"
    assert events[2]["actor"] == {"id": "li.na", "roles": ["customer_service"], "department": None}
    assert events[0]["occurred_at"].endswith("+08:00")

    page = cli_json(db, "list", "--state", "confirmed")
    assert page["total"] == 1 and [c["number"] for c in page["items"]] == [number]
    assert set(page) == {"total", "limit", "offset", "next_offset", "items"}


def test_human_output_shows_tables(db: Path) -> None:
    number = submit(db)
    out = ok(cli(db, "fire", number, "record", *CS, "--set", "readback_confirmed=true"))
    assert number in out and "recorded 登记" in out

    out = ok(cli(db, "show", number, *CS))
    assert "客户名称" in out and "华东机电有限公司" in out
    assert "confirm" in out and "allowed" in out and "responsible_department" in out

    out = ok(cli(db, "history", number))
    assert "received 接获 → recorded 登记" in out and "readback_confirmed=true" in out
    assert "li.na (customer_service)" in out

    out = ok(cli(db, "list"))
    assert number in out and "1-1 of 1" in out


def test_values_are_json_when_valid_json_and_text_fields_keep_digits(db: Path) -> None:
    number = submit(
        db,
        "--field",
        "quantity=20",
        "--field",
        "safety_issue=true",
        "--field",
        'batch_no="0042"',
        "--field",
        "serial_number=123456",
    )
    fields = cli_json(db, "show", number, *CS)["complaint"]["fields"]
    assert fields["quantity"] == 20
    assert fields["safety_issue"] is True
    assert fields["phone"] == "13812345678"
    assert fields["batch_no"] == "0042"
    assert fields["serial_number"] == "123456"
    assert fields["claimed_amount"] == "2000"


def test_submit_from_a_json_file(db: Path, tmp_path: Path) -> None:
    data = tmp_path / "complaint.json"
    data.write_text(
        json.dumps(
            {
                "customer_name": "深圳市鑫达电子科技有限公司",
                "channel": "email",
                "product_name": "通用变频器",
                "category": "product_quality",
                "description": "上电后报过流故障",
                "claimed_amount": 15000,
            },
            ensure_ascii=False,
        ),
        "utf-8",
    )
    doc = cli_json(db, "submit", *CS, "--file", str(data), "--field", "channel=dealer")
    assert doc["severity"] == "major"
    assert doc["fields"]["channel"] == "dealer"


def test_submit_without_data_or_actor_is_a_usage_error(db: Path) -> None:
    assert "--field" in expected_error(cli(db, "submit", *CS), code=2)
    assert "--actor" in expected_error(cli(db, "submit", "--field", "x=1"), code=2)
    assert "KEY=VALUE" in expected_error(cli(db, "submit", *CS, "--field", "novalue"), code=2)


def test_invalid_submission_lists_every_problem_on_its_own_line(db: Path) -> None:
    err = expected_error(
        cli(db, "submit", *CS, "--field", "channel=pigeon", "--field", "colour=red")
    )
    lines = err.strip().splitlines()
    assert lines[0] == "error: invalid complaint:"
    assert any(line.strip().startswith("channel:") for line in lines[1:])
    assert any(line.strip().startswith("colour: no such field") for line in lines[1:])
    assert any(line.strip() == "customer_name: required" for line in lines[1:])

    doc = cli_json(db, "submit", *CS, "--field", "channel=pigeon", code=1)
    assert doc["error"]["type"] == "InvalidInput"
    assert {"field": "channel", "message": doc["error"]["problems"][0]["message"]} in doc["error"][
        "problems"
    ]


def test_refused_fire_names_the_check_without_a_traceback(db: Path) -> None:
    number = submit(db)
    err = expected_error(
        cli(db, "fire", number, "record", *SALES, "--set", "readback_confirmed=true")
    )
    assert err.startswith(f"error: {number}: 'record' refused")
    assert "[role]" in err and "customer_service" in err
    assert len(err.strip().splitlines()) == 1

    result = cli(db, "--json", "fire", number, "record", *SALES)
    assert result.exit_code == 1 and result.stderr == ""
    error = json.loads(result.stdout)["error"]
    assert error["type"] == "RoleNotAllowed"
    assert error["check"] == "role" and error["number"] == number
    assert error["trigger"] == "record" and error["state"] == "received"
    assert "customer_service" in error["reason"]


def test_missing_fields_are_listed_one_per_line(db: Path) -> None:
    number = submit(db)
    ok(cli(db, "fire", number, "record", *CS, "--set", "readback_confirmed=true"))
    err = expected_error(cli(db, "fire", number, "confirm", *CS))
    assert "[fields]" in err.splitlines()[0]
    assert "  responsible_department: required by this transition" in err.splitlines()
    assert "  handler: required by this transition" in err.splitlines()


def test_unknown_complaint_and_stale_version_are_errors(db: Path) -> None:
    assert "no complaint 'TS-1999-000001'" in expected_error(cli(db, "show", "TS-1999-000001"))
    number = submit(db)
    doc = cli_json(
        db,
        "fire",
        number,
        "record",
        *CS,
        "--set",
        "readback_confirmed=true",
        "--expected-version",
        "7",
        code=1,
    )
    assert doc["error"]["type"] == "ConcurrentUpdate"
    assert doc["error"]["expected_version"] == 7 and doc["error"]["actual_version"] == 1


def test_actor_from_the_environment(db: Path) -> None:
    number = submit(db)
    env: dict[str, str | None] = {
        "COMPLAINTFLOW_ACTOR": "wang.fang",
        "COMPLAINTFLOW_ROLES": "customer_service,auditor",
    }
    result = cli(
        db, "--json", "fire", number, "record", "--set", "readback_confirmed=true", env=env
    )
    assert result.exit_code == 0, result.output
    events = cli_json(db, "history", number)["events"]
    assert events[-1]["actor"]["id"] == "wang.fang"
    assert events[-1]["actor"]["roles"] == ["auditor", "customer_service"]


def test_personal_data_is_masked_without_a_reader_role(db: Path) -> None:
    number = submit(db)
    anonymous = cli_json(db, "show", number)
    assert anonymous["triggers"] is None
    fields = anonymous["complaint"]["fields"]
    assert fields["phone"] == "138****5678"
    assert fields["contact_person"] == "张***"
    assert fields["email"] == "z***@example.cn"
    assert set(anonymous["complaint"]["masked"]) == {"contact_person", "email", "phone"}

    auditor = cli_json(db, "show", number, "--actor", "audit.xu", "--role", "auditor")
    assert auditor["complaint"]["fields"]["phone"] == "138****5678"
    reader = cli_json(db, "show", number, *CS)
    assert reader["complaint"]["fields"]["phone"] == "13812345678"
    assert reader["complaint"]["masked"] == []

    out = ok(cli(db, "show", number))
    assert "13812345678" not in out and "138****5678" in out and "(masked)" in out
    out = ok(cli(db, "history", number))
    assert "13812345678" not in out and "138****5678" in out
    listed = cli_json(db, "list")["items"][0]["fields"]
    assert listed["phone"] == "138****5678"


def test_list_filters_pages_and_checks_its_choices(db: Path) -> None:
    numbers = [submit(db) for _ in range(3)]
    major = submit(db, "--field", "claimed_amount=50000")
    ok(cli(db, "fire", numbers[0], "record", *CS, "--set", "readback_confirmed=true"))

    page = cli_json(db, "list", "--limit", "2")
    assert page["total"] == 4 and len(page["items"]) == 2 and page["next_offset"] == 2
    page = cli_json(db, "list", "--limit", "2", "--offset", "2")
    assert [c["number"] for c in page["items"]] == [numbers[2], major]
    assert page["next_offset"] is None
    assert cli_json(db, "list", "--severity", "major")["total"] == 1
    assert cli_json(db, "list", "--state", "received", "--state", "recorded")["total"] == 4
    assert cli_json(db, "list", "--state", "recorded")["total"] == 1
    out = ok(cli(db, "list", "--limit", "2"))
    assert "1-2 of 4; next page: --offset 2" in out

    err = expected_error(cli(db, "list", "--state", "recordd"), code=2)
    assert "did you mean 'recorded'?" in err
    expected_error(cli(db, "list", "--limit", "0"), code=2)


# -- rules ----------------------------------------------------------------------------------


def test_rules_check_passes_the_default_file(db: Path, tmp_path: Path) -> None:
    target = tmp_path / "rules.yaml"
    target.write_text(default_rules_text(), "utf-8")
    out = ok(cli(db, "rules", "check", str(target)))
    assert out.startswith(f"{target}: ok: 客户投诉处理程序")
    assert "7 states" in out and "transitions" in out and "version " in out
    assert len(out.strip().splitlines()) == 1

    doc = cli_json(db, "rules", "check", str(target))
    assert doc["ok"] is True
    (entry,) = doc["files"]
    assert entry["states"] == 7 and len(entry["version"]) == 64 and entry["problems"] == []


def _broken_rules(tmp_path: Path) -> tuple[Path, int, int]:
    text = default_rules_text()
    assert text.count("    to: confirmed\n") >= 1
    broken = text.replace("    to: confirmed\n", "    to: confirmd\n", 1)
    broken = broken.replace(
        "    requires: [readback_confirmed]\n", "    requirs: [readback_confirmed]\n", 1
    )
    lines = broken.splitlines()
    state_line = next(i for i, line in enumerate(lines, 1) if "to: confirmd" in line)
    key_line = next(i for i, line in enumerate(lines, 1) if "requirs:" in line)
    path = tmp_path / "broken.yaml"
    path.write_text(broken, "utf-8")
    return path, state_line, key_line


def test_rules_check_reports_every_located_problem(db: Path, tmp_path: Path) -> None:
    broken, state_line, key_line = _broken_rules(tmp_path)
    good = tmp_path / "good.yaml"
    good.write_text(default_rules_text(), "utf-8")
    result = cli(db, "rules", "check", str(good), str(broken))
    assert result.exit_code == 1, result.output
    out = result.stdout
    assert f"{good}: ok" in out
    assert f"{broken}:{key_line}:5: " in out
    assert "unknown key 'requirs'" in out and "did you mean 'requires'?" in out
    assert f"{broken}:{state_line}:" in out and "unknown state 'confirmd'" in out
    assert "did you mean 'confirmed'?" in out
    assert "Traceback" not in result.output

    doc = cli_json(db, "rules", "check", str(broken), code=1)
    assert doc["ok"] is False
    problems = doc["files"][0]["problems"]
    assert {p["suggestion"] for p in problems} >= {"requires"}
    assert all(
        set(p) == {"file", "line", "column", "path", "message", "expected", "suggestion"}
        for p in problems
    )
    assert any(p["line"] == key_line for p in problems)


def test_rules_check_needs_a_file_and_reports_unreadable_ones(db: Path, tmp_path: Path) -> None:
    expected_error(cli(db, "rules", "check"), code=2)
    result = cli(db, "rules", "check", str(tmp_path / "missing.yaml"))
    assert result.exit_code == 1 and "cannot read" in result.stdout


def test_a_broken_rules_option_is_a_clear_error(db: Path, tmp_path: Path) -> None:
    broken, _, _ = _broken_rules(tmp_path)
    err = expected_error(cli(db, "--rules", str(broken), "list"))
    assert "problem" in err and "did you mean 'requires'?" in err
    assert len(err.strip().splitlines()) >= 3  # a head line and one line per problem
    doc = cli_json(db, "--rules", str(broken), "list", code=1)
    assert doc["error"]["type"] == "RuleError" and len(doc["error"]["problems"]) >= 2


def test_rules_schema_is_json(db: Path, tmp_path: Path) -> None:
    schema = json.loads(ok(cli(db, "rules", "schema")))
    assert schema["$schema"].startswith("https://json-schema.org/")
    assert "transitions" in schema["properties"]
    target = tmp_path / "schema.json"
    result = cli(db, "rules", "schema", "--output", str(target))
    assert result.exit_code == 0 and result.stdout == ""
    assert json.loads(target.read_text("utf-8")) == schema


# -- audit ----------------------------------------------------------------------------------


def test_audit_verify_finds_an_edited_event(db: Path) -> None:
    number = submit(db)
    ok(cli(db, "fire", number, "record", *CS, "--set", "readback_confirmed=true"))
    submit(db)
    assert "verified 2 complaints, 3 events: ok" in ok(cli(db, "audit", "verify"))
    report = cli_json(db, "audit", "verify")
    assert report == {"ok": True, "complaints": 2, "events": 3, "findings": [], "deep": False}

    with sqlite3.connect(db) as conn:
        conn.execute(
            "UPDATE events SET payload = ? WHERE seq = 2",
            (json.dumps({"set": {"readback_confirmed": False}}),),
        )
    conn.close()
    result = cli(db, "audit", "verify")
    assert result.exit_code == 1, result.output
    assert number in result.stdout and "edited" in result.stdout
    assert "1 finding" in result.stdout and "1 findings" not in result.stdout
    report = cli_json(db, "audit", "verify", code=1)
    assert report["ok"] is False
    (finding,) = report["findings"]
    assert finding["number"] == number and finding["seq"] == 2 and finding["kind"] == "edited"


# -- demo -----------------------------------------------------------------------------------


def test_demo_runs_and_recreates_its_database(tmp_path: Path) -> None:
    target = tmp_path / "demo.db"
    runner = CliRunner(env=ENV)
    result = runner.invoke(main, ["demo", "--db", str(target), "--count", "6", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["count"] == 6 and summary["database"] == str(target.resolve())
    assert summary["verification"]["ok"] is True and summary["verification"]["deep"] is True
    assert sum(summary["states"].values()) == 6
    assert summary["clocks"]["breaches"] > 0 and summary["outbox"]["notifications"] > 0

    result = runner.invoke(main, ["demo", "--db", str(target), "--count", "6"])
    assert result.exit_code == 0, result.output
    assert "complaints by state" in result.stdout and "deep verification: ok" in result.stdout
    assert "fired by the clocks" in result.stdout and "notifications" in result.stdout
    assert str(target.resolve()) in result.stdout
    assert (
        json.loads(runner.invoke(main, ["--db", str(target), "--json", "list"]).stdout)["total"]
        == 6
    )


def test_demo_will_not_replace_a_real_database(db: Path) -> None:
    submit(db)
    err = expected_error(CliRunner(env=ENV).invoke(main, ["demo", "--db", str(db), "--count", "2"]))
    assert "not a demo database" in err
    assert cli_json(db, "list")["total"] == 1


@pytest.mark.parametrize("args", [
    ("list", "--offset", str(10**20)),
    ("timers", "list", "--offset", str(10**20)),
    ("list", "--offset", str(2**62)),  # the help allowed it; the engine refused it
    ("timers", "list", "--offset", str(2**62)),
    ("outbox", "ack", str(10**23)),
    ("timers", "extend", "TS-2026-000001", "first_response", "--amount", str(10**8),
     "--reason", "x", "--consent-by", "张伟", "--consent-at", "2026-03-02T09:00",
     "--consent-channel", "phone", "--actor", "li.na", "--role", "customer_service"),
])
def test_numbers_too_large_for_the_database_are_usage_errors(db: Path,
                                                             args: tuple[str, ...]) -> None:
    """Not a traceback (``OverflowError`` from the driver, or a date out of range)."""
    result = cli(db, *args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert "range" in result.output


@pytest.mark.parametrize("command", [("list",), ("timers", "list")])
def test_the_largest_offset_the_help_shows_is_accepted(db: Path,
                                                       command: tuple[str, ...]) -> None:
    submit(db)
    help_text = " ".join(ok(cli(db, *command, "--help")).split())
    assert f"0<=x<={2**62 - 1}]" in help_text
    doc = cli_json(db, *command, "--offset", str(2**62 - 1))
    assert doc["offset"] == 2**62 - 1


def test_usage_errors_under_json_are_a_json_error_document(db: Path) -> None:
    doc = cli_json(db, "list", "--state", "recieved", code=2)
    assert doc["error"]["type"] == "UsageError"
    assert "did you mean 'received'?" in doc["error"]["message"]
    assert doc["error"]["command"].endswith(" list")  # the program name as invoked
    assert cli_json(db, "list", "--offset", str(10**20), code=2)["error"]["type"] == "UsageError"
    plain = cli(db, "list", "--state", "recieved")
    assert plain.exit_code == 2 and not plain.stdout.strip()  # people get click's text
