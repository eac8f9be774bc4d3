"""Golden complaint histories: stored exports must replay to exactly the stored results.

Each file under tests/golden/ (written by tests/golden/make_golden.py, which runs the real
engine in simulated time) holds one complaint's exported event rows, the rule files its
events name (by hash) and ``Replayed.to_json()`` at two instants and after the last event.
This test needs no database and no engine: it rebuilds the ``HistoryEvent`` objects from the
rows, replays them with ``complaintflow.replay.replay_events`` (remaining times counted on
the calendars of the stored rule files) and compares with the stored JSON exactly. Any
library change that alters a replayed result fails here; if the change is intended,
regenerate with ``python tests/golden/make_golden.py`` and review the diff, and keep the
file as it was under tests/golden/released/ (named for the change): histories an earlier
release wrote must go on replaying to what they replayed to then.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from complaintflow import HistoryEvent, parse_rules
from complaintflow.compiled import Compiled
from complaintflow.engine import upcast
from complaintflow.export import check_export
from complaintflow.replay import DeepVerifier, ReplayedTimer, replay_events
from complaintflow.verify import StoredEvent

GOLDEN = Path(__file__).resolve().parent.parent / "golden"
FILES = sorted(GOLDEN.glob("*.json"))
#: histories as an earlier release wrote them, kept after the engine came to write the same
#: scenario differently: they must still replay to their stored results and verify deeply
RELEASED = sorted((GOLDEN / "released").glob("*.json"))
SCENARIOS = {
    "general_closed",
    "major_approvals_reopen",
    "breached_clocks",
    "extension_with_consent",
    "migrated",
    "recomputed_holiday",
}


@cache
def load(path: Path) -> dict[str, Any]:
    golden: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return golden


@cache
def compiled(text: str) -> Compiled:
    return Compiled.build(parse_rules(text, "<golden>"))


def event_from_row(row: dict[str, Any]) -> HistoryEvent:
    """An exported JSONL row back to the event it was written from."""
    return HistoryEvent(
        number=row["number"],
        seq=row["seq"],
        type=row["type"],
        trigger=row["trigger"],
        from_state=row["from_state"],
        to_state=row["to_state"],
        actor_id=row["actor_id"],
        actor_roles=tuple(json.loads(row["actor_roles"])),
        actor_department=row["actor_department"],
        occurred_at=datetime.fromisoformat(row["occurred_at"].replace("Z", "+00:00")),
        payload=json.loads(row["payload"]),
        ruleset=row["ruleset"],
        schema_version=row["schema_version"],
        prev_hash=row["prev_hash"],
        hash=row["hash"],
    )


def remaining_with(
    rulesets: dict[str, str],
) -> Callable[[ReplayedTimer, str, datetime], timedelta | None]:
    """Remaining time of a running clock as ``Engine.replay`` reports it: working time on
    the clock's calendar (the one of the rule version a recompute moved it to, if any) for
    working units, elapsed time otherwise."""

    def remaining(timer: ReplayedTimer, version: str, moment: datetime) -> timedelta | None:
        if timer.due_at is None:
            return None
        rules = compiled(rulesets[version])
        ctimer = rules.timers.by_id.get(timer.timer)
        cal = rules.timers.calendar_of(ctimer) if ctimer is not None else None
        if timer.calendar_version is not None and ctimer is not None:
            # a recompute moved the clock onto the calendars of a newer rule version
            name = ctimer.definition.calendar or rules.rules.definition.calendar
            cal = compiled(rulesets[timer.calendar_version]).calendars.get(name or "") or cal
        if str(timer.budget.get("unit", "")).startswith("working") and cal is not None:
            return cal.between(moment, timer.due_at)
        return timer.due_at - moment

    return remaining


def replayed_json(
    golden: dict[str, Any], at: datetime | None, events: list[HistoryEvent] | None = None
) -> dict[str, Any]:
    if events is None:
        events = [event_from_row(r) for r in golden["events"]]
    rulesets = golden["rulesets"]
    replayed = replay_events(golden["number"], events, at, remaining_with(rulesets),
                             lambda version: compiled(rulesets[version]).rules.severity_levels)
    assert replayed is not None
    result: dict[str, Any] = json.loads(json.dumps(replayed.to_json(), ensure_ascii=False))
    return result


def instant(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text is not None else None


@pytest.fixture(params=FILES + RELEASED,
                ids=lambda p: p.stem if p.parent == GOLDEN else f"released-{p.stem}")
def golden(request: pytest.FixtureRequest) -> dict[str, Any]:
    return load(request.param)


def test_every_scenario_has_a_golden_file() -> None:
    assert {p.stem for p in FILES} == SCENARIOS
    assert not (GOLDEN / "__init__.py").exists()  # make_golden.py is a script, not a test


def versions_named(rows: list[dict[str, Any]]) -> set[str]:
    """The rule versions a history needs: those its events ran under, and those whose
    calendars a recompute moved a clock to."""
    named = {r["ruleset"] for r in rows}
    for r in rows:
        version = json.loads(r["payload"]).get("calendar_version")
        if r["type"] == "deadline_recomputed" and version:
            named.add(version)
    return named


def test_the_rule_files_are_stored_under_their_hashes(golden: dict[str, Any]) -> None:
    assert golden["format"] == 1
    assert set(golden["rulesets"]) == versions_named(golden["events"])
    for version, text in golden["rulesets"].items():
        assert hashlib.sha256(text.encode("utf-8")).hexdigest() == version
        assert compiled(text).version == version


def test_the_exported_chain_checks(golden: dict[str, Any]) -> None:
    rows = golden["events"]
    assert {r["number"] for r in rows} == {golden["number"]}
    assert [r["seq"] for r in rows] == list(range(1, len(rows) + 1))
    assert not any(r["masked"] for r in rows)
    lines = [json.dumps(r, ensure_ascii=False) for r in rows]
    # saved before exports had end records
    assert [f.kind for f in check_export(lines).findings] == ["truncated"]
    report = check_export(lines, require_end=False)
    assert report.ok, report.findings
    assert (report.rows, report.complaints, report.recomputed) == (len(rows), 1, len(rows))


def test_replay_reproduces_the_stored_results(golden: dict[str, Any]) -> None:
    assert len(golden["expected"]) == 3
    assert golden["expected"][-1]["at"] is None
    for expected in golden["expected"]:
        at = instant(expected["at"])
        want = expected["replayed"]
        got = replayed_json(golden, at)
        where = f"{golden['scenario']} at {expected['at']}"
        # the parts first, for a readable failure; then everything
        for key in ("state", "version", "severity", "ruleset", "escalated_to", "fields"):
            assert got[key] == want[key], f"{where}: {key}"
        assert [t["timer"] for t in got["timers"]] == [t["timer"] for t in want["timers"]], where
        for mine, theirs in zip(got["timers"], want["timers"], strict=True):
            assert mine == theirs, f"{where}: timer {theirs['timer']} run {theirs['run']}"
        assert got["events"] == want["events"], where
        assert got == want, where


def stored_event(row: dict[str, Any]) -> StoredEvent:
    """An exported JSONL row as deep verification reads it from the database."""
    return StoredEvent(row["seq"], row["type"], row["trigger"], row["from_state"],
                       row["to_state"], row["actor_id"], row["actor_roles"],
                       row["actor_department"], row["occurred_at"], row["payload"],
                       json.loads(row["payload"]), row["ruleset"], row["schema_version"],
                       row["prev_hash"], row["hash"])


def test_deep_verification_finds_nothing(golden: dict[str, Any]) -> None:
    """Every transition, and every clock re-derived from its ledger with its warnings and
    breaches, as of the last event (the scenarios' schedulers leave nothing due behind)."""
    rows = golden["events"]
    versions = {v: compiled(text) for v, text in golden["rulesets"].items()}
    last = datetime.fromisoformat(rows[-1]["occurred_at"].replace("Z", "+00:00"))
    deep = DeepVerifier(versions.__getitem__, last, upcast)
    assert list(deep.findings(golden["number"], [stored_event(r) for r in rows])) == []


def test_the_scenarios_cover_what_they_are_named_for() -> None:
    end = {p.stem: load(p)["expected"][-1]["replayed"] for p in FILES}
    types = {p.stem: {r["type"] for r in load(p)["events"]} for p in FILES}
    triggers = {p.stem: [r["trigger"] for r in load(p)["events"]] for p in FILES}
    assert end["general_closed"]["state"] == "closed"
    assert end["major_approvals_reopen"]["state"] == "closed"
    assert end["major_approvals_reopen"]["severity"] == "major"
    assert triggers["major_approvals_reopen"].count("approve_plan") == 2
    assert "reopen" in triggers["major_approvals_reopen"]
    assert {"timer_warning", "timer_breached"} <= types["breached_clocks"]
    assert end["breached_clocks"]["escalated_to"] == "general_manager"
    assert end["breached_clocks"]["severity"] == "major"  # raised by the whole-complaint breach
    assert {"customer_consent", "timer_extended"} <= types["extension_with_consent"]
    assert "ruleset_migrated" in types["migrated"]
    assert len(load(GOLDEN / "migrated.json")["rulesets"]) == 2
    recomputed = load(GOLDEN / "recomputed_holiday.json")
    assert "deadline_recomputed" in types["recomputed_holiday"]
    assert len({r["ruleset"] for r in recomputed["events"]}) == 1  # it stays on its version
    assert len(recomputed["rulesets"]) == 2  # and counts on the newer calendar


def test_the_comparison_notices_a_changed_history(golden: dict[str, Any]) -> None:
    """What the golden test would see if replay read the history differently: dropping or
    altering a single event changes the result."""
    events = [event_from_row(r) for r in golden["events"]]
    want = golden["expected"][-1]["replayed"]
    assert replayed_json(golden, None, events[:-1]) != want
    last = events[-1]
    altered = replace(last, payload={**last.payload, "severity": "other"})
    assert replayed_json(golden, None, [*events[:-1], altered]) != want


def _make_golden() -> Any:
    """tests/golden/make_golden.py, loaded as a module (it is a script, not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_golden", GOLDEN / "make_golden.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_the_engine_writes_the_golden_histories_again(name: str) -> None:
    """Run through the real engine again, every scenario writes its golden file byte for
    byte: a change that alters what the engine writes (a payload's order, a hash's body, a
    due time) fails here, not only one that alters what replay reads. This caught the
    migration payload listing clocks in whatever order an index gave them."""
    maker = _make_golden()
    start, scenario, punctual = maker.SCENARIOS[name]
    text = maker.render(maker.generate(name, start, scenario, punctual))
    assert text == (GOLDEN / f"{name}.json").read_text(encoding="utf-8"), (
        f"{name}: the engine no longer writes this history; if intended, regenerate with "
        "python tests/golden/make_golden.py and review the diff")
