"""The timing and auditing commands through click's CliRunner: scheduler, timers, outbox,
rule-set versions and migration, replay, deep verification, exports and the HTML timeline.

The history is written in simulated time in March 2026 (with the library and a
``SimulatedClock``); the commands run on the system clock, so for them every clock of that
history is long overdue. Each command gets its happy path and at least one error.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner, Result

from complaintflow import Consent, Engine, Scheduler, SimulatedClock
from complaintflow.cli import main
from complaintflow.rules.loader import default_rules_text
from tests.support import CS, GM, QA, SALES, complaint_fields

SH = ZoneInfo("Asia/Shanghai")
ENV = {
    "COLUMNS": "250",
    "COMPLAINTFLOW_DB": None,
    "COMPLAINTFLOW_RULES": None,
    "COMPLAINTFLOW_ACTOR": None,
    "COMPLAINTFLOW_ROLES": None,
    "COMPLAINTFLOW_DEPARTMENT": None,
}
CS_ARGS = ["--actor", "li.na", "--role", "customer_service"]
ASSIGN = {"responsible_department": "quality", "handler": "wang.qa"}


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 3, day, hour, minute, tzinfo=SH)


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A database with three complaints written in March 2026, the scheduler ticking on
    the way: A (taken by a sales rep, handed over, confirmed, one clock extended with the
    customer's consent), B (major, reported to management at once), C (rejected)."""
    path = tmp_path_factory.mktemp("history") / "history.db"
    clock = SimulatedClock(at(2, 9))
    engine = Engine.open(f"sqlite:///{path}", clock=clock)
    scheduler = Scheduler(engine, worker="test")
    try:
        a = engine.submit(complaint_fields(), SALES).number
        clock.set(at(2, 9, 5))
        b = engine.submit(complaint_fields(claimed_amount="50000"), CS).number
        clock.set(at(2, 9, 10))
        engine.fire(a, "hand_over", SALES)
        clock.set(at(2, 9, 20))
        engine.fire(a, "respond", CS, {"response_note": "已电话回复客户"})
        clock.set(at(2, 9, 40))
        engine.fire(a, "record", CS, {"readback_confirmed": True})
        c = engine.submit(complaint_fields(customer_name="恒信五金"), CS).number
        engine.fire(c, "record", CS, {"readback_confirmed": True})
        engine.fire(c, "reject", CS, {"rejection_reason": "非本公司产品"})
        clock.set(at(2, 10))
        engine.fire(a, "confirm", CS, ASSIGN)
        scheduler.tick()  # B's report to management, warnings of the first hour
        clock.set(at(3, 10))
        scheduler.tick()  # A's contact clock breached overnight, B's first response ...
        clock.set(at(3, 10, 30))
        engine.extend_timer(
            a,
            "whole_complaint",
            CS,
            5,
            Consent("张伟", at(3, 10, 15), "phone", "同意延期"),
            reason="需补充样品复检",
        )
        engine.fire(
            a,
            "submit_report",
            QA,
            {
                "root_cause": "process",
                "responsibility": "company",
                "investigation_report": "装配扭矩不足",
            },
        )
        clock.set(at(3, 11))
        engine.fire(b, "record", CS, {"readback_confirmed": True})
        engine.fire(b, "confirm", CS, ASSIGN)
        engine.fire(b, "name_special_team", GM, {"special_team": "质量部牵头"})
        scheduler.tick()
    finally:
        engine.close()
    return path, {"A": a, "B": b, "C": c}


@pytest.fixture
def db(history: tuple[Path, dict[str, str]], tmp_path: Path) -> Path:
    """A private copy of the history (commands may change it)."""
    target = tmp_path / "history.db"
    shutil.copy(history[0], target)
    return target


@pytest.fixture
def numbers(history: tuple[Path, dict[str, str]]) -> dict[str, str]:
    return history[1]


def cli(db: Path, *args: str, input: str | None = None) -> Result:
    return CliRunner(env=ENV).invoke(main, ["--db", str(db), *args], input=input)


def wide(db: Path, *args: str) -> str:
    """Human output on a terminal wide enough that no table cell wraps."""
    result = CliRunner(env={**ENV, "COLUMNS": "2000"}).invoke(main, ["--db", str(db), *args])
    assert result.exit_code == 0, result.output
    return result.stdout


def ok(result: Result) -> str:
    assert result.exit_code == 0, result.output
    return result.stdout


def cli_json(db: Path, *args: str, code: int = 0) -> Any:
    result = cli(db, "--json", *args)
    assert result.exit_code == code, result.output
    return json.loads(result.stdout)


def expected_error(result: Result, code: int = 1) -> str:
    assert result.exit_code == code, result.output
    assert result.exc_info is not None and result.exc_info[0] is SystemExit
    assert "Traceback" not in result.output
    return result.stderr


