"""``complaintflow rules migrate --where KEY=VALUE``: the selection narrowed in SQL by state,
severity, department, handler and time of receipt; unknown keys and values refused with a
did-you-mean before anything changes. ``--state`` and ``--number`` keep working alongside."""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner, Result

from complaintflow import Engine, InvalidInput, SimulatedClock
from complaintflow.cli import main
from complaintflow.migrate import parse_where, plan
from tests.support import CS, complaint_fields
from tests.unit.test_cli import ENV, expected_error
from tests.unit.test_cli_audit import second_rules

SH = ZoneInfo("Asia/Shanghai")
NOW = "2026-03-04T12:00+08:00"
CS_ARGS = ["--actor", "li.na", "--role", "customer_service"]
QUALITY = {"responsible_department": "quality", "handler": "wang.qa"}
SERVICE = {"responsible_department": "after_sales", "handler": "zhou.svc"}


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 3, day, hour, minute, tzinfo=SH)


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, dict[str, str], str]:
    """Four open complaints on the default rules (G1 general, received and recorded on
    2 March; M major, confirmed for quality; G2 general, confirmed for after-sales, on 3
    March; G3 general, received on 4 March), and a second rule-set version stored."""
    path = tmp_path / "c.db"
    clock = SimulatedClock(at(2, 9))
    with Engine.open(f"sqlite:///{path}", clock=clock) as engine:
        g1 = engine.submit(complaint_fields(), CS).number
        engine.fire(g1, "record", CS, {"readback_confirmed": True})
        clock.set(at(2, 10))
        m = engine.submit(complaint_fields(claimed_amount="50000"), CS).number
        engine.fire(m, "record", CS, {"readback_confirmed": True})
        engine.fire(m, "confirm", CS, QUALITY)
        clock.set(at(3, 9))
        g2 = engine.submit(complaint_fields(customer_name="恒信五金"), CS).number
        engine.fire(g2, "record", CS, {"readback_confirmed": True})
        engine.fire(g2, "confirm", CS, SERVICE)
        clock.set(at(4, 9))
        g3 = engine.submit(complaint_fields(customer_name="瑞丰电子"), CS).number
    new = json.loads(
        run(path, "--rules", str(second_rules(tmp_path)), "--json", "rules", "list").stdout
    )["current"]
    return path, {"G1": g1, "M": m, "G2": g2, "G3": g3}, new


def run(db: Path, *args: str) -> Result:
    return CliRunner(env=ENV).invoke(main, ["--db", str(db), "--now", NOW, *args])


def selected(db: Path, new: str, *args: str) -> list[str]:
    result = run(db, "--json", "rules", "migrate", "--to", new[:8], "--dry-run", *args)
    assert result.exit_code == 0, result.output
    return [i["number"] for i in json.loads(result.stdout)["items"]]


def pinned(db: Path) -> dict[str, tuple[str, int]]:
    """number -> (rule-set version, number of events), straight from the file."""
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute(
            "SELECT c.number, c.ruleset, count(e.id) FROM complaints c "
            "JOIN events e ON e.complaint_id = c.id GROUP BY c.number, c.ruleset"
        ).fetchall()
    finally:
        conn.close()
    return {number: (ruleset, n) for number, ruleset, n in rows}


def test_dry_run_narrowed_by_each_key(setup: tuple[Path, dict[str, str], str]) -> None:
    db, n, new = setup
    assert selected(db, new) == [n["G1"], n["M"], n["G2"], n["G3"]]
    assert selected(db, new, "--where", "severity=major") == [n["M"]]
    assert selected(db, new, "--where", "state=confirmed") == [n["M"], n["G2"]]
    assert selected(db, new, "--where", "department=after_sales") == [n["G2"]]
    assert selected(db, new, "--where", "handler=wang.qa") == [n["M"]]
    # naive times are in the rules' time zone; after is inclusive, before exclusive
    assert selected(db, new, "--where", "received_before=2026-03-03") == [n["G1"], n["M"]]
    assert selected(db, new, "--where", "received_after=2026-03-02T10:00") == [
        n["M"],
        n["G2"],
        n["G3"],
    ]
    assert selected(
        db,
        new,
        "--where",
        "received_after=2026-03-02T02:00Z",
        "--where",
        "received_before=2026-03-04T00:00+08:00",
    ) == [n["M"], n["G2"]]
    # values of one key are alternatives; keys must all hold
    assert selected(db, new, "--where", "state=received", "--where", "state=recorded") == [
        n["G1"],
        n["G3"],
    ]
    assert selected(db, new, "--where", "state=confirmed", "--where", "severity=general") == [
        n["G2"]
    ]
    # alongside --state and --number
    assert selected(db, new, "--state", "confirmed", "--where", "severity=general") == [n["G2"]]
    assert selected(db, new, "--number", n["G1"], "--where", "severity=major") == []


