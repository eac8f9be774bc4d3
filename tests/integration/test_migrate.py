"""Moving open complaints to a new rule-set version (``complaintflow.migrate``), both backends.

The database holds a complaint in every state of the default rules (two of them closed,
one by ``close`` and one by ``reject``). The engine is then reopened with a second rule file
that renames ``revisited`` to ``followed_up``, makes ``product_model`` required, drops the
``batch_no`` field, removes the ``progress_report`` clock, adds a ``customer_update`` clock
and gives ``whole_complaint`` 20 instead of 15 working days. ``plan`` must report exactly
that per complaint, ``apply`` without a state mapping must refuse and change nothing, and
with the mapping it must move every open complaint (never a closed one) with one
``ruleset_migrated`` event each, keeping history, replay and the current rows consistent.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from complaintflow import Engine, InvalidInput, NotFound, SimulatedClock
from complaintflow.migrate import MigrationRefused, apply, plan
from complaintflow.rules.loader import default_rules_text
from complaintflow.scheduler import Scheduler
from complaintflow.states.conditions import Facts
from complaintflow.storage.tables import Base
from complaintflow.storage.tables import complaints as C
from tests.conftest import new_pg_schema_url
from tests.support import AFTER, CS, QA, QM, complaint_fields

SH = ZoneInfo("Asia/Shanghai")
ASSIGN = {"responsible_department": "quality", "handler": "wang.qa"}
REPORT = {
    "root_cause": "process",
    "responsibility": "company",
    "investigation_report": "绕组浸漆不良导致温升偏高",
}
PLAN = {"disposal_plan": "更换电机", "disposal_measures": ["replace"]}
RESULT = {"disposal_result": "已更换新电机"}
FEEDBACK = {"customer_feedback": "已电话告知客户处理结果"}
SATISFIED = {"satisfaction_score": 95, "satisfaction": "satisfied", "revisit_note": "客户满意"}

TO_RESOLVED: list[tuple[str, Any, dict[str, Any]]] = [
    ("record", CS, {"readback_confirmed": True}),
    ("confirm", CS, ASSIGN),
    ("submit_report", QA, REPORT),
    ("propose_plan", QA, PLAN),
    ("resolve", AFTER, RESULT),
]
#: state -> how many steps of TO_RESOLVED lead there
DEPTH = {"received": 0, "recorded": 1, "confirmed": 2, "investigated": 3, "resolved": 5}
OPEN_STATES = ("received", "recorded", "confirmed", "investigated", "resolved", "revisited")

NEW_TIMER = """\
  - id: customer_update
    label: {zh: 客户进度更新, en: Customer update}
    start: {on: receipt}
    stop: [closed]
    duration: {working_days: 10}
    on_breach: {notify: [customer_service]}