def second_rules(tmp_path: Path) -> Path:
    """The default rules with office hours 09:00-17:00 and 20 working days for the whole
    complaint: another rule-set version."""
    text = default_rules_text()
    assert text.count('"08:30-12:00"') == 5
    text = text.replace('"08:30-12:00"', '"09:00-12:00"').replace('"13:00-17:30"', '"13:00-17:00"')
    old = "    duration: {working_days: 15}\n"
    assert text.count(old) == 1
    path = tmp_path / "v2.yaml"
    path.write_text(text.replace(old, "    duration: {working_days: 20}\n"), "utf-8")
    return path


# -- scheduler ------------------------------------------------------------------------------


def test_scheduler_tick_fires_what_is_overdue_once(db: Path) -> None:
    first = cli_json(db, "scheduler", "tick", "--worker", "cron")
    assert first["fired"] > 0 and first["breaches"] > 0
    assert first["fired"] == first["warnings"] + first["breaches"]
    assert first["max_lateness_seconds"] > 86400 * 30  # written in March
    again = ok(cli(db, "scheduler", "tick"))
    assert again.startswith("fired 0 (0 warnings, 0 breaches) in 0 batches")
    assert "next due: " in again
    breached = cli_json(db, "timers", "list", "--breached", "--limit", "1000")["items"]
    assert {t["breached_at"][:10] for t in breached} >= {datetime.now(SH).date().isoformat()}


def test_scheduler_tick_checks_its_options(db: Path) -> None:
    assert "--batch-size" in expected_error(cli(db, "scheduler", "tick", "--batch-size", "0"), 2)


def test_scheduler_run_refuses_crossed_intervals(db: Path) -> None:
    result = cli(db, "scheduler", "run", "--min-interval", "5", "--max-interval", "1")
    assert "--min-interval" in expected_error(result, 2)


class Worker:
    """``complaintflow scheduler run`` in a child process, its stderr read line by line."""

    def __init__(self, db: Path, name: str) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "complaintflow",
                "--db",
                str(db),
                "scheduler",
                "run",
                "--worker",
                name,
                "--min-interval",
                "0.1",
                "--max-interval",
                "0.5",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "COMPLAINTFLOW_DB": ""},
        )
        assert self.process.stderr is not None
        self.reader = threading.Thread(target=self._read, args=(self.process.stderr,))
        self.reader.start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            self.lines.put(line)

    def wait_for(self, text: str, timeout: float = 120) -> str:
        """The next line containing ``text`` (the lines before it are kept in ``seen``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                if not self.reader.is_alive():
                    break  # the process is gone and every line of it was read
                continue
            self.seen.append(line)
            if text in line:
                return line
        raise AssertionError(f"no {text!r} in:\n{''.join(self.seen)}")

    def stop(self, signum: int) -> int:
        self.process.send_signal(signum)
        return self.process.wait(timeout=60)


def wait_until_fired(workers: list[Worker], timeout: float = 120) -> None:
    """Until one of the workers logged a tick that fired something."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for worker in workers:
            try:
                line = worker.lines.get(timeout=0.2)
            except queue.Empty:
                continue
            worker.seen.append(line)
            if "INFO complaintflow.scheduler: fired" in line:
                return
    raise AssertionError("no tick fired anything:\n" + "".join(w for x in workers for w in x.seen))


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for worker in started:
        if worker.process.poll() is None:
            worker.process.kill()
            worker.process.wait(timeout=30)
        worker.reader.join(timeout=30)
        if worker.process.stderr is not None:
            worker.process.stderr.close()


def test_two_scheduler_daemons_fire_each_deadline_once_and_stop_on_signals(
    db: Path, numbers: dict[str, str], workers: list[Worker]
) -> None:
    before = cli_json(db, "timers", "list", "--limit", "1000")["items"]
    overdue = [t for t in before if t["due_at"] and not t["breached_at"]]
    assert overdue
    workers += [Worker(db, "one"), Worker(db, "two")]
    for worker in workers:
        assert "SIGTERM or Ctrl-C stops it" in worker.wait_for("started")
    wait_until_fired(workers)
    assert workers[0].stop(signal.SIGTERM) == 0
    assert workers[1].stop(signal.SIGINT) == 0
    assert "received SIGTERM" in workers[0].wait_for("received")
    assert "stopped after" in workers[0].wait_for("stopped after")
    assert "received SIGINT" in workers[1].wait_for("received")
    assert "stopped after" in workers[1].wait_for("stopped after")
    log = "".join(workers[0].seen + workers[1].seen)
    assert "Running job" not in log  # APScheduler's chatter stays quiet
    # every overdue clock is now breached, and each breach is recorded exactly once
    after = {
        (t["number"], t["timer"], t["run"]): t
        for t in cli_json(db, "timers", "list", "--limit", "1000")["items"]
    }
    for t in overdue:
        assert after[(t["number"], t["timer"], t["run"])]["breached_at"] is not None
    for number in numbers.values():
        events = cli_json(db, "history", number)["events"]
        breaches = [
            (e["payload"]["timer"], e["payload"]["run"])
            for e in events
            if e["type"] == "timer_breached"
        ]
        assert len(breaches) == len(set(breaches)), number
    assert cli_json(db, "audit", "verify", "--deep")["ok"] is True


