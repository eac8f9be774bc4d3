"""One shared ``transitions`` machine per rule set, and the guard pipeline's fixed order."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import transitions

from complaintflow import (
    Actor,
    ApprovalMissing,
    ConditionFailed,
    Engine,
    MissingFields,
    RoleNotAllowed,
    RuleSet,
    SeparationOfDuties,
    SimulatedClock,
    TransitionRefused,
    TriggerNotAllowed,
    UnknownTrigger,
    load_rules,
    parse_rules,
)
from complaintflow.rules.loader import default_rules_text
from complaintflow.states.conditions import Facts
from complaintflow.states.machine import ComplaintMachine, Step
from tests.support import CS, GM, QA, complaint_fields

RECEIVED = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)

ROUTING = """\
format: 1
name: routing test
initial: new
number_pattern: "R-{seq:04d}"
states:
  - {id: new, label: {zh: 新, en: New}}
  - {id: small, label: {zh: 小, en: Small}}
  - {id: large, label: {zh: 大, en: Large}}
  - {id: done, label: {zh: 完, en: Done}, final: true}
roles:
  - {id: clerk, label: {zh: 职员, en: Clerk}}
  - {id: boss, label: {zh: 老板, en: Boss}}
fields:
  - {id: amount, type: integer, required: true, label: {zh: 金额, en: Amount}}
  - {id: note, type: text, label: {zh: 备注, en: Note}}
  - {id: owner, type: string, label: {zh: 负责人, en: Owner}}
severity:
  levels: [low, high]
  default: low
  rules:
    - {level: high, when: {field: amount, ge: 1000}}
transitions:
  - trigger: route
    from: [new]
    to: small
    roles: [clerk, boss]
    condition: {field: amount, lt: 100}
  - trigger: route
    from: [new]
    to: large
    roles: [boss]
    condition: {field: amount, ge: 100}
  - trigger: sign
    from: [large]
    to: large
    roles: [boss]
  - trigger: finish
    from: [small, large]
    to: done
    roles: [clerk, boss]
    fields: [note]
    requires: [note]
    condition: {field: note, ne: "-"}
    approval: {by: sign, when: {field: state, eq: large}}
separation_of_duties:
  - {id: owner_recuses, triggers: "*", not_field: [owner], reason: the owner may not act}
