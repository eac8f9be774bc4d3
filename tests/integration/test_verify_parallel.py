"""verify_parallel (``audit verify --jobs N``): the report ``verify`` gives, in the same
order, from complaints split over worker processes."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from complaintflow import Engine, InvalidInput, SimulatedClock
from complaintflow.cli import main
from complaintflow.scheduler import Scheduler
from complaintflow.verify import verify_parallel
from tests.integration.test_verify import complaint_id, delete_complaint, execute, populate


def tampered(engine: Engine, clock: SimulatedClock) -> list[str]:
    """Twelve complaints with findings of every part of the report: chain and row findings
    in several of them, a missing number, deep findings."""
    numbers = [n for _ in range(4) for n in populate(engine)]
    clock.advance(timedelta(days=3))
    Scheduler(engine).tick()
    execute(engine, "UPDATE complaints SET state = 'closed' WHERE number = :n", n=numbers[0])
    execute(engine, "DELETE FROM events WHERE complaint_id = :c AND seq = 2",
            c=complaint_id(engine, numbers[5]))
    delete_complaint(engine, numbers[7])
    execute(engine, "UPDATE complaints SET severity = 'major' WHERE number = :n", n=numbers[10])
    return numbers


@pytest.mark.parametrize("jobs", [1, 3])
def test_parallel_report_equals_the_sequential_one(
    engine: Engine, clock: SimulatedClock, jobs: int
) -> None:
    tampered(engine, clock)
    for deep in (False, True):
        sequential = engine.verify(deep=deep)
        assert {f.kind for f in sequential.findings} >= {
            "state_mismatch", "missing", "complaint_missing", "severity_mismatch"}
        done: list[int] = []
        parallel = verify_parallel(engine, jobs, deep=deep, progress=done.append)
        assert parallel.to_json() == sequential.to_json()
        assert sum(done) == sequential.complaints == 11


def test_more_jobs_than_complaints(engine: Engine) -> None:
    numbers = populate(engine)
    execute(engine, "UPDATE complaints SET state = 'closed' WHERE number = :n", n=numbers[1])
    report = verify_parallel(engine, 8)  # a range per complaint, no empty ones
    assert report.to_json() == engine.verify().to_json()
    assert not report.ok


def test_parallel_on_an_empty_database(engine: Engine) -> None:
    report = verify_parallel(engine, 4, deep=True)
    assert report.ok
    assert (report.complaints, report.events) == (0, 0)


def test_parallel_since_limits_the_deep_part_as_verify_does(
    engine: Engine, clock: SimulatedClock
) -> None:
    tampered(engine, clock)
    since = engine.now() - timedelta(hours=1)
    assert verify_parallel(engine, 2, deep=True, since=since).to_json() == \
        engine.verify(deep=True, since=since).to_json()


@pytest.mark.parametrize("jobs", [0, -1, 257, True, "2", 2.0])
def test_jobs_must_be_a_whole_number_from_1_to_256(engine: Engine, jobs: object) -> None:
    with pytest.raises(InvalidInput) as refused:
        verify_parallel(engine, jobs)  # type: ignore[arg-type]
    assert [p.field for p in refused.value.problems] == ["jobs"]
    assert "from 1 to 256" in str(refused.value)


def test_every_bad_option_is_reported_at_once(engine: Engine) -> None:
    with pytest.raises(InvalidInput) as refused:
        verify_parallel(engine, 0, deep="yes", since=datetime(2026, 3, 2),  # type: ignore[arg-type]
                        progress=1)  # type: ignore[arg-type]
    assert [p.field for p in refused.value.problems] == ["deep", "since", "progress", "jobs"]


def test_cli_audit_verify_jobs(tmp_path: Path) -> None:
    path = tmp_path / "cf.db"
    clock = SimulatedClock(datetime(2026, 3, 2, 1, 0, tzinfo=UTC))
    engine = Engine.open(f"sqlite:///{path}", clock=clock)
    try:
        numbers = tampered(engine, clock)
    finally:
        engine.close()
    runner = CliRunner(env={"COMPLAINTFLOW_DB": None, "COLUMNS": "250"})
    now = datetime(2026, 3, 5, 1, 0, tzinfo=UTC).isoformat()  # tampered() moved it 3 days
    base = ["--db", str(path), "--now", now, "--json", "audit", "verify"]
    one = runner.invoke(main, [*base, "--deep"])
    two = runner.invoke(main, [*base, "--deep", "--jobs", "3"])
    assert (one.exit_code, two.exit_code) == (1, 1), two.output
    assert json.loads(two.stdout) == json.loads(one.stdout)
    assert {f["number"] for f in json.loads(two.stdout)["findings"]} >= {numbers[0], numbers[5]}
    bad = runner.invoke(main, [*base, "--jobs", "0"])
    assert bad.exit_code == 2