# -- timers ---------------------------------------------------------------------------------


def test_timers_list_filters_and_shows_local_times(db: Path, numbers: dict[str, str]) -> None:
    doc = cli_json(db, "timers", "list")
    assert doc["items"] and all(t["status"] != "stopped" for t in doc["items"])
    first = doc["items"][0]
    assert set(first) >= {
        "number",
        "timer",
        "label",
        "status",
        "started_at",
        "due_at",
        "remaining_seconds",
        "warned",
        "breached_at",
        "provisional",
    }
    assert first["started_at"].endswith("+08:00")
    dues = [t["due_at"] for t in doc["items"] if t["due_at"]]
    assert dues == sorted(dues)
    breached = cli_json(db, "timers", "list", "--breached")["items"]
    assert breached and all(t["breached_at"] for t in breached)
    assert any(
        t["timer"] == "major_to_management" and t["number"] == numbers["B"] for t in breached
    )
    assert all(
        not t["breached_at"] for t in cli_json(db, "timers", "list", "--not-breached")["items"]
    )
    stopped = cli_json(db, "timers", "list", "--status", "stopped", "--limit", "2")["items"]
    assert len(stopped) == 2 and {t["status"] for t in stopped} == {"stopped"}

    out = wide(db, "timers", "list", "--breached", "--status", "stopped")
    assert "contact_customer 处理人联系客户时限" in out and "times in Asia/Shanghai" in out
    assert "2026-03-02 12:00" in out  # A's contact was due two working hours after 10:00
    out = ok(cli(db, "timers", "list", "--limit", "1"))
    assert "1 clock run; next page: --offset 1" in out


def test_timers_list_checks_its_choices(db: Path) -> None:
    err = expected_error(cli(db, "timers", "list", "--status", "late"), 2)
    assert "'late' is not one of" in err


def test_timers_show_every_run_with_its_budget(db: Path, numbers: dict[str, str]) -> None:
    doc = cli_json(db, "timers", "show", numbers["A"])
    by_timer = {t["timer"]: t for t in doc["timers"]}
    assert by_timer["handover_to_cs"]["status"] == "stopped"
    whole = by_timer["whole_complaint"]
    assert whole["budget"] == {"unit": "working_days", "amount": 20}
    assert len(whole["extensions"]) == 1
    out = wide(db, "timers", "show", numbers["A"])
    assert "15 working days +5 extended" in out
    assert "whole_complaint #1 extended by 5 working days by li.na: 需补充样品复检" in out
    assert "overdue" in out  # the clocks of March are long past


def test_timers_show_an_unknown_complaint(db: Path) -> None:
    assert "no complaint 'TS-1999-000001'" in expected_error(
        cli(db, "timers", "show", "TS-1999-000001")
    )


def test_timers_recompute_after_the_calendar_changed(db: Path, tmp_path: Path) -> None:
    assert ok(cli(db, "timers", "recompute")).strip() == "no clock recomputed"
    assert cli_json(db, "timers", "recompute") == {"changed": []}
    rules = second_rules(tmp_path)
    doc = cli_json(db, "--rules", str(rules), "timers", "recompute")
    moved = [c for c in doc["changed"] if c["due_at"] != c["previous_due_at"]]
    assert moved
    change = moved[0]
    assert set(change) >= {"number", "timer", "run", "previous_due_at", "due_at", "provisional"}
    assert change["due_at"].endswith("17:00:00+08:00")  # the office now closes at 17:00
    assert change["previous_due_at"].endswith("17:30:00+08:00")
    events = cli_json(db, "history", change["number"])["events"]
    recomputed = [e for e in events if e["type"] == "deadline_recomputed"]
    assert recomputed and recomputed[0]["actor"]["id"] == "system:recompute"


def test_timers_recompute_prints_one_row_per_changed_deadline(db: Path, tmp_path: Path) -> None:
    out = wide(db, "--rules", str(second_rules(tmp_path)), "timers", "recompute")
    assert "recomputed clocks (times in Asia/Shanghai)" in out
    assert "whole_complaint" in out and "17:30" in out and "17:00" in out


def test_timers_recompute_needs_an_actor_for_its_roles(db: Path) -> None:
    assert "--role needs --actor" in expected_error(
        cli(db, "timers", "recompute", "--role", "customer_service"), 2
    )