def test_the_human_dry_run_lists_only_the_selection(
    setup: tuple[Path, dict[str, str], str],
) -> None:
    db, n, new = setup
    result = run(db, "rules", "migrate", "--to", new[:8], "--dry-run", "--where", "severity=major")
    assert result.exit_code == 0, result.output
    assert n["M"] in result.stdout and n["G1"] not in result.stdout
    assert "1 complaint would move" in result.stdout


def test_a_real_run_moves_only_the_selection(setup: tuple[Path, dict[str, str], str]) -> None:
    db, n, new = setup
    before = pinned(db)
    result = run(
        db, "--json", "rules", "migrate", "--to", new[:8], *CS_ARGS, "--where", "state=confirmed"
    )
    assert result.exit_code == 0, result.output
    assert [i["number"] for i in json.loads(result.stdout)["items"]] == [n["M"], n["G2"]]
    after = pinned(db)
    for key in ("M", "G2"):
        assert after[n[key]] == (new, before[n[key]][1] + 1)
    for key in ("G1", "G3"):
        assert after[n[key]] == before[n[key]]
    history = json.loads(run(db, "--json", "history", n["M"]).stdout)["events"]
    assert history[-1]["type"] == "ruleset_migrated" and history[-1]["actor"]["id"] == "li.na"
    verified = run(db, "--json", "audit", "verify")  # chains and rows (no scheduler ran)
    assert verified.exit_code == 0, verified.output


@pytest.mark.parametrize(
    ("where", "message"),
    [
        (
            "sevrity=major",
            "where.sevrity: unknown key; expected one of state, severity, department, handler, "
            "received_after, received_before; did you mean 'severity'?",
        ),
        ("received-before=2026-03-03", "did you mean 'received_before'?"),
        ("color=red", "where.color: unknown key; expected one of state, severity"),
        ("state", "where: 'state' is not KEY=VALUE"),
        (
            "state=recived",
            "where.state: 'recived' is not a state of any rule set in use; "
            "did you mean 'received'?",
        ),
        ("severity=majr", "did you mean 'major'?"),
        ("received_after=yesterday", "where.received_after: 'yesterday' is not an ISO 8601 time"),
    ],
)
def test_a_bad_selection_is_refused_and_nothing_changes(
    setup: tuple[Path, dict[str, str], str], where: str, message: str
) -> None:
    db, _, new = setup
    before = pinned(db)
    for dry in ((), ("--dry-run",)):
        err = expected_error(
            run(db, "rules", "migrate", "--to", new[:8], *CS_ARGS, *dry, "--where", where)
        )
        assert err.startswith("error: invalid selection:\n"), err
        assert message in err
    assert pinned(db) == before
    doc = json.loads(
        run(db, "--json", "rules", "migrate", "--to", new[:8], "--dry-run", "--where", where).stdout
    )
    assert doc["error"]["type"] == "InvalidInput" and doc["error"]["context"] == "selection"


def test_the_library_takes_the_same_selection(setup: tuple[Path, dict[str, str], str]) -> None:
    db, n, new = setup
    with Engine.open(f"sqlite:///{db}", clock=SimulatedClock(at(4, 12))) as engine:
        items = plan(engine, new, where={"severity": "major"})
        assert [i.number for i in items] == [n["M"]]
        items = plan(engine, new, where=parse_where(["department=quality", "department=x"]))
        assert [i.number for i in items] == [n["M"]]
        with pytest.raises(InvalidInput) as caught:
            plan(engine, new, where={"handlr": ["wang.qa"], "state": "nope"})
        fields = [p.field for p in caught.value.problems]
        assert fields == ["where.handlr", "where.state"]
    with pytest.raises(InvalidInput) as parsed:
        parse_where(["a=1", "=2", "state=received"])
    assert [p.field for p in parsed.value.problems] == ["where", "where.a"]


def test_a_migration_shows_its_progress_on_stderr_and_keeps_stdout_json(
    setup: tuple[Path, dict[str, str], str],
) -> None:
    db, n, new = setup
    dry = run(db, "--json", "rules", "migrate", "--to", new[:8], "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "checking (complaints)" in dry.stderr and "4/4" in dry.stderr
    assert "moving" not in dry.stderr
    assert len(json.loads(dry.stdout)["items"]) == 4
    real = run(db, "rules", "migrate", "--to", new[:8], *CS_ARGS, "--number", n["G3"])
    assert real.exit_code == 0, real.output
    assert "checking (complaints)" in real.stderr and "moving (complaints)" in real.stderr
    assert "1/1" in real.stderr and "1 complaint moved" in real.stdout
