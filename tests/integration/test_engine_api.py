"""The embedding contract on both backends: numbering, severity, reading, the buttons a host
shows, reopening, and rule-set versions pinned per complaint."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from alembic.script import ScriptDirectory

from complaintflow import (
    EVENT_SCHEMA_VERSION,
    Actor,
    Complaint,
    Engine,
    RoleNotAllowed,
    RuleSet,
    SimulatedClock,
    TriggerOption,
    parse_rules,
)
from complaintflow.rules.loader import default_rules_text
from complaintflow.storage.db import alembic_config
from tests.support import AFTER, CS, GM, QA, TECH, complaint_fields

SHANGHAI = ZoneInfo("Asia/Shanghai")
NUMBER = re.compile(r"^TS-(\d{4})-(\d{6})$")
GENESIS = "0" * 64
ASSIGN_QA = {"responsible_department": "quality", "handler": "wang.qa"}
ASSIGN_TECH = {"responsible_department": "technical", "handler": "sun.tech"}
REPORT = {
    "root_cause": "process",
    "responsibility": "company",
    "investigation_report": "绕组浸漆不良导致温升偏高",
}
PLAN = {"disposal_plan": "更换电机", "disposal_measures": ["replace"]}
STATES = ["received", "recorded", "confirmed", "investigated", "resolved", "revisited", "closed"]


def record(engine: Engine, number: str, **data: object) -> Complaint:
    return engine.fire(number, "record", CS, {"readback_confirmed": True, **data})


def confirmed(engine: Engine, assign: dict[str, str], **overrides: object) -> Complaint:
    c = engine.submit(complaint_fields(**overrides), CS)
    record(engine, c.number)
    return engine.fire(c.number, "confirm", CS, assign)


def options(engine: Engine, number: str, actor: Actor) -> dict[str, TriggerOption]:
    """The offered options by trigger; each is checked to be a transition out of the state."""
    found = engine.available_triggers(number, actor)
    state = engine.get(number, CS).state
    outgoing = [(t.trigger, t.to) for t in engine.rules.outgoing(state)]
    assert [(o.trigger, o.to_state) for o in found] == outgoing
    by_trigger = {o.trigger: o for o in found}
    assert len(by_trigger) == len(found)
    return by_trigger


def head_revision() -> str:
    revision = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert revision is not None
    return revision


# -- numbering ----------------------------------------------------------------------------------


def test_numbers_follow_the_pattern_and_count_up(engine: Engine) -> None:
    numbers = [engine.submit(complaint_fields(), CS).number for _ in range(3)]
    assert numbers == ["TS-2026-000001", "TS-2026-000002", "TS-2026-000003"]
    assert all(NUMBER.match(n) for n in numbers)


def test_numbering_year_is_the_local_year_in_shanghai(
    engine: Engine, clock: SimulatedClock
) -> None:
    clock.set(datetime(2026, 12, 31, 15, 59, 59, tzinfo=UTC))  # 23:59:59 in Shanghai
    last_of_2026 = engine.submit(complaint_fields(), CS)
    clock.set(datetime(2026, 12, 31, 16, 0, tzinfo=UTC))  # midnight in Shanghai
    first_of_2027 = engine.submit(complaint_fields(), CS)
    clock.set(datetime(2026, 12, 31, 17, 0, tzinfo=UTC))  # still 2026 in UTC
    second_of_2027 = engine.submit(complaint_fields(), CS)
    assert last_of_2026.number == "TS-2026-000001"
    assert first_of_2027.number == "TS-2027-000001"
    assert second_of_2027.number == "TS-2027-000002"
    assert second_of_2027.received_at == datetime(2026, 12, 31, 17, 0, tzinfo=UTC)
    assert engine.find(limit=10).total == 3
    assert engine.verify().ok


# -- severity -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "severity"),
    [
        ({}, "general"),
        ({"claimed_amount": "9999.99"}, "general"),
        ({"claimed_amount": "10000"}, "major"),
        ({"claimed_amount": 250000}, "major"),
        ({"safety_issue": True}, "major"),
        ({"safety_issue": False}, "general"),
        ({"media_involved": True}, "major"),
        ({"escalation_risk": True}, "major"),
        ({"customer_demand": ["repair", "compensation"]}, "major"),
        ({"customer_demand": ["repair"]}, "general"),
        ({"forwarded_by": "consumer_association"}, "major"),
    ],
)
def test_severity_at_submit(engine: Engine, overrides: dict[str, object], severity: str) -> None:
    c = engine.submit(complaint_fields(**overrides), CS)
    assert c.severity == severity
    assert engine.get(c.number, CS).severity == severity
    assert engine.history(c.number, CS)[0].payload["severity"] == severity


def test_severity_recomputed_when_firing(engine: Engine) -> None:
    c = engine.submit(complaint_fields(), CS)
    assert c.severity == "general"
    c = record(engine, c.number, claimed_amount="12000")
    assert c.severity == "major"
    assert c.fields["claimed_amount"] == Decimal("12000")
    assert engine.get(c.number, CS).severity == "major"
    assert engine.history(c.number, CS)[-1].payload["severity"] == "major"
    assert [x.number for x in engine.find(severity="major").items] == [c.number]


def test_compensation_in_the_plan_makes_a_complaint_major(engine: Engine) -> None:
    c = confirmed(engine, ASSIGN_QA)
    c = engine.fire(c.number, "submit_report", QA, REPORT)
    assert c.severity == "general"
    c = engine.fire(
        c.number,
        "propose_plan",
        QA,
        {
            "disposal_plan": "赔偿",
            "disposal_measures": ["repair"],
            "compensation_amount": "500",
        },
    )
    assert c.severity == "major"
    other = confirmed(engine, ASSIGN_QA)
    other = engine.fire(other.number, "submit_report", QA, REPORT)
    other = engine.fire(
        other.number,
        "propose_plan",
        QA,
        {
            "disposal_plan": "赔偿",
            "disposal_measures": ["compensation"],
        },
    )
    assert other.severity == "major"


# -- reading ------------------------------------------------------------------------------------


def test_get_returns_typed_fields_and_metadata(engine: Engine, clock: SimulatedClock) -> None:
    received = clock()
    c = engine.submit(
        complaint_fields(
            quantity=20, purchase_date="2026-01-15", customer_demand=["repair", "apology"]
        ),
        CS,
    )
    clock.advance(timedelta(hours=2))
    record(engine, c.number)
    engine.fire(c.number, "confirm", CS, ASSIGN_QA)
    got = engine.get(c.number, CS)
    assert got.number == c.number
    assert got.state == "confirmed"
    assert got.version == 3
    assert got.severity == "general"
    assert got.received_at == received
    assert got.received_at.tzinfo is not None
    assert got.updated_at == received + timedelta(hours=2)
    assert got.ruleset == engine.rules.version
    assert (got.department, got.handler) == ("quality", "wang.qa")
    assert got.masked == ()
    assert got.fields["quantity"] == 20
    assert got.fields["claimed_amount"] == Decimal("2000")
    assert got.fields["purchase_date"].isoformat() == "2026-01-15"
    assert got.fields["customer_demand"] == ("repair", "apology")
    assert got.fields["readback_confirmed"] is True
    assert got.fields["responsible_department"] == "quality"


def test_history_is_a_hash_chain_of_every_event(engine: Engine, clock: SimulatedClock) -> None:
    c = engine.submit(complaint_fields(), CS)
    clock.advance(timedelta(minutes=5))
    record(engine, c.number, quantity=3)
    clock.advance(timedelta(minutes=5))
    engine.fire(c.number, "confirm", CS, ASSIGN_QA, comment="转质量部")
    events = engine.history(c.number, CS)
    assert [e.seq for e in events] == [1, 2, 3]
    assert [e.type for e in events] == ["submitted", "transition", "transition"]
    assert [e.trigger for e in events] == [None, "record", "confirm"]
    assert [(e.from_state, e.to_state) for e in events] == [
        (None, "received"),
        ("received", "recorded"),
        ("recorded", "confirmed"),
    ]
    assert {e.actor_id for e in events} == {CS.id}
    assert all(e.actor_roles == ("customer_service",) for e in events)
    assert all(e.number == c.number for e in events)
    assert all(e.ruleset == engine.rules.version for e in events)
    assert all(e.schema_version == EVENT_SCHEMA_VERSION for e in events)
    assert [e.occurred_at - events[0].occurred_at for e in events] == [
        timedelta(0),
        timedelta(minutes=5),
        timedelta(minutes=10),
    ]
    assert events[0].payload["number"] == c.number
    assert events[0].payload["fields"]["customer_name"] == "华东机电有限公司"
    assert events[1].payload["set"] == {"readback_confirmed": True, "quantity": 3}
    assert events[2].payload["set"] == ASSIGN_QA
    assert events[2].payload["comment"] == "转质量部"
    assert events[0].prev_hash == GENESIS
    assert [e.prev_hash for e in events[1:]] == [e.hash for e in events[:-1]]
    assert len({e.hash for e in events}) == 3


def test_find_filters_and_pages(engine: Engine, clock: SimulatedClock) -> None:
    day = timedelta(days=1)
    start = clock()
    c1 = engine.submit(complaint_fields(), CS)  # received, general
    clock.advance(day)
    c2 = confirmed(engine, ASSIGN_QA, claimed_amount="20000")  # confirmed, major
    clock.advance(day)
    c3 = confirmed(engine, ASSIGN_TECH)  # confirmed, general
    clock.advance(day)
    c4 = engine.submit(complaint_fields(), CS)  # received, general

    def numbers(**filters: Any) -> list[str]:
        page = engine.find(**filters)
        assert page.total == len(page.items)
        return [c.number for c in page.items]

    everyone = [c1.number, c2.number, c3.number, c4.number]
    assert numbers() == everyone
    assert numbers(state="received") == [c1.number, c4.number]
    assert numbers(state=["confirmed", "closed"]) == [c2.number, c3.number]
    assert numbers(state=("received", "confirmed")) == everyone
    assert numbers(state="closed") == []
    assert numbers(severity="major") == [c2.number]
    assert numbers(severity="general") == [c1.number, c3.number, c4.number]
    assert numbers(department="quality") == [c2.number]
    assert numbers(department="technical") == [c3.number]
    assert numbers(handler="sun.tech") == [c3.number]
    assert numbers(handler="nobody") == []
    assert numbers(state="confirmed", severity="general") == [c3.number]
    assert numbers(state="confirmed", department="quality", handler="wang.qa") == [c2.number]
    # the window is [from, to): from inclusive, to exclusive; any zone
    assert numbers(received_between=(start + day, start + 3 * day)) == [c2.number, c3.number]
    assert numbers(received_between=(start + day, None)) == [c2.number, c3.number, c4.number]
    assert numbers(received_between=(None, start + day)) == [c1.number]
    local = (start + day).astimezone(SHANGHAI)
    assert numbers(received_between=(local, local + day)) == [c2.number]
    assert numbers(received_between=(None, None)) == everyone

    page = engine.find(limit=3)
    assert [c.number for c in page.items] == everyone[:3]
    assert (page.total, page.limit, page.offset, page.next_offset) == (4, 3, 0, 3)
    page = engine.find(limit=3, offset=page.next_offset or 0)
    assert [c.number for c in page.items] == everyone[3:]
    assert (page.total, page.next_offset) == (4, None)
    page = engine.find(limit=1, offset=1, state="received")
    assert [c.number for c in page.items] == [c4.number]
    assert (page.total, page.next_offset) == (2, None)
    page = engine.find(offset=10)
    assert (page.items, page.total, page.next_offset) == ((), 4, None)


# -- the buttons --------------------------------------------------------------------------------


def test_available_triggers_in_received(engine: Engine) -> None:
    c = engine.submit(complaint_fields(), CS)
    assert options(engine, c.number, CS)["record"] == TriggerOption(
        "record", "recorded", True, needs_fields=("readback_confirmed",), label="登记"
    )
    refused = options(engine, c.number, QA)["record"]
    assert (refused.trigger, refused.allowed, refused.check) == ("record", False, "role")
    assert refused.reason is not None and "customer_service" in refused.reason


def test_available_triggers_list_every_transition_out_of_the_state(engine: Engine) -> None:
    c = engine.submit(complaint_fields(), CS)
    record(engine, c.number)
    out = {t.trigger for t in engine.rules.outgoing("recorded")}
    assert out >= {"confirm", "reject"}
    for_cs = options(engine, c.number, CS)
    assert set(for_cs) == out
    assert for_cs["confirm"].allowed and for_cs["reject"].allowed
    assert for_cs["confirm"].to_state == "confirmed"
    assert for_cs["reject"].to_state == "closed"
    assert for_cs["confirm"].needs_fields == ("responsible_department", "handler")
    assert for_cs["reject"].needs_fields == ("rejection_reason",)
    assert (for_cs["confirm"].check, for_cs["confirm"].reason) == (None, None)
    for_qa = options(engine, c.number, QA)
    assert set(for_qa) == out
    for trigger in ("confirm", "reject"):
        assert not for_qa[trigger].allowed
        assert for_qa[trigger].check == "role"
        assert for_qa[trigger].reason


def test_available_triggers_report_condition_and_approval(engine: Engine) -> None:
    c = confirmed(engine, ASSIGN_QA, claimed_amount="20000")
    assert options(engine, c.number, QA)["submit_report"].check == "condition"
    engine.fire(c.number, "name_special_team", GM, {"special_team": "质量部+技术部"})
    assert options(engine, c.number, QA)["submit_report"].allowed
    engine.fire(c.number, "submit_report", QA, REPORT)

    out = {t.trigger for t in engine.rules.outgoing("investigated")}
    assert out >= {"propose_plan", "approve_plan", "reinvestigate", "resolve"}
    for_gm = options(engine, c.number, GM)
    assert set(for_gm) == out
    assert for_gm["approve_plan"].check == "condition"  # nothing proposed yet
    assert for_gm["propose_plan"].check == "role"
    assert for_gm["resolve"].check == "role"

    engine.fire(c.number, "propose_plan", QA, PLAN)
    for_after = options(engine, c.number, AFTER)
    assert set(for_after) == out
    assert for_after["resolve"].check == "approval"
    assert not for_after["resolve"].allowed
    assert options(engine, c.number, QA)["approve_plan"].check == "role"
    assert options(engine, c.number, GM)["approve_plan"].allowed
    engine.fire(c.number, "approve_plan", GM)
    resolve = options(engine, c.number, AFTER)["resolve"]
    assert resolve.allowed
    assert resolve.needs_fields == ("disposal_result",)


def test_available_triggers_report_separation_of_duties(engine: Engine) -> None:
    c = engine.submit(complaint_fields(person_complained_about=CS.id), CS)
    option = options(engine, c.number, CS)["record"]
    assert (option.allowed, option.check) == (False, "separation_of_duties")
    assert option.reason is not None and "recusal" in option.reason


def test_available_triggers_in_a_final_state(engine: Engine) -> None:
    c = engine.submit(complaint_fields(), CS)
    record(engine, c.number)
    engine.fire(c.number, "reject", CS, {"rejection_reason": "非本公司产品"})
    assert engine.get(c.number, CS).state == "closed"
    assert engine.available_triggers(c.number, CS) == []


# -- opening ------------------------------------------------------------------------------------


def test_open_twice_on_the_same_database(db_url: str, clock: SimulatedClock) -> None:
    with Engine.open(db_url, clock=clock) as first:
        c = first.submit(complaint_fields(), CS)
    with Engine.open(db_url, clock=clock) as second, Engine.open(db_url, clock=clock) as third:
        assert second.get(c.number, CS) == c
        assert third.submit(complaint_fields(), CS).number == "TS-2026-000002"
        with second.database.connect() as conn:
            assert conn.execute(
                sa.text("SELECT version_num FROM alembic_version")
            ).scalars().all() == [head_revision()]
            assert conn.execute(sa.text("SELECT hash FROM rulesets")).scalars().all() == [
                second.rules.version
            ]
        assert second.verify().ok


def _modified_rules() -> RuleSet:
    text = default_rules_text()
    anchor = (
        "    label: {zh: 登记, en: Register}\n    from: [received]\n    to: recorded\n"
        "    roles: [customer_service]\n"
    )
    assert text.count(anchor) == 1
    changed = text.replace(
        anchor,
        "    label: {zh: 登记(新), en: Register}\n"
        "    from: [received]\n    to: recorded\n    roles: [quality]\n",
    )
    return parse_rules(changed, "modified.yaml")


def test_complaints_keep_their_rule_set_version(db_url: str, clock: SimulatedClock) -> None:
    with Engine.open(db_url, clock=clock) as old_engine:
        old = old_engine.submit(complaint_fields(), CS)
        old_version = old_engine.rules.version
    modified = _modified_rules()
    assert modified.version != old_version

    with Engine.open(db_url, rules=modified, clock=clock) as engine:
        assert engine.rules.version == modified.version
        new = engine.submit(complaint_fields(), CS)
        assert old.ruleset == old_version
        assert new.ruleset == modified.version
        assert options(engine, old.number, CS)["record"].label == "登记"
        assert options(engine, new.number, QA)["record"].label == "登记(新)"

        # the old complaint still runs under the old rules: customer service records it
        fired = record(engine, old.number)
        assert fired.ruleset == old_version
        assert engine.history(old.number, CS)[-1].ruleset == old_version
        # the new one under the new rules: only quality may
        with pytest.raises(RoleNotAllowed):
            record(engine, new.number)
        assert (
            engine.fire(new.number, "record", QA, {"readback_confirmed": True}).ruleset
            == modified.version
        )
        assert engine.get(old.number, CS).ruleset == old_version
        assert {c.ruleset for c in engine.find().items} == {old_version, modified.version}
        with engine.database.connect() as conn:
            stored = set(conn.execute(sa.text("SELECT hash FROM rulesets")).scalars())
        assert stored == {old_version, modified.version}
        assert engine.verify().ok

    with Engine.open(db_url, clock=clock) as back:
        assert back.get(new.number, CS).ruleset == modified.version
        engine_after = back.fire(new.number, "confirm", CS, ASSIGN_TECH)
        assert engine_after.ruleset == modified.version


# -- the rule set -------------------------------------------------------------------------------


def test_rules_introspection(engine: Engine) -> None:
    rules = engine.rules
    text = default_rules_text()
    assert rules.text == text
    assert rules.version == hashlib.sha256(text.encode("utf-8")).hexdigest()
    assert list(rules.states) == STATES
    assert rules.initial == "received"
    assert rules.final_states == {"closed"}
    assert rules.severity_levels == ("general", "major")
    assert rules.personal_fields == {"contact_person", "phone", "email", "address"}
    assert set(rules.triggers) >= {
        "record",
        "confirm",
        "reject",
        "name_special_team",
        "submit_report",
        "propose_plan",
        "approve_plan",
        "reinvestigate",
        "resolve",
        "sign_reply",
        "feed_back",
        "dispute",
        "revisit",
        "close",
        "reopen",
    }
    assert set(rules.triggers) == {t.trigger for t in rules.transitions}
    by_trigger = {t.trigger: t for t in rules.transitions}
    assert by_trigger["record"].roles == ["customer_service"]
    assert by_trigger["approve_plan"].roles == ["general_manager"]
    assert by_trigger["close"].roles == ["customer_service", "archivist"]
    assert (by_trigger["close"].source, by_trigger["close"].to) == (["revisited"], "closed")
    assert by_trigger["resolve"].approval is not None
    assert by_trigger["resolve"].approval.by == "approve_plan"
    types = {name: f.type for name, f in rules.fields.items()}
    assert types["claimed_amount"] == "decimal"
    assert types["quantity"] == "integer"
    assert types["purchase_date"] == "date"
    assert types["customer_demand"] == "enum_list"
    assert types["channel"] == "enum"
    assert types["safety_issue"] == "bool"
    assert types["address"] == "text"
    assert {name for name, f in rules.fields.items() if f.required} == {
        "customer_name",
        "channel",
        "product_name",
        "category",
        "description",
    }
    assert "auditor" in rules.roles
    assert rules.may_read_personal(("customer_service",))
    assert not rules.may_read_personal(("auditor", "quality"))
    assert TECH.roles[0] in rules.roles