def _fresh_complaint(db: Path) -> str:
    args = [
        a
        for f in (
            "customer_name=华东机电",
            "channel=phone",
            "product_name=电机",
            "category=product_quality",
            "description=异响",
        )
        for a in ("--field", f)
    ]
    number: str = cli_json(db, "submit", *CS_ARGS, *args)["number"]
    return number


def test_timers_extend_with_consent(db: Path) -> None:
    number = _fresh_complaint(db)
    consent_at = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    doc = cli_json(
        db,
        "timers",
        "extend",
        number,
        "whole_complaint",
        "--amount",
        "5",
        "--consent-by",
        "张伟",
        "--consent-at",
        consent_at,
        "--consent-channel",
        "phone",
        "--reason",
        "需补充调查",
        *CS_ARGS,
    )
    whole = next(t for t in doc["timers"] if t["timer"] == "whole_complaint")
    assert whole["budget"]["amount"] == 20 and len(whole["extensions"]) == 1
    events = cli_json(db, "history", number, *CS_ARGS)["events"]
    assert [e["type"] for e in events[-2:]] == ["customer_consent", "timer_extended"]
    assert events[-2]["payload"]["consent"]["given_by"] == "张伟"
    anonymous = cli_json(db, "history", number)["events"]
    assert anonymous[-2]["payload"]["consent"]["given_by"] != "张伟"  # personal data
    assert events[-1]["payload"]["reason"] == "需补充调查"

    out = ok(
        cli(
            db,
            "timers",
            "extend",
            number,
            "first_response",
            "--amount",
            "1",
            "--consent-by",
            "张伟",
            "--consent-at",
            consent_at,
            "--consent-channel",
            "phone",
            "--reason",
            "客户出差",
            *CS_ARGS,
        )
    )
    assert f"{number}: first_response extended by 1 hour; due " in out


def test_timers_extend_refuses_consent_in_the_future_and_bad_times(db: Path) -> None:
    number = _fresh_complaint(db)
    common = [
        "--amount",
        "5",
        "--consent-by",
        "张伟",
        "--consent-channel",
        "phone",
        "--reason",
        "x",
        *CS_ARGS,
    ]
    err = expected_error(
        cli(
            db,
            "timers",
            "extend",
            number,
            "whole_complaint",
            "--consent-at",
            "2099-01-01T10:00",
            *common,
        )
    )
    assert "consent.given_at: lies in the future" in err
    err = expected_error(
        cli(
            db,
            "timers",
            "extend",
            number,
            "whole_complaint",
            "--consent-at",
            "last tuesday",
            *common,
        )
    )
    assert err.startswith("error: --consent-at: 'last tuesday' is not an ISO 8601 time")
    assert len(err.strip().splitlines()) == 1


def test_timers_extend_refuses_a_breached_or_stopped_clock(
    db: Path, numbers: dict[str, str]
) -> None:
    common = [
        "--amount",
        "1",
        "--consent-by",
        "张伟",
        "--consent-at",
        "2026-03-03T09:00",
        "--consent-channel",
        "phone",
        "--reason",
        "x",
        *CS_ARGS,
    ]
    err = expected_error(cli(db, "timers", "extend", numbers["B"], "major_to_management", *common))
    assert "the deadline has already passed" in err
    err = expected_error(cli(db, "timers", "extend", numbers["A"], "contact_customer", *common))
    assert "the clock is not running" in err
    doc = cli_json(db, "timers", "extend", numbers["A"], "nosuch", *common, code=1)
    assert doc["error"]["type"] == "NotFound"


# -- outbox ---------------------------------------------------------------------------------


def test_outbox_claim_leases_and_ack_delivers(db: Path) -> None:
    first = cli_json(db, "outbox", "claim", "--limit", "2")["notifications"]
    assert len(first) == 2
    note = first[0]
    assert set(note) >= {"id", "key", "number", "kind", "recipients", "payload", "created_at"}
    assert note["created_at"].endswith("+08:00") and note["attempts"] == 1
    second = cli_json(db, "outbox", "claim", "--limit", "2")["notifications"]
    assert not {n["id"] for n in first} & {n["id"] for n in second}  # leased, not repeated
    ids = [str(n["id"]) for n in first]
    assert cli_json(db, "outbox", "ack", *ids) == {"acked": 2, "ids": [int(i) for i in ids]}
    out = ok(cli(db, "outbox", "ack", *ids, "999999"))
    assert out.strip() == "acked 0 of 3 (3 unknown or already acked)"
    out = ok(cli(db, "outbox", "claim", "--limit", "1", "--lease-seconds", "60"))
    assert "claimed notifications" in out and "1 claimed for 60 s" in out


def test_outbox_errors(db: Path) -> None:
    expected_error(cli(db, "outbox", "claim", "--limit", "0"), 2)
    assert "'x' is not a valid integer" in expected_error(cli(db, "outbox", "ack", "x"), 2)
    expected_error(cli(db, "outbox", "ack"), 2)


# -- rule-set versions ----------------------------------------------------------------------