"""

CLERK = Actor("clerk.a", ["clerk"])
BOSS = Actor("boss.b", ["boss"])


@pytest.fixture(scope="module")
def default_machine() -> ComplaintMachine:
    return ComplaintMachine(load_rules())


@pytest.fixture(scope="module")
def routing() -> ComplaintMachine:
    return ComplaintMachine(parse_rules(ROUTING, "routing.yaml"))


def step(
    machine: ComplaintMachine,
    state: str,
    trigger: str,
    actor: Actor,
    fields: Mapping[str, Any],
    data: Mapping[str, Any] | None = None,
    facts: Facts | None = None,
) -> Step:
    return machine.step(
        "N-1",
        state,
        trigger,
        actor,
        fields,
        {"number": "N-1", "received_at": RECEIVED},
        facts or Facts(),
        data or {},
    )


def refusal(
    machine: ComplaintMachine,
    state: str,
    trigger: str,
    actor: Actor,
    fields: Mapping[str, Any],
    data: Mapping[str, Any] | None = None,
    facts: Facts | None = None,
) -> TransitionRefused:
    with pytest.raises(TransitionRefused) as info:
        step(machine, state, trigger, actor, fields, data, facts)
    assert (info.value.number, info.value.trigger, info.value.state) == ("N-1", trigger, state)
    return info.value


REVISITED = {"customer_name": "x", "satisfaction_score": 70, "satisfaction": "dissatisfied"}


# -- the guard order ------------------------------------------------------------------------------


def test_unknown_trigger_comes_first(default_machine: ComplaintMachine) -> None:
    exc = refusal(default_machine, "received", "teleport", Actor("nobody", ()), {})
    assert type(exc) is UnknownTrigger


def test_source_state_before_role(default_machine: ComplaintMachine) -> None:
    exc = refusal(default_machine, "received", "close", QA, REVISITED)
    assert type(exc) is TriggerNotAllowed


def test_role_before_condition(default_machine: ComplaintMachine) -> None:
    exc = refusal(default_machine, "revisited", "close", QA, REVISITED, {"archive_location": "A-1"})
    assert type(exc) is RoleNotAllowed


def test_role_before_separation_and_fields(default_machine: ComplaintMachine) -> None:
    named = {"customer_name": "x", "person_complained_about": QA.id}
    exc = refusal(default_machine, "received", "record", QA, named, {"phone": 12})
    assert type(exc) is RoleNotAllowed


def test_separation_of_duties_before_fields(default_machine: ComplaintMachine) -> None:
    named = {"customer_name": "x", "person_complained_about": CS.id}
    exc = refusal(default_machine, "received", "record", CS, named, {"quantity": "many"})
    assert type(exc) is SeparationOfDuties


def test_separation_of_duties_before_condition(default_machine: ComplaintMachine) -> None:
    named = {"customer_name": "x", "person_complained_about": CS.id}
    exc = refusal(default_machine, "received", "record", CS, named, {"readback_confirmed": False})
    assert type(exc) is SeparationOfDuties


def test_fields_before_condition(default_machine: ComplaintMachine) -> None:
    exc = refusal(default_machine, "revisited", "close", CS, REVISITED)
    assert type(exc) is MissingFields
    assert isinstance(exc, MissingFields)
    assert [p.field for p in exc.problems] == ["archive_location"]
    exc = refusal(default_machine, "revisited", "close", CS, REVISITED, {"archive_location": "A-1"})
    assert type(exc) is ConditionFailed


def test_condition_before_approval(routing: ComplaintMachine) -> None:
    fields = {"amount": 500}
    exc = refusal(routing, "large", "finish", BOSS, fields, {"note": "-"})
    assert type(exc) is ConditionFailed
    exc = refusal(routing, "large", "finish", BOSS, fields, {"note": "done"})
    assert type(exc) is ApprovalMissing
    signed = Facts()
    signed.record(1, None, CLERK.id, None, "new")
    signed.record(2, "route", BOSS.id, "new", "large")
    signed.record(3, "sign", BOSS.id, "large", "large")
    done = step(routing, "large", "finish", BOSS, fields, {"note": "done"}, signed)
    assert (done.from_state, done.to_state) == ("large", "done")


def test_recusal_reads_the_data_being_applied(routing: ComplaintMachine) -> None:
    exc = refusal(routing, "new", "route", CLERK, {"amount": 5, "owner": CLERK.id})
    assert type(exc) is SeparationOfDuties
    assert "owner_recuses" in exc.reason


# -- one trigger, several transitions -------------------------------------------------------------


def test_the_condition_picks_the_transition(routing: ComplaintMachine) -> None:
    assert step(routing, "new", "route", CLERK, {"amount": 50}).to_state == "small"
    assert step(routing, "new", "route", BOSS, {"amount": 50}).to_state == "small"
    large = step(routing, "new", "route", BOSS, {"amount": 5000})
    assert large.to_state == "large"
    assert large.severity == "high"
    assert large.transition.index == 1


def test_all_candidates_refused_reports_the_one_that_got_furthest(
    routing: ComplaintMachine,
) -> None:
    # to small: role ok, condition fails; to large: role fails -> the condition is reported
    exc = refusal(routing, "new", "route", CLERK, {"amount": 500})
    assert type(exc) is ConditionFailed
    assert "small" in exc.reason


def test_options_list_each_candidate(routing: ComplaintMachine) -> None:
    found = routing.options(
        "N-1", "new", CLERK, {"amount": 500}, {"number": "N-1", "received_at": RECEIVED}, Facts()
    )
    assert [(o.trigger, o.to_state, o.allowed, o.check) for o in found] == [
        ("route", "small", False, "condition"),
        ("route", "large", False, "role"),
    ]


def test_machine_steps_leave_the_machine_unchanged(routing: ComplaintMachine) -> None:
    for _ in range(3):
        assert step(routing, "new", "route", BOSS, {"amount": 500}).to_state == "large"
        assert step(routing, "new", "route", BOSS, {"amount": 5}).to_state == "small"
    assert routing._machine.models == []


def test_routing_through_the_engine(tmp_path: Path) -> None:
    clock = SimulatedClock(RECEIVED)
    with Engine.open(
        f"sqlite:///{tmp_path / 'r.db'}", rules=parse_rules(ROUTING), clock=clock
    ) as engine:
        small = engine.submit({"amount": 20}, CLERK)
        large = engine.submit({"amount": 2000}, CLERK)
        assert (small.number, large.number) == ("R-0001", "R-0002")
        assert engine.fire(small.number, "route", CLERK).state == "small"
        assert engine.fire(large.number, "route", BOSS).state == "large"
        assert engine.get(large.number).severity == "high"
        with pytest.raises(ApprovalMissing):
            engine.fire(large.number, "finish", CLERK, {"note": "ok"})
        engine.fire(large.number, "sign", BOSS)
        assert engine.fire(large.number, "finish", CLERK, {"note": "ok"}).state == "done"
        assert engine.fire(small.number, "finish", CLERK, {"note": "ok"}).state == "done"
        assert engine.verify().ok


# -- one machine per rule set -------------------------------------------------------------------


class Counter:
    """Counts calls of ``transitions.Machine.__init__`` and ``add_model``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.built = 0
        self.added = 0
        original_init = transitions.Machine.__init__
        original_add = transitions.Machine.add_model

        def init(machine: Any, *args: Any, **kwargs: Any) -> None:
            self.built += 1
            original_init(machine, *args, **kwargs)

        def add_model(machine: Any, *args: Any, **kwargs: Any) -> Any:
            self.added += 1
            return original_add(machine, *args, **kwargs)

        monkeypatch.setattr(transitions.Machine, "__init__", init)
        monkeypatch.setattr(transitions.Machine, "add_model", add_model)

    def reset(self) -> None:
        self.built = self.added = 0


