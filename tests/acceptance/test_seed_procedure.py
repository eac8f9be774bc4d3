"""The seed procedure (shared/procedure.md) walked end to end with the default rule file.

Every scenario runs on a real SQLite file and on real PostgreSQL (the ``engine`` fixture),
with a simulated clock moved forward between steps as the procedure's deadlines would.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from complaintflow import (
    Actor,
    ApprovalMissing,
    Complaint,
    ConditionFailed,
    Engine,
    MissingFields,
    RoleNotAllowed,
    SeparationOfDuties,
    SimulatedClock,
    TransitionRefused,
    TriggerNotAllowed,
)
from tests.support import (
    AFTER,
    ARCH,
    CS,
    GM,
    QA,
    QM,
    SALES,
    TECH,
    TOP,
    complaint_fields,
)

# A deputy GM who also manages a department: may propose a plan and may approve plans,
# but never his own (four-eyes, 002 2.2.2).
DEPUTY_GM = Actor("liu.deputy", ["general_manager", "department_manager"])
# A second customer-service clerk, for complaints about the first one.
CS2 = Actor("wu.cs", ["customer_service"])
# The person complained about, holding every role that handles a complaint.
ACCUSED = Actor("zhao.pc", ["customer_service", "quality", "after_sales", "department_manager"])

REPORT = {
    "root_cause": "process",
    "responsibility": "company",
    "investigation_report": "绕组浸漆工艺不良导致局部过热",
}


class Walk:
    """Fires the procedure step by step, checking the version grows by one each time."""

    def __init__(self, engine: Engine, clock: SimulatedClock, complaint: Complaint) -> None:
        self.engine = engine
        self.clock = clock
        self.c = complaint

    @property
    def number(self) -> str:
        return self.c.number

    def fire(
        self,
        trigger: str,
        actor: Actor,
        data: Mapping[str, Any] | None = None,
        *,
        after: timedelta = timedelta(hours=1),
    ) -> Complaint:
        self.clock.advance(after)
        before = self.c.version
        self.c = self.engine.fire(self.number, trigger, actor, data, expected_version=before)
        assert self.c.version == before + 1
        assert self.c.updated_at == self.clock()
        return self.c

    def refused(
        self,
        error: type[TransitionRefused],
        trigger: str,
        actor: Actor,
        data: Mapping[str, Any] | None = None,
    ) -> TransitionRefused:
        with pytest.raises(error) as info:
            self.engine.fire(self.number, trigger, actor, data)
        assert type(info.value) is error, f"expected {error.__name__}, got {info.value!r}"
        assert info.value.trigger == trigger and info.value.state == self.c.state
        # nothing was stored
        stored = self.engine.get(self.number, CS)
        assert (stored.state, stored.version) == (self.c.state, self.c.version)
        return info.value

    def trail(self) -> list[tuple[str | None, str, tuple[str, ...], str]]:
        return [
            (ev.trigger, ev.actor_id, ev.actor_roles, ev.to_state)
            for ev in self.engine.history(self.number, CS)
        ]


def _check_chain(engine: Engine, number: str) -> None:
    events = engine.history(number, CS)
    assert [ev.seq for ev in events] == list(range(1, len(events) + 1))
    for prev, ev in itertools.pairwise(events):
        assert ev.prev_hash == prev.hash
        assert ev.from_state == prev.to_state
        assert ev.occurred_at >= prev.occurred_at
    report = engine.verify()
    assert report.ok, report.findings


def _to_resolved_general(walk: Walk) -> None:
    walk.fire("record", CS, {"readback_confirmed": True, "customer_demand": ["repair"]})
    walk.fire("confirm", CS, {"responsible_department": "quality", "handler": QA.id})
    walk.fire("submit_report", QA, REPORT, after=timedelta(days=2))
    walk.fire("propose_plan", QA, {"disposal_plan": "返厂维修", "disposal_measures": ["repair"]})
    walk.fire(
        "resolve", AFTER, {"disposal_result": "已更换轴承并重新浸漆"}, after=timedelta(days=1)
    )


# -- (a) a general complaint ---------------------------------------------------------------


def test_general_complaint_end_to_end(engine: Engine, clock: SimulatedClock) -> None:
    # anyone may receive: a sales rep takes it on a customer visit
    c = engine.submit(complaint_fields(channel="sales_rep"), SALES)
    assert (c.state, c.version, c.severity) == ("received", 1, "general")
    assert c.number == "TS-2026-000001"
    walk = Walk(engine, clock, c)

    # registration by customer service, and the record read back to the customer
    walk.refused(RoleNotAllowed, "record", SALES, {"readback_confirmed": True})
    walk.refused(MissingFields, "record", CS, {})
    walk.refused(ConditionFailed, "record", CS, {"readback_confirmed": False})
    walk.fire(
        "record",
        CS,
        {"readback_confirmed": True, "customer_demand": ["repair"], "defective_quantity": 3},
        after=timedelta(minutes=20),
    )
    read_back = engine.get(walk.number, CS)
    assert read_back.state == "recorded"
    assert read_back.fields["customer_name"] == "华东机电有限公司"
    assert read_back.fields["phone"] == "13812345678"
    assert read_back.fields["customer_demand"] == ("repair",)
    assert read_back.fields["defective_quantity"] == 3
    assert read_back.fields["readback_confirmed"] is True
    assert read_back.fields["claimed_amount"] == Decimal("2000")

    walk.refused(MissingFields, "confirm", CS, {"responsible_department": "quality"})
    c = walk.fire("confirm", CS, {"responsible_department": "quality", "handler": QA.id})
    assert (c.state, c.department, c.handler) == ("confirmed", "quality", QA.id)
    # a general complaint needs no special team (and cannot get one)
    walk.refused(ConditionFailed, "name_special_team", GM, {"special_team": "专项小组"})

    walk.fire("submit_report", QA, REPORT, after=timedelta(days=2))
    walk.fire(
        "propose_plan", QA, {"disposal_plan": "返厂维修, 无赔偿", "disposal_measures": ["repair"]}
    )
    # repair without compensation on a general complaint: no GM approval needed
    c = walk.fire(
        "resolve", AFTER, {"disposal_result": "已更换轴承并重新浸漆"}, after=timedelta(days=1)
    )
    assert (c.state, c.severity) == ("resolved", "general")
    # only major replies are signed by top management
    walk.refused(ConditionFailed, "sign_reply", TOP)
    walk.refused(
        ConditionFailed,
        "revisit",
        CS,
        {"satisfaction_score": 92, "satisfaction": "satisfied", "revisit_note": "too early"},
    )
    walk.fire("feed_back", CS, {"customer_feedback": "已电话告知客户处理结果"})
    c = walk.fire(
        "revisit",
        CS,
        {"satisfaction_score": 92, "satisfaction": "satisfied", "revisit_note": "客户满意"},
        after=timedelta(days=5),
    )
    assert c.state == "revisited"
    walk.refused(RoleNotAllowed, "close", QA, {"archive_location": "档案柜 A-3"})
    c = walk.fire("close", ARCH, {"archive_location": "档案柜 A-3"})

    assert (c.state, c.version, c.severity) == ("closed", 9, "general")
    assert walk.trail() == [
        (None, SALES.id, ("sales_rep",), "received"),
        ("record", CS.id, ("customer_service",), "recorded"),
        ("confirm", CS.id, ("customer_service",), "confirmed"),
        ("submit_report", QA.id, ("quality",), "investigated"),
        ("propose_plan", QA.id, ("quality",), "investigated"),
        ("resolve", AFTER.id, ("after_sales",), "resolved"),
        ("feed_back", CS.id, ("customer_service",), "resolved"),
        ("revisit", CS.id, ("customer_service",), "revisited"),
        ("close", ARCH.id, ("archivist",), "closed"),
    ]
    _check_chain(engine, walk.number)
    walk.refused(TriggerNotAllowed, "reopen", CS, {"dispute_reason": "closed is final"})


# -- (b) a major complaint -----------------------------------------------------------------


def test_major_complaint_with_compensation_approval_signature_and_reopen(
    engine: Engine, clock: SimulatedClock
) -> None:
    c = engine.submit(
        complaint_fields(
            claimed_amount="50000", media_involved=True, customer_demand=["compensation"]
        ),
        CS,
    )
    assert (c.state, c.severity) == ("received", "major")
    walk = Walk(engine, clock, c)
    walk.fire("record", CS, {"readback_confirmed": True}, after=timedelta(minutes=15))
    walk.fire("confirm", CS, {"responsible_department": "quality", "handler": QA.id})

    # a major complaint is investigated by a special team named by management
    walk.refused(ConditionFailed, "submit_report", QA, REPORT)
    walk.refused(RoleNotAllowed, "name_special_team", QA, {"special_team": "质量部+技术部"})
    c = walk.fire(
        "name_special_team",
        GM,
        {"special_team": "王质检, 孙工程师, 刘副总"},
        after=timedelta(hours=4),
    )
    assert (c.state, c.severity) == ("confirmed", "major")
    walk.fire("submit_report", TECH, REPORT, after=timedelta(days=3))

    plan = {
        "disposal_plan": "更换电机并赔偿停产损失",
        "disposal_measures": ["replace", "compensation"],
        "compensation_amount": "30000",
    }
    walk.fire("propose_plan", DEPUTY_GM, plan)
    walk.refused(ApprovalMissing, "resolve", AFTER, {"disposal_result": "已更换并赔付"})
    # the proposer may not approve his own plan, even holding the GM role
    walk.refused(SeparationOfDuties, "approve_plan", DEPUTY_GM)
    walk.refused(RoleNotAllowed, "approve_plan", QA)
    walk.fire("approve_plan", GM)
    c = walk.fire("resolve", AFTER, {"disposal_result": "已更换并赔付"}, after=timedelta(days=1))
    assert (c.state, c.severity) == ("resolved", "major")

    # the reply letter of a major complaint is signed by top management before it goes out
    walk.refused(ApprovalMissing, "feed_back", CS, {"customer_feedback": "答复函已寄出"})
    walk.refused(RoleNotAllowed, "sign_reply", GM)
    walk.fire("sign_reply", TOP)
    walk.fire("feed_back", CS, {"customer_feedback": "答复函已寄出"})

    # the customer is not satisfied: no closing, the complaint goes back through handling
    walk.fire(
        "revisit",
        CS,
        {
            "satisfaction_score": 70,
            "satisfaction": "dissatisfied",
            "revisit_note": "赔偿金额不认可",
        },
        after=timedelta(days=5),
    )
    walk.refused(ConditionFailed, "close", ARCH, {"archive_location": "A-4"})
    c = walk.fire("reopen", QM, {"dispute_reason": "客户要求补充措施"})
    assert (c.state, c.severity) == ("investigated", "major")

    walk.fire(
        "propose_plan",
        QA,
        {
            **plan,
            "disposal_plan": "补充: 上门检修全部同批次电机",
            "disposal_measures": ["repair", "compensation"],
        },
    )
    # the earlier approval was for the earlier plan
    walk.refused(ApprovalMissing, "resolve", AFTER, {"disposal_result": "已上门检修"})
    walk.fire("approve_plan", GM)
    walk.fire("resolve", AFTER, {"disposal_result": "已上门检修"}, after=timedelta(days=1))
    # entering resolved again: the earlier signature does not cover the new reply
    walk.refused(ApprovalMissing, "feed_back", CS, {"customer_feedback": "第二次答复"})
    walk.fire("sign_reply", TOP)
    walk.fire("feed_back", CS, {"customer_feedback": "第二次答复"})
    walk.fire(
        "revisit",
        CS,
        {"satisfaction_score": 88, "satisfaction": "satisfied", "revisit_note": "客户满意"},
        after=timedelta(days=5),
    )
    c = walk.fire("close", CS, {"archive_location": "档案柜 B-1", "capa": "浸漆工艺参数加严"})

    assert (c.state, c.version, c.severity) == ("closed", 19, "major")
    assert c.fields["satisfaction_score"] == 88
    assert c.fields["compensation_amount"] == Decimal("30000")
    triggers = [t for t, *_ in walk.trail()]
    assert triggers == [
        None,
        "record",
        "confirm",
        "name_special_team",
        "submit_report",
        "propose_plan",
        "approve_plan",
        "resolve",
        "sign_reply",
        "feed_back",
        "revisit",
        "reopen",
        "propose_plan",
        "approve_plan",
        "resolve",
        "sign_reply",
        "feed_back",
        "revisit",
        "close",
    ]
    roles = {t: r for t, _, r, _ in walk.trail()}
    assert roles["approve_plan"] == ("general_manager",)
    assert roles["sign_reply"] == ("top_management",)
    _check_chain(engine, walk.number)


def test_compensation_alone_makes_a_general_complaint_need_approval(
    engine: Engine, clock: SimulatedClock
) -> None:
    walk = Walk(engine, clock, engine.submit(complaint_fields(), SALES))
    walk.fire("record", CS, {"readback_confirmed": True})
    walk.fire("confirm", CS, {"responsible_department": "after_sales", "handler": AFTER.id})
    walk.fire("submit_report", QA, REPORT)
    c = walk.fire(
        "propose_plan",
        AFTER,
        {
            "disposal_plan": "赔偿运费",
            "disposal_measures": ["compensation"],
            "compensation_amount": "300",
        },
    )
    assert c.severity == "major"
    walk.refused(ApprovalMissing, "resolve", AFTER, {"disposal_result": "已赔付"})
    walk.fire("approve_plan", GM)
    c = walk.fire("resolve", AFTER, {"disposal_result": "已赔付"})
    assert c.state == "resolved"
    _check_chain(engine, walk.number)


def test_an_approved_plan_cannot_be_rewritten_when_carried_out(
    engine: Engine, clock: SimulatedClock
) -> None:
    """GM approval covers the plan that was approved (002 2.2.2, 001 第九条): ``resolve``
    must not be able to replace the approved plan and measures on its way through."""
    walk = Walk(engine, clock, engine.submit(complaint_fields(), SALES))
    walk.fire("record", CS, {"readback_confirmed": True})
    walk.fire("confirm", CS, {"responsible_department": "after_sales", "handler": AFTER.id})
    walk.fire("submit_report", QA, REPORT)
    walk.fire(
        "propose_plan",
        AFTER,
        {
            "disposal_plan": "赔偿运费 300 元",
            "disposal_measures": ["compensation"],
            "compensation_amount": "300",
        },
    )
    walk.fire("approve_plan", GM)
    walk.refused(
        MissingFields,
        "resolve",
        AFTER,
        {
            "disposal_result": "已处理",
            "disposal_plan": "整批退货并赔偿全部损失",
            "disposal_measures": ["return", "compensation"],
        },
    )


# -- (c) recusal -----------------------------------------------------------------------------


def test_the_person_complained_about_is_recused(engine: Engine, clock: SimulatedClock) -> None:
    c = engine.submit(
        complaint_fields(
            category="staff_conduct",
            description="客服人员态度恶劣",
            person_complained_about=ACCUSED.id,
        ),
        SALES,
    )
    walk = Walk(engine, clock, c)
    walk.refused(SeparationOfDuties, "record", ACCUSED, {"readback_confirmed": True})
    walk.fire("record", CS2, {"readback_confirmed": True})
    walk.refused(
        SeparationOfDuties,
        "confirm",
        ACCUSED,
        {"responsible_department": "customer_service", "handler": CS2.id},
    )
    walk.refused(SeparationOfDuties, "reject", ACCUSED, {"rejection_reason": "不成立"})
    # nobody may make the person complained about the handler
    walk.refused(
        ConditionFailed,
        "confirm",
        CS2,
        {"responsible_department": "customer_service", "handler": ACCUSED.id},
    )
    offered = {o.trigger: o for o in engine.available_triggers(walk.number, ACCUSED)}
    assert offered["confirm"].allowed is False
    assert offered["confirm"].check == "separation_of_duties"

    walk.fire("confirm", CS2, {"responsible_department": "customer_service", "handler": CS.id})
    walk.refused(SeparationOfDuties, "submit_report", ACCUSED, REPORT)
    walk.fire("submit_report", QA, {**REPORT, "root_cause": "other"})
    plan = {"disposal_plan": "赔礼道歉并调岗", "disposal_measures": ["apology"]}
    walk.refused(SeparationOfDuties, "propose_plan", ACCUSED, plan)
    walk.fire("propose_plan", CS, plan)
    walk.refused(SeparationOfDuties, "resolve", ACCUSED, {"disposal_result": "已道歉"})
    c = walk.fire("resolve", CS, {"disposal_result": "已道歉"})
    assert (c.state, c.version, c.handler) == ("resolved", 6, CS.id)
    assert {ev.actor_id for ev in engine.history(walk.number, CS)}.isdisjoint({ACCUSED.id})
    _check_chain(engine, walk.number)


# -- (d) the customer disputes the result ---------------------------------------------------


def test_disputed_result_is_reinvestigated(engine: Engine, clock: SimulatedClock) -> None:
    walk = Walk(engine, clock, engine.submit(complaint_fields(), SALES))
    _to_resolved_general(walk)
    walk.fire("feed_back", CS, {"customer_feedback": "已告知: 客户使用不当, 不予赔偿"})
    walk.refused(MissingFields, "dispute", CS, {})
    walk.refused(RoleNotAllowed, "dispute", QA, {"dispute_reason": "客户不认可原因分析"})
    c = walk.fire("dispute", SALES, {"dispute_reason": "客户不认可原因分析"})
    assert c.state == "investigated"
    c = walk.fire(
        "reinvestigate",
        TECH,
        {
            "root_cause": "raw_material",
            "responsibility": "company",
            "investigation_report": "复检: 轴承原材料批次不良",
        },
        after=timedelta(days=2),
    )
    assert (c.state, c.fields["root_cause"]) == ("investigated", "raw_material")
    walk.fire("propose_plan", QA, {"disposal_plan": "整机更换", "disposal_measures": ["replace"]})
    walk.fire("resolve", AFTER, {"disposal_result": "已整机更换"})
    walk.fire("feed_back", CS, {"customer_feedback": "已告知复检结论与更换结果"})
    walk.fire(
        "revisit",
        SALES,
        {"satisfaction_score": 95, "satisfaction": "satisfied", "revisit_note": "客户认可"},
        after=timedelta(days=5),
    )
    c = walk.fire("close", ARCH, {"archive_location": "档案柜 A-7"})
    assert (c.state, c.version, c.severity) == ("closed", 14, "general")
    assert [t for t, *_ in walk.trail()].count("resolve") == 2
    _check_chain(engine, walk.number)


def test_revisit_after_a_new_resolution_needs_a_new_feedback(
    engine: Engine, clock: SimulatedClock
) -> None:
    """The revisit follows feeding the result back (002 2.4.3, 001 第十条/第十一条); once a
    disputed complaint is resolved again, the new result must reach the customer first."""
    walk = Walk(engine, clock, engine.submit(complaint_fields(), SALES))
    _to_resolved_general(walk)
    walk.fire("feed_back", CS, {"customer_feedback": "首次答复"})
    walk.fire("dispute", CS, {"dispute_reason": "客户不认可"})
    walk.fire("propose_plan", QA, {"disposal_plan": "整机更换", "disposal_measures": ["replace"]})
    # a week after the first feedback, so the 5-day revisit wait cannot be what refuses
    walk.fire("resolve", AFTER, {"disposal_result": "已整机更换"}, after=timedelta(days=6))
    with pytest.raises(TransitionRefused):
        engine.fire(
            walk.number,
            "revisit",
            CS,
            {
                "satisfaction_score": 95,
                "satisfaction": "satisfied",
                "revisit_note": "新结果尚未反馈",
            },
        )


# -- (e) not accepted --------------------------------------------------------------------------


def test_rejected_at_registration(engine: Engine, clock: SimulatedClock) -> None:
    walk = Walk(
        engine,
        clock,
        engine.submit(complaint_fields(category="other", description="非本公司产品"), SALES),
    )
    walk.refused(TriggerNotAllowed, "reject", CS, {"rejection_reason": "非本公司产品"})
    walk.fire("record", CS, {"readback_confirmed": True})
    walk.refused(MissingFields, "reject", CS, {})
    walk.refused(RoleNotAllowed, "reject", SALES, {"rejection_reason": "非本公司产品"})
    c = walk.fire("reject", CS, {"rejection_reason": "经核实非本公司产品"})
    assert (c.state, c.version, c.severity) == ("closed", 3, "general")
    for trigger in ("confirm", "reopen", "close"):
        walk.refused(TriggerNotAllowed, trigger, CS)
    _check_chain(engine, walk.number)


# -- all of them in one database ---------------------------------------------------------------


def test_complaint_form_keeps_its_required_fields(engine: Engine, clock: SimulatedClock) -> None:
    """``category`` is required on the complaint form; a later step may reclassify it but
    must not blank it."""
    walk = Walk(engine, clock, engine.submit(complaint_fields(), SALES))
    walk.fire("record", CS, {"readback_confirmed": True})
    walk.refused(
        MissingFields,
        "confirm",
        CS,
        {"responsible_department": "quality", "handler": QA.id, "category": None},
    )


def test_numbers_and_severities_across_scenarios(engine: Engine, clock: SimulatedClock) -> None:
    general = engine.submit(complaint_fields(), SALES)
    authority = engine.submit(
        complaint_fields(channel="authority", forwarded_by="consumer_association"), CS
    )
    safety = engine.submit(complaint_fields(safety_issue=True), CS)
    assert [c.number for c in (general, authority, safety)] == [
        "TS-2026-000001",
        "TS-2026-000002",
        "TS-2026-000003",
    ]
    assert [c.severity for c in (general, authority, safety)] == ["general", "major", "major"]
    assert engine.find(severity="major").total == 2
    report = engine.verify()
    assert report.ok and report.complaints == 3 and report.events == 3