def _hashes(db: Path, rules: Path) -> tuple[str, str]:
    doc = cli_json(db, "--rules", str(rules), "rules", "list")
    current = doc["current"]
    (other,) = [r["hash"] for r in doc["rulesets"] if r["hash"] != current]
    return other, current


def test_rules_list_show_and_diff(db: Path, tmp_path: Path) -> None:
    doc = cli_json(db, "rules", "list")
    (only,) = doc["rulesets"]
    assert only["current"] is True and only["complaints"] == 3
    assert only["loaded_at"].endswith("+08:00")
    old, new = _hashes(db, second_rules(tmp_path))
    out = ok(cli(db, "rules", "list"))
    assert old[:12] in out and new[:12] in out and "current" in out

    assert ok(cli(db, "rules", "show", old[:8])) == default_rules_text()
    assert cli_json(db, "rules", "show", new[:10])["hash"] == new

    diff = ok(cli(db, "rules", "diff", old[:8], new[:8]))
    assert diff.startswith(f"--- {old[:12]}\n+++ {new[:12]}\n")
    assert '-      mon: ["08:30-12:00", "13:00-17:30"]' in diff
    assert '+      mon: ["09:00-12:00", "13:00-17:00"]' in diff
    assert "+    duration: {working_days: 20}" in diff
    same = cli(db, "rules", "diff", old[:8], old)
    assert same.exit_code == 0 and same.stdout == "" and "no differences" in same.stderr


def test_rules_show_and_diff_unknown_hashes(db: Path) -> None:
    assert "at least 6 characters" in expected_error(cli(db, "rules", "show", "abc"))
    assert "no rule set 'ffffff'" in expected_error(cli(db, "rules", "show", "ffffff"))
    assert "no rule set" in expected_error(cli(db, "rules", "diff", "ffffff", "eeeeee"))


def test_rules_migrate_dry_run_refusal_and_real_run(
    db: Path, tmp_path: Path, numbers: dict[str, str]
) -> None:
    _, new = _hashes(db, second_rules(tmp_path))
    plan = cli_json(db, "rules", "migrate", "--to", new[:8], "--dry-run")
    assert plan["dry_run"] is True and plan["ok"] is True and plan["to"] == new
    moved = {i["number"]: i for i in plan["items"]}
    assert set(moved) == {numbers["A"], numbers["B"]}  # C is closed: never moved
    assert "whole_complaint" in moved[numbers["A"]]["timers_rederived"]
    out = ok(cli(db, "rules", "migrate", "--to", new[:8], "--dry-run", "--state", "confirmed"))
    assert "would move to" in out and numbers["B"] in out and numbers["A"] not in out

    refused = cli(
        db, "rules", "migrate", "--to", new[:8], "--dry-run", "--map", "investigated=nosuch"
    )
    assert refused.exit_code == 1 and "mapped state 'nosuch'" in refused.stdout
    err = expected_error(
        cli(db, "rules", "migrate", "--to", new[:8], *CS_ARGS, "--map", "investigated=nosuch")
    )
    progress, _, err = err.partition("error: ")  # the bar of the checking done first
    assert progress.startswith("checking (complaints)") and "2/2" in progress
    assert err.startswith("migration refused, nothing changed: 1 complaint cannot move:")
    assert f"  {numbers['A']}: mapped state 'nosuch' does not exist in the target" in err
    assert "--actor is required" in expected_error(cli(db, "rules", "migrate", "--to", new[:8]), 2)
    assert "OLD=NEW" in expected_error(
        cli(db, "rules", "migrate", "--to", new[:8], "--dry-run", "--map", "nosuch"), 2
    )

    done = cli_json(db, "rules", "migrate", "--to", new[:8], "--number", numbers["A"], *CS_ARGS)
    assert [i["number"] for i in done["items"]] == [numbers["A"]]
    events = cli_json(db, "history", numbers["A"])["events"]
    assert events[-1]["type"] == "ruleset_migrated" and events[-1]["ruleset"] == new
    assert cli_json(db, "audit", "verify")["ok"] is True


# -- replay ---------------------------------------------------------------------------------