def fire_many(engine: Engine, complaints: int) -> list[str]:
    """Four fires per complaint."""
    numbers = []
    for _ in range(complaints):
        n = engine.submit(complaint_fields(), CS).number
        engine.fire(n, "record", CS, {"readback_confirmed": True})
        engine.fire(n, "confirm", CS, {"responsible_department": "quality", "handler": "wang.qa"})
        engine.fire(
            n,
            "submit_report",
            QA,
            {"root_cause": "process", "responsibility": "company", "investigation_report": "r"},
        )
        engine.fire(n, "propose_plan", QA, {"disposal_plan": "p", "disposal_measures": ["replace"]})
        numbers.append(n)
    return numbers


def read_all(engine: Engine, numbers: list[str]) -> None:
    for n in numbers:
        engine.available_triggers(n, GM)
        engine.get(n, CS)
        engine.get(n, None)
        engine.history(n, CS)
    engine.find(limit=100)


def _changed_rules() -> RuleSet:
    return parse_rules(default_rules_text() + "\n# revised\n", "revised.yaml")


def test_no_machine_is_built_per_complaint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    counter = Counter(monkeypatch)
    url = f"sqlite:///{tmp_path / 'c.db'}"
    clock = SimulatedClock(RECEIVED)
    with Engine.open(url, clock=clock) as engine:
        assert counter.built <= 1 and counter.added == 0  # shared per rule-set hash
        counter.reset()
        numbers = fire_many(engine, 25)  # 100 fires
        assert (counter.built, counter.added) == (0, 0)
        assert len(engine.history(numbers[-1], CS)) == 5


def test_no_machine_is_built_per_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    counter = Counter(monkeypatch)
    with Engine.open(f"sqlite:///{tmp_path / 'c.db'}", clock=SimulatedClock(RECEIVED)) as engine:
        numbers = fire_many(engine, 5)
        counter.reset()
        read_all(engine, numbers)
        assert (counter.built, counter.added) == (0, 0)


def test_one_machine_per_rule_set_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    counter = Counter(monkeypatch)
    url = f"sqlite:///{tmp_path / 'c.db'}"
    clock = SimulatedClock(RECEIVED)
    with Engine.open(url, clock=clock) as engine:
        numbers = fire_many(engine, 5)

    counter.reset()
    with Engine.open(url, rules=_changed_rules(), clock=clock) as engine:
        assert counter.built <= 1 and counter.added == 0  # shared per rule-set hash
        # the old complaints need the old rule set's machine: at most once, on first use
        for n in numbers:
            engine.fire(n, "approve_plan", GM)
        built = counter.built
        assert built <= 2 and counter.added == 0
        fire_many(engine, 2)
        assert (counter.built, counter.added) == (built, 0)