"""


def local(month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=SH)


def modified_rules_text() -> str:
    text = default_rules_text()
    # 1. a renamed state (every reference to it too)
    text = re.sub(r"\brevisited\b", "followed_up", text)
    # 2. a newly required field, a removed field
    old = "{id: product_model, type: string, label:"
    assert text.count(old) == 1
    text = text.replace(old, "{id: product_model, type: string, required: true, label:")
    removed = "  - {id: batch_no, type: string, label: {zh: 批号, en: Batch / lot}}\n"
    assert text.count(removed) == 1
    text = text.replace(removed, "")
    assert text.count("batch_no, ") == 2  # in the submit and record field lists
    text = text.replace("batch_no, ", "")
    # 3. a removed clock
    start = text.index("  - id: progress_report\n")
    end = text.index("\n  - id: ", start + 1) + 1
    text = text[:start] + text[end:]
    # 4. an added clock, 5. a changed budget
    anchor = "  - id: whole_complaint\n"
    assert text.count(anchor) == 1
    text = text.replace(anchor, NEW_TIMER + anchor)
    budget = "extend_roles: [customer_service, department_manager]\n    duration: {working_days: "
    assert text.count(budget + "15}") == 1
    return text.replace(budget + "15}", budget + "20}")


@dataclass
class World:
    old: Engine
    new: Engine
    clock: SimulatedClock
    by_state: dict[str, str]  # open state -> complaint number
    closed: list[str]  # closed by "close" and by "reject"
    url: str
    directory: Path

    @property
    def open_numbers(self) -> list[str]:
        return [self.by_state[s] for s in OPEN_STATES]


def build(engine: Engine, clock: SimulatedClock) -> tuple[dict[str, str], list[str]]:
    """A complaint in every state of the default rules, clocks ticked up to date."""
    by_state: dict[str, str] = {}
    for state, depth in DEPTH.items():
        number = engine.submit(complaint_fields(), CS).number
        for trigger, actor, data in TO_RESOLVED[:depth]:
            engine.fire(number, trigger, actor, data)
        by_state[state] = number
    revisit = [engine.submit(complaint_fields(), CS).number for _ in range(2)]
    for number in revisit:
        for trigger, actor, data in TO_RESOLVED:
            engine.fire(number, trigger, actor, data)
        engine.fire(number, "feed_back", CS, FEEDBACK)
    rejected = engine.submit(complaint_fields(), CS).number
    engine.fire(rejected, "record", CS, {"readback_confirmed": True})
    engine.fire(rejected, "reject", CS, {"rejection_reason": "非本公司产品"})
    clock.set(local(3, 9, 10))  # revisits are allowed from day 5 after the feedback
    Scheduler(engine).tick()
    for number in revisit:
        engine.fire(number, "revisit", CS, SATISFIED)
    engine.fire(revisit[1], "close", CS, {"archive_location": "档案柜A-3"})
    by_state["revisited"] = revisit[0]
    return by_state, [revisit[1], rejected]


@contextlib.contextmanager
def make_world(db_url: str, directory: Path) -> Iterator[World]:
    """The database of every state, and an engine reopened with the second rule file."""
    clock = SimulatedClock(local(3, 2, 9))
    with Engine.open(db_url, clock=clock) as engine:
        by_state, closed = build(engine, clock)
        assert {engine.get(n).state for n in by_state.values()} == set(OPEN_STATES)
        assert {engine.get(n).state for n in closed} == {"closed"}
        assert engine.verify(deep=True).ok
        path = directory / "rules-v2.yaml"
        path.write_text(modified_rules_text(), encoding="utf-8")
        clock.advance(timedelta(hours=1))
        with Engine.open(db_url, rules=path, clock=clock, loaded_by="admin") as new:
            assert new.rules.version != engine.rules.version
            yield World(engine, new, clock, by_state, closed, db_url, directory)


@pytest.fixture
def world(db_url: str, tmp_path: Path) -> Iterator[World]:
    """A fresh world for a test that migrates."""
    with make_world(db_url, tmp_path) as made:
        yield made


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def unchanged_world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    """One world per backend for the tests that plan or are refused: they change nothing
    (each checks that it did not)."""
    directory = tmp_path_factory.mktemp("migrate")
    drop: Callable[[], None] | None = None
    if request.param == "sqlite":
        url = f"sqlite:///{directory / 'complaints.db'}"
    else:
        url, drop = new_pg_schema_url(request.getfixturevalue("pg_base_url"))
    try:
        with make_world(url, directory) as made:
            yield made
    finally:
        if drop is not None:
            drop()


def dump(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, in primary-key order."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    with engine.database.connect() as conn:
        for table in Base.metadata.sorted_tables:
            keys = list(table.primary_key.columns)
            out[table.name] = [tuple(r) for r in conn.execute(sa.select(table).order_by(*keys))]
    return out


def active_timers(engine: Engine, number: str) -> set[str]:
    return {t.timer for t in engine.timers(number) if t.status != "stopped"}


def assert_facts_column_matches_history(engine: Engine, number: str) -> None:
    """``complaints.facts`` equals the facts replayed from the history (a mapped state
    moves ``entered_seq``)."""
    with engine.database.connect() as conn:
        row = conn.execute(sa.select(C.c.id, C.c.facts).where(C.c.number == number)).one()
        assert row.facts is not None and Facts.from_text(row.facts) == Engine.facts(
            conn, row.id), number


def assert_replay_equals_live(engine: Engine, number: str) -> None:
    replayed = engine.replay(number, actor=CS)
    live = engine.get(number, CS)
    assert (replayed.state, replayed.version, replayed.severity, replayed.ruleset) == (
        live.state,
        live.version,
        live.severity,
        live.ruleset,
    ), number
    assert replayed.fields == live.to_json()["fields"], number
    assert {
        key: (t.status, t.due_at, t.started_at, t.breached_at, t.stopped_at)
        for key, t in replayed.timers.items()
    } == {
        (t.timer, t.run): (t.status, t.due_at, t.started_at, t.breached_at, t.stopped_at)
        for t in engine.timers(number)
    }, number


# -- plan ------------------------------------------------------------------------------------


def test_plan_reports_what_each_open_complaint_would_go_through(unchanged_world: World) -> None:
    world = unchanged_world
    new, old_version, target = world.new, world.old.rules.version, world.new.rules.version
    items = plan(new, target[:12])
    assert [i.number for i in items] == world.open_numbers  # closed ones are never listed
    by_number = {i.number: i for i in items}
    new_timers = {t.id for t in new.rules.definition.timers}
    for state, number in world.by_state.items():
        item = by_number[number]
        assert (item.from_version, item.to_version, item.state) == (old_version, target, state)
        assert item.newly_required == ["product_model"]
        assert item.dropped_fields == ["batch_no"]
        active = active_timers(new, number)
        assert "whole_complaint" in active
        assert item.timers_rederived == sorted(active & new_timers)
        assert item.timers_removed == sorted(active - new_timers)
        assert item.timers_added == ["customer_update"]
        if state == "revisited":
            assert not item.ok
            assert item.target_state == "revisited"
            assert len(item.problems) == 1
            assert "'revisited' does not exist in the target" in item.problems[0]
        else:
            assert item.ok, item.problems
            assert item.target_state == state
    for state in ("confirmed", "investigated"):
        assert by_number[world.by_state[state]].timers_removed == ["progress_report"]
    for state in ("received", "recorded", "resolved", "revisited"):
        assert by_number[world.by_state[state]].timers_removed == []
    # with a mapping the renamed state is fine; a mapping to nowhere is not
    mapped = plan(new, target, state_map={"revisited": "followed_up"})
    assert all(i.ok for i in mapped)
    assert by_number[world.by_state["revisited"]].to_json()["ok"] is False
    revisited = {i.number: i for i in mapped}[world.by_state["revisited"]]
    assert revisited.target_state == "followed_up"
    wrong = plan(new, target, state_map={"revisited": "nowhere"})
    assert [i.problems for i in wrong if not i.ok] == [
        ["mapped state 'nowhere' does not exist in the target"]
    ]
    # planning changes nothing
    assert [new.get(n).ruleset for n in world.open_numbers] == [old_version] * 6
    # the target must be a stored rule set
    with pytest.raises(NotFound):
        plan(new, "abcdef0123" if not target.startswith("abcdef") else "fedcba0123")
    with pytest.raises(InvalidInput):
        plan(new, target[:5])
    with pytest.raises(NotFound):
        apply(new, "abcdef0123" if not target.startswith("abcdef") else "fedcba0123", QM)


def test_fields_that_do_not_fit_the_target_are_refused(unchanged_world: World) -> None:
    """A target where the stored claim of 2000 is out of range: every open complaint is
    refused with the field named, and nothing changes."""
    world = unchanged_world
    old = "{id: claimed_amount, type: decimal, min: 0, label:"
    text = default_rules_text()
    assert text.count(old) == 1
    path = world.directory / "rules-v3.yaml"
    path.write_text(
        text.replace(old, "{id: claimed_amount, type: decimal, min: 0, max: 1000, label:"),
        encoding="utf-8",
    )
    with Engine.open(world.url, rules=path, clock=world.clock) as third:
        items = plan(third, third.rules.version)
        assert [i.number for i in items] == world.open_numbers
        for item in items:
            assert not item.ok
            assert any("'claimed_amount' does not fit" in p for p in item.problems), item.problems
        before = dump(third)
        with pytest.raises(MigrationRefused) as info:
            apply(third, third.rules.version, QM)
        assert len(info.value.items) == 6
        assert dump(third) == before


def test_plan_and_apply_filter_by_state_and_number(world: World) -> None:
    new, target = world.new, world.new.rules.version
    confirmed, received, recorded = (
        world.by_state[s] for s in ("confirmed", "received", "recorded")
    )
    assert [i.number for i in plan(new, target, states=["confirmed", "closed"])] == [confirmed]
    assert [i.number for i in plan(new, target, numbers=[received, *world.closed])] == [received]
    assert plan(new, target, states=["closed"]) == []
    assert plan(new, target, numbers=world.closed) == []
    moved = apply(new, target, QM, numbers=[recorded])
    assert [i.number for i in moved] == [recorded]
    assert new.get(recorded).ruleset == target
    assert [i.number for i in apply(new, target, QM, states=["received"])] == [received]
    # already moved complaints are not selected again
    remaining = plan(new, target)
    assert received not in {i.number for i in remaining}
    assert recorded not in {i.number for i in remaining}
    assert {new.get(n).ruleset for n in world.open_numbers if n not in (received, recorded)} == {
        world.old.rules.version
    }
    assert new.verify(deep=True).ok


# -- apply -----------------------------------------------------------------------------------


def test_apply_without_a_mapping_refuses_and_changes_nothing(unchanged_world: World) -> None:
    world = unchanged_world
    before = dump(world.new)
    with pytest.raises(MigrationRefused) as info:
        apply(world.new, world.new.rules.version, QM)
    assert [i.number for i in info.value.items] == [world.by_state["revisited"]]
    assert info.value.problems[0].field == world.by_state["revisited"]
    assert dump(world.new) == before
    # also when the only problem is a mapping to a state that does not exist
    with pytest.raises(MigrationRefused):
        apply(world.new, world.new.rules.version, QM, state_map={"revisited": "nowhere"})
    assert dump(world.new) == before


def test_apply_with_a_mapping_moves_every_open_complaint(world: World) -> None:
    old, new, clock = world.old, world.new, world.clock
    old_version, target = old.rules.version, new.rules.version
    versions = {n: new.get(n).version for n in [*world.open_numbers, *world.closed]}
    closed_before = {n: (new.get(n, CS), new.history(n, CS)) for n in world.closed}
    items = apply(new, target[:10], QM, state_map={"revisited": "followed_up"})
    assert [i.number for i in items] == world.open_numbers
    now = new.now()
    for state, number in world.by_state.items():
        complaint = new.get(number)
        assert complaint.ruleset == target
        assert complaint.version == versions[number] + 1
        assert complaint.state == ("followed_up" if state == "revisited" else state)
        history = new.history(number)
        assert [e.type for e in history].count("ruleset_migrated") == 1
        event = history[-1]
        assert (event.type, event.seq, event.ruleset) == (
            "ruleset_migrated",
            complaint.version,
            target,
        )
        assert (event.actor_id, event.occurred_at) == (QM.id, now)
        assert event.payload["from"] == old_version and event.payload["to"] == target
        assert event.payload["newly_required"] == ["product_model"]
        assert event.payload["dropped_fields"] == ["batch_no"]
        assert "batch_no" not in complaint.fields
        assert history[0].payload["fields"]["batch_no"] == "B2026-0211"  # history keeps it
        assert event.from_state == state
        if state == "revisited":
            assert event.payload["state_mapped"] == ["revisited", "followed_up"]
        else:
            assert "state_mapped" not in event.payload
        timers = {t.timer: t for t in new.timers(number) if t.status != "stopped"}
        assert "progress_report" not in timers
        assert "customer_update" in timers
        assert timers["customer_update"].started_at == now
        assert timers["whole_complaint"].budget == 20
        assert_replay_equals_live(new, number)
        assert_facts_column_matches_history(new, number)
    for number in world.closed:  # closed complaints are never migrated
        assert (new.get(number, CS), new.history(number, CS)) == closed_before[number]
        assert new.get(number).ruleset == old_version
    assert new.verify(deep=True).ok
    assert plan(new, target) == []  # nothing left to move

    # later transitions run under the new version
    clock.advance(timedelta(hours=1))
    followed_up = world.by_state["revisited"]
    new.fire(followed_up, "close", CS, {"archive_location": "档案柜B-1"})
    new.fire(world.by_state["confirmed"], "submit_report", QA, REPORT)
    new.fire(
        world.by_state["received"],
        "record",
        CS,
        {"readback_confirmed": True, "product_model": "YE3-132M-4"},
    )
    for number in (followed_up, world.by_state["confirmed"], world.by_state["received"]):
        last = new.history(number)[-1]
        assert (last.type, last.ruleset) == ("transition", target)
        assert_replay_equals_live(new, number)
        assert_facts_column_matches_history(new, number)
    assert new.get(followed_up).state == "closed"
    close = new.history(followed_up)[-1]
    assert (close.from_state, close.to_state) == ("followed_up", "closed")
    # the closed complaint's clocks stop, including the one the migration added
    assert active_timers(new, followed_up) == set()
    assert new.verify(deep=True).ok
    # the engine still opened with the old rules keeps reading migrated complaints
    assert old.get(followed_up).ruleset == target
    assert old.replay(followed_up).state == "closed"


def test_typos_in_the_selection_are_named_with_a_suggestion(unchanged_world: World) -> None:
    """A misspelt state, a mapping from a state no rule set has, or an unknown number used
    to plan nothing (or ignore the mapping) and exit 0."""
    world = unchanged_world
    target = world.new.rules.version
    with pytest.raises(InvalidInput) as info:
        plan(world.new, target, states=["recieved"], numbers=["NOPE"],
             state_map={"revisitd": "revisited"})
    shown = {p.field: p.message for p in info.value.problems}
    assert set(shown) == {"states", "numbers", "map.revisitd"}
    assert "did you mean 'received'?" in shown["states"]
    assert "did you mean 'revisited'?" in shown["map.revisitd"]
    before = dump(world.new)
    with pytest.raises(InvalidInput):
        apply(world.new, target, QM, states=["recieved"])
    assert dump(world.new) == before


def test_progress_counts_every_complaint_and_nothing_is_committed_before_the_end(
    world: World,
) -> None:
    """``progress`` is told each complaint planned, then each written; while it is told, a
    reader on another engine still sees every complaint on its old rule set."""
    seen: list[tuple[str, int, int]] = []
    versions = {n: world.old.get(n).version for n in world.open_numbers}
    target = world.new.rules.version

    def progress(phase: str, done: int, total: int) -> None:
        seen.append((phase, done, total))
        if phase == "moving":
            assert {n: world.old.get(n).version for n in world.open_numbers} == versions

    planned = plan(world.new, target, state_map={"revisited": "followed_up"},
                   progress=progress)
    total = len(world.open_numbers)
    assert len(planned) == total
    assert seen == [("checking", i, total) for i in range(1, total + 1)]
    seen.clear()
    apply(world.new, target, QM, state_map={"revisited": "followed_up"}, progress=progress)
    assert seen == [*(("checking", i, total) for i in range(1, total + 1)),
                    *(("moving", i, total) for i in range(1, total + 1))]
    assert all(world.old.get(n).ruleset == target for n in world.open_numbers)


def test_plan_lists_fields_a_way_out_of_the_current_state_newly_requires(
    db_url: str, tmp_path: Path
) -> None:
    """A target whose submit_report (out of confirmed) also requires purchase_date: the
    complaints in confirmed that lack it must be told (the plan listed only fields the
    target marks required at submission)."""
    clock = SimulatedClock(local(3, 2, 9))
    with Engine.open(db_url, clock=clock) as engine:
        numbers = {state: engine.submit(complaint_fields(), CS).number
                   for state in ("recorded", "confirmed")}
        for state, number in numbers.items():
            for trigger, actor, data in TO_RESOLVED[:DEPTH[state]]:
                engine.fire(number, trigger, actor, data)
        dated = engine.submit(complaint_fields(purchase_date="2026-02-01"), CS).number
        for trigger, actor, data in TO_RESOLVED[:DEPTH["confirmed"]]:
            engine.fire(dated, trigger, actor, data)
    old = "    requires: [root_cause, responsibility, investigation_report]\n"
    text = default_rules_text()
    assert text.count(old) == 1
    path = tmp_path / "rules-v2.yaml"
    path.write_text(text.replace(old, old.replace("report]", "report, purchase_date]")),
                    encoding="utf-8")
    with Engine.open(db_url, rules=path, clock=clock) as new:
        items = {i.number: i for i in plan(new, new.rules.version)}
        assert items[numbers["confirmed"]].newly_required == ["purchase_date"]
        assert items[numbers["recorded"]].newly_required == []  # not a way out of there
        assert items[dated].newly_required == []  # it has one
        # a field required by the rules in force too is not newly required
        assert "investigation_report" not in items[numbers["confirmed"]].newly_required
        apply(new, new.rules.version, CS, numbers=[numbers["confirmed"]])
        migrated = new.history(numbers["confirmed"])[-1]
        assert migrated.payload["newly_required"] == ["purchase_date"]
        assert new.verify(deep=True).ok


def test_a_stored_value_an_earlier_release_accepted_still_migrates(tmp_path: Path) -> None:
    """Releases before b88da30 stored a NUL inside a text field on SQLite (PostgreSQL never
    took one); such a stored value is judged as stored when migrating (before: 'does not
    fit the target: contains a NUL character', so the complaint could not move)."""
    db_url = f"sqlite:///{tmp_path / 'c.db'}"
    clock = SimulatedClock(datetime(2026, 3, 2, 1, 0, tzinfo=UTC))
    with Engine.open(db_url, clock=clock) as engine:
        number = engine.submit(complaint_fields(description="电机异响"), CS).number
        with engine.database.begin() as conn:
            assert conn.execute(sa.text("UPDATE complaints SET fields = replace(fields, :a, :b)"),
                                {"a": "电机异响", "b": "电机\\u0000异响"}).rowcount == 1
    path = tmp_path / "changed.yaml"
    path.write_text(default_rules_text().replace("name: 客户投诉处理程序 (default)",
                                                 "name: changed"), encoding="utf-8")
    with Engine.open(db_url, rules=path, clock=clock) as new:
        [item] = plan(new, new.rules.version)
        assert (item.number, item.problems) == (number, [])