def test_audit_replay_shows_the_timeline_and_the_state_at_an_instant(
    db: Path, numbers: dict[str, str]
) -> None:
    a = numbers["A"]
    doc = cli_json(db, "audit", "replay", a, "--at", "2026-03-02T09:50")
    assert doc["state"] == "recorded" and doc["state_label"] == "登记"
    assert doc["at"] == "2026-03-02T09:50:00+08:00"
    assert [e["trigger"] or e["type"] for e in doc["events"]] == [
        "submitted",
        "hand_over",
        "respond",
        "record",
    ]
    assert doc["fields"]["phone"] == "138****5678"  # no actor: personal data masked
    assert doc["severity_floor"] is None  # no breach has raised it
    clocks = {t["timer"]: t for t in doc["timers"]}
    assert clocks["handover_to_cs"]["status"] == "stopped"
    assert clocks["whole_complaint"]["status"] == "running"
    assert clocks["whole_complaint"]["remaining_seconds"] > 0

    out = wide(db, "audit", "replay", a, "--at", "2026-03-03T11:00+08:00", *CS_ARGS)
    assert f"{a} as of 2026-03-03T11:00:00+08:00 (times in Asia/Shanghai)" in out
    assert "severity floor" in out
    assert "received 接获 → recorded 登记" in out and "sales_rep" in out
    assert "BREACH contact_customer (due 2026-03-02 12:00, fired 22h 00m late)" in out
    assert "customer consent to extend whole_complaint: 张伟 via phone" in out
    assert "extended whole_complaint by 5 working days" in out
    assert "investigated 调查分析" in out and "13812345678" in out  # the reader sees it
    assert "whole_complaint 投诉处理总时限" in out

    out = wide(db, "audit", "replay", numbers["B"], "--at", "2026-03-03T12:00")
    assert "name_special_team" in out and "138****5678" in out and "(masked)" in out
    assert "BREACH major_to_management" in out and "notified general_manager" in out


def test_audit_replay_marks_approvals(tmp_path: Path) -> None:
    path = tmp_path / "approved.db"
    clock = SimulatedClock(at(2, 9))
    with Engine.open(f"sqlite:///{path}", clock=clock) as engine:
        number = engine.submit(complaint_fields(claimed_amount="50000"), CS).number
        engine.fire(number, "record", CS, {"readback_confirmed": True})
        engine.fire(number, "confirm", CS, ASSIGN)
        engine.fire(number, "name_special_team", GM, {"special_team": "质量部牵头"})
        engine.fire(
            number,
            "submit_report",
            QA,
            {
                "root_cause": "process",
                "responsibility": "company",
                "investigation_report": "装配扭矩不足",
            },
        )
        engine.fire(
            number, "propose_plan", QA, {"disposal_plan": "更换", "disposal_measures": ["replace"]}
        )
        engine.fire(number, "approve_plan", GM)
    out = wide(path, "audit", "replay", number)
    assert "approve_plan ✔ approval" in out
    assert "now (after the last event)" in out


def test_audit_replay_errors(db: Path, numbers: dict[str, str]) -> None:
    err = expected_error(cli(db, "audit", "replay", numbers["A"], "--at", "2026-13-45"))
    assert err.startswith("error: --at: '2026-13-45' is not an ISO 8601 time")
    assert len(err.strip().splitlines()) == 1
    err = expected_error(cli(db, "audit", "replay", numbers["A"], "--at", "2026-03-01T08:00"))
    assert "before the complaint existed" in err
    doc = cli_json(db, "audit", "replay", numbers["A"], "--at", "2026-03-01", code=1)
    assert doc["error"]["type"] == "InvalidInput"
    assert "no complaint" in expected_error(cli(db, "audit", "replay", "TS-1999-000001"))


def test_audit_replay_and_verify_of_a_forged_malformed_payload(
    db: Path, numbers: dict[str, str]
) -> None:
    from tests.integration.test_replay_audit import forge

    engine = Engine.open(f"sqlite:///{db}")
    try:  # record stops registration: a forger adds an entry that is not an object
        forge(engine, numbers["C"], 2, lambda p: p["timers"]["stopped"].append("x"))
    finally:
        engine.close()
    err = expected_error(cli(db, "audit", "replay", numbers["C"]))
    assert err.startswith(f"error: event 2 of {numbers['C']}: its stored transition payload "
                          "is malformed (timers.stopped[")
    doc = cli_json(db, "audit", "replay", numbers["C"], code=1)
    assert doc["error"]["type"] == "IntegrityError"
    found = [f for f in cli_json(db, "audit", "verify", "--deep", code=1)["findings"]
             if f["number"] == numbers["C"]]
    assert [(f["seq"], f["kind"]) for f in found] == [(2, "bad_payload")]


@pytest.mark.parametrize(("command", "edit", "problem"), [
    (("audit", "replay"), lambda p: p.update(actions="notify everyone"),
     "actions is a string, not an object"),
    (("audit", "replay"), lambda p: p.update(lateness_seconds="late"),
     "lateness_seconds is 'late', not a number of seconds"),
    (("audit", "timeline"), lambda p: p.pop("due_at"), "due_at is null, not an ISO instant"),
])
def test_audit_replay_and_timeline_of_a_malformed_warning_are_integrity_errors(
    db: Path, tmp_path: Path, numbers: dict[str, str], command: tuple[str, ...],
    edit: Any, problem: str,
) -> None:
    """Parts of a warning the replay does not read, but the timeline and the page show
    (before: AttributeError, ValueError, TypeError from the rendering)."""
    from tests.integration.test_replay_audit import forge

    engine = Engine.open(f"sqlite:///{db}")
    try:
        number, warning = next((n, e.seq) for n in numbers.values()
                               for e in engine.history(n) if e.type == "timer_warning")
        forge(engine, number, warning, edit)
    finally:
        engine.close()
    extra = ("--output", str(tmp_path / "page.html")) if command[-1] == "timeline" else ()
    err = expected_error(cli(db, *command, number, *extra))
    assert err.startswith(f"error: event {warning} of {number}: its stored timer_warning "
                          f"payload is malformed ({problem})")
    assert not (tmp_path / "page.html").exists()


def test_a_personal_value_of_no_field_type_is_masked_not_a_crash(
    db: Path, tmp_path: Path, numbers: dict[str, str]
) -> None:
    from tests.integration.test_replay_audit import forge

    engine = Engine.open(f"sqlite:///{db}")
    try:
        forge(engine, numbers["C"], 1, lambda p: p["fields"].update(phone={"area": 21}))
    finally:
        engine.close()
    shown = cli_json(db, "history", numbers["C"])["events"]
    assert shown[0]["payload"]["fields"]["phone"] == "{***"
    ok(cli(db, "audit", "export", "--output", str(tmp_path / "x.jsonl")))


# -- verify ---------------------------------------------------------------------------------


def test_audit_verify_deep_finds_missed_breaches_until_the_scheduler_ran(db: Path) -> None:
    assert cli_json(db, "audit", "verify")["ok"] is True  # chains are fine
    doc = cli_json(db, "audit", "verify", "--deep", code=1)
    assert doc["deep"] is True
    assert {f["kind"] for f in doc["findings"]} == {"missed_breach", "missed_warning"}
    assert all(isinstance(f["seq"], int) for f in doc["findings"])
    ok(cli(db, "scheduler", "tick"))
    out = ok(cli(db, "audit", "verify", "--deep"))
    assert "verified 3 complaints" in out and "(deep): ok" in out
    since = cli_json(db, "audit", "verify", "--deep", "--since", "2026-03-03")
    assert since["ok"] is True and since["deep"] is True


def test_audit_verify_checks_since(db: Path) -> None:
    assert "add --deep" in expected_error(cli(db, "audit", "verify", "--since", "2026-03-03"), 2)
    err = expected_error(cli(db, "audit", "verify", "--deep", "--since", "March"))
    assert "--since: 'March' is not an ISO 8601 time" in err


# -- exports --------------------------------------------------------------------------------


def test_audit_export_and_check_export(db: Path, tmp_path: Path, numbers: dict[str, str]) -> None:
    jsonl = tmp_path / "all.jsonl"
    result = cli(db, "audit", "export", "--output", str(jsonl), *CS_ARGS)
    assert result.exit_code == 0, result.output
    assert result.stdout == "" and "exported" in result.stderr
    *rows, end = (json.loads(line) for line in jsonl.read_text("utf-8").splitlines())
    assert end["export_end"]["events"] == len(rows)
    assert end["export_end"]["digest"] in result.stderr
    assert {r["number"] for r in rows} == set(numbers.values())
    assert all(r["masked"] is False for r in rows)
    checked = cli_json(db, "audit", "check-export", str(jsonl))
    assert checked["ok"] is True and checked["rows"] == len(rows)
    assert checked["recomputed"] == len(rows) and checked["complaints"] == 3
    assert checked["digest"] == end["export_end"]["digest"]
    assert checked["selection"] == {"number": None, "since": None, "until": None}

    csv_file = tmp_path / "a.csv"
    doc = cli_json(
        db,
        "audit",
        "export",
        "--number",
        numbers["A"],
        "--since",
        "2026-03-02T09:00",
        "--until",
        "2026-03-03",
        "--output",
        str(csv_file),
    )
    assert doc["format"] == "csv" and doc["events"] > 0 and doc["complaints"] == 1
    assert len(doc["digest"]) == 64
    assert csv_file.read_text("utf-8").startswith("number,seq,type")
    checking = cli(db, "audit", "check-export", str(csv_file))
    assert "masked (links checked only): ok" in ok(checking)  # exported without a reader role
    size = csv_file.stat().st_size  # the bar counts the file's bytes, all of them at the end
    assert size < 1000**2 and f"{size / 1000:.1f}/{size / 1000:.1f} kB" in checking.stderr

    streamed = cli(db, "audit", "export", "--number", numbers["C"], "--output", "-")
    assert streamed.exit_code == 0, streamed.output
    lines = streamed.stdout.splitlines()
    assert len(lines) == 4 and json.loads(lines[0])["type"] == "submitted"
    piped = cli(db, "audit", "check-export", "-", input=streamed.stdout)
    assert piped.exit_code == 0 and "checked 3 events of 1 complaint" in piped.stdout
    piped_size = len(streamed.stdout.encode("utf-8"))  # a pipe has no size: read so far
    assert f"{piped_size / 1000:.1f}/? kB" in piped.stderr


def test_audit_export_errors(db: Path, tmp_path: Path) -> None:
    err = expected_error(cli(db, "audit", "export", "--output", str(tmp_path / "no" / "x.jsonl")))
    assert "cannot write" in err
    target = tmp_path / "none.jsonl"
    err = expected_error(
        cli(db, "audit", "export", "--number", "TS-1999-000001", "--output", str(target))
    )
    assert "no complaint 'TS-1999-000001'" in err and not target.exists()
    err = expected_error(cli(db, "audit", "export", "--since", "soon", "--output", str(target)))
    assert "--since: 'soon' is not an ISO 8601 time" in err and not target.exists()
    for output in (str(target), "-"):  # a range that selects nothing is a usage error
        result = cli(db, "audit", "export", "--since", "2026-03-03", "--until",
                     "2026-03-02T23:59", "--output", output)
        err = expected_error(result, 2)
        assert "--since: '2026-03-03' is later than --until '2026-03-02T23:59'" in err
        assert result.stdout == "" and not target.exists()
    doc = cli_json(db, "audit", "export", "--since", "2026-03-03T00:00+08:00", "--until",
                   "2026-03-02T15:59Z", "--output", str(target), code=2)
    assert doc["error"]["type"] == "UsageError" and not target.exists()


def test_audit_export_progress_counts_the_events_not_the_end_record(
    db: Path, tmp_path: Path, numbers: dict[str, str]
) -> None:
    for name in ("c.jsonl", "c.csv"):
        result = cli(db, "audit", "export", "--number", numbers["C"], "--output",
                     str(tmp_path / name))
        assert result.exit_code == 0, result.output
        assert "exported 3 events of 1 complaint" in result.stderr
        assert "3/?" in result.stderr and "4/?" not in result.stderr


def test_check_export_finds_an_edited_row(db: Path, tmp_path: Path) -> None:
    export = tmp_path / "x.jsonl"
    ok(cli(db, "audit", "export", "--output", str(export), *CS_ARGS))
    rows = export.read_text("utf-8").splitlines()
    row = json.loads(rows[1])
    row["actor_id"] = "someone.else"
    rows[1] = json.dumps(row, ensure_ascii=False)
    export.write_text("\n".join(rows) + "\n", "utf-8")
    result = cli(db, "audit", "check-export", str(export))
    assert result.exit_code == 1 and "edited" in result.stdout and "1 finding" in result.stdout

    garbage = tmp_path / "garbage.jsonl"
    garbage.write_text("not json\n", "utf-8")
    assert "is not a jsonl export" in expected_error(cli(db, "audit", "check-export", str(garbage)))
    assert "cannot read" in expected_error(cli(db, "audit", "check-export", str(tmp_path / "no")))


def test_check_export_finds_a_file_cut_short(db: Path, tmp_path: Path) -> None:
    export = tmp_path / "x.csv"
    ok(cli(db, "audit", "export", "--output", str(export), *CS_ARGS))
    rows = export.read_text("utf-8").splitlines(keepends=True)
    export.write_text("".join(rows[:-3]), "utf-8")  # the end record and two events lost
    result = cli(db, "audit", "check-export", str(export))
    assert result.exit_code == 1 and "truncated" in result.stdout
    doc = cli_json(db, "audit", "check-export", str(export), code=1)
    assert [f["kind"] for f in doc["findings"]] == ["truncated"]
    assert doc["selection"] is None
    older = ok(cli(db, "audit", "check-export", "--no-end-record", str(export)))
    assert ": ok" in older


def test_audit_timeline_writes_a_page(db: Path, tmp_path: Path, numbers: dict[str, str]) -> None:
    page = tmp_path / "timeline.html"
    result = cli(
        db,
        "audit",
        "timeline",
        numbers["A"],
        "--at",
        "2026-03-03T12:00",
        "--output",
        str(page),
        *CS_ARGS,
    )
    assert result.exit_code == 0, result.output
    html = page.read_text("utf-8")
    assert html.startswith("<!DOCTYPE html>") and numbers["A"] in html
    assert "contact_customer" in html and "<svg" in html
    doc = cli_json(db, "audit", "timeline", numbers["B"], "--output", str(page))
    assert doc["number"] == numbers["B"] and doc["bytes"] == len(page.read_bytes())


def test_audit_timeline_errors(db: Path, tmp_path: Path, numbers: dict[str, str]) -> None:
    err = expected_error(
        cli(db, "audit", "timeline", numbers["A"], "--output", str(tmp_path / "no" / "t.html"))
    )
    assert "cannot write" in err
    assert "no complaint" in expected_error(
        cli(db, "audit", "timeline", "TS-1999-000001", "--output", str(tmp_path / "t.html"))
    )
