"""Every timer of the shipped default rule file, in simulated time (procedure.md section 5).

Each test drives one complaint with the actors the rules name to the moment its clock starts,
then moves a ``SimulatedClock`` to one second before each warning and the breach (nothing
may fire yet), to the exact instant (it fires, with lateness 0), and ticks once more (it
does not fire twice). The instants are written down in Shanghai local time, worked out by
hand from the rule file and the office calendar (08:30-12:00, 13:00-17:30, Monday to
Friday, Chinese public holidays and make-up days: Monday 2026-02-23 is a Spring Festival
day off, Saturday 2026-02-28 a make-up working day (调休), March 2026 has no holiday, Monday
2026-04-06 is 清明 observed). N working days end at the close of the Nth working date AFTER
the start date (the start date counts only with count_start_day), as documented in
complaintflow.worktime.

SQLite only, for speed: the backends are compared in tests/integration/test_timers.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from complaintflow import (
    Actor,
    Complaint,
    ConditionFailed,
    Engine,
    HistoryEvent,
    RuleSet,
    SimulatedClock,
    load_rules,
)
from complaintflow.outbox import Notification
from complaintflow.scheduler import Scheduler
from complaintflow.views import TimerView
from tests.support import AFTER, CS, GM, QA, SALES, complaint_fields

SH = ZoneInfo("Asia/Shanghai")
TIMER_EVENTS = ("timer_warning", "timer_breached")
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
MAJOR: dict[str, Any] = {"safety_issue": True}

#: timer id -> the tests that exercise it (filled in by @covers at import)
COVERED: dict[str, list[str]] = {}


def covers(timer: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    def mark(test: Callable[..., None]) -> Callable[..., None]:
        COVERED.setdefault(timer, []).append(test.__name__)
        return test

    return mark


def local(
    month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, year: int = 2026
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=SH)


def parse_due(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# -- the simulation ------------------------------------------------------------------------


@dataclass
class Sim:
    engine: Engine
    clock: SimulatedClock
    scheduler: Scheduler
    notes: list[Notification] = field(default_factory=list)

    # driving -----------------------------------------------------------------------------

    def at(self, moment: datetime) -> None:
        self.clock.set(moment)

    def submit(self, when: datetime, actor: Actor = CS, **fields: Any) -> str:
        self.at(when)
        return self.engine.submit(complaint_fields(**fields), actor).number

    def fire(
        self, number: str, trigger: str, actor: Actor, data: dict[str, Any] | None = None
    ) -> Complaint:
        return self.engine.fire(number, trigger, actor, data)

    def confirmed(self, when: datetime, **fields: Any) -> str:
        """Received, recorded and assigned at ``when``."""
        number = self.submit(when, **fields)
        self.fire(number, "record", CS, {"readback_confirmed": True})
        self.fire(number, "confirm", CS, ASSIGN)
        return number

    def investigated(self, number: str, when: datetime) -> None:
        self.at(when)
        self.fire(number, "submit_report", QA, REPORT)

    def resolved(self, number: str, when: datetime) -> None:
        self.at(when)
        self.fire(number, "propose_plan", QA, PLAN)
        self.fire(number, "resolve", AFTER, RESULT)

    def fed_back(self, number: str, when: datetime) -> None:
        self.at(when)
        self.fire(number, "feed_back", CS, FEEDBACK)

    def tick(self) -> Any:
        return self.scheduler.tick()

    # looking -----------------------------------------------------------------------------

    def timer_events(self, number: str, timer: str | None = None) -> list[HistoryEvent]:
        return [
            e
            for e in self.engine.history(number)
            if e.type in TIMER_EVENTS and (timer is None or e.payload["timer"] == timer)
        ]

    def view(self, number: str, timer: str) -> TimerView:
        found = [t for t in self.engine.timers(number) if t.timer == timer]
        assert len(found) == 1, found
        return found[0]

    def started(self, number: str) -> set[str]:
        return {t.timer for t in self.engine.timers(number)}

    def expect(
        self,
        number: str,
        timer: str,
        kind: str,
        due: datetime,
        notify: list[str],
        *,
        index: int = 0,
        actions: dict[str, Any] | None = None,
        before: bool = True,
    ) -> HistoryEvent:
        """The ``kind`` ('warning'/'breach') deadline of ``timer`` fires exactly at ``due``:
        not at ``due - 1 s``, once at ``due`` (lateness 0, the payload and the outbox
        notification as the rule file says), and not again on the next tick."""
        event_type = "timer_warning" if kind == "warning" else "timer_breached"

        def matching() -> list[HistoryEvent]:
            return [
                e
                for e in self.timer_events(number, timer)
                if e.type == event_type and e.payload["index"] == index
            ]

        if before:
            self.at(due - timedelta(seconds=1))
            self.tick()
            assert matching() == [], f"{timer} {kind} fired before {due}"
        self.at(due)
        self.tick()
        found = matching()
        assert len(found) == 1, found
        event = found[0]
        assert event.occurred_at == due
        assert event.actor_id == "system:scheduler"
        payload = event.payload
        assert payload["kind"] == kind
        assert parse_due(payload["due_at"]) == due, (payload["due_at"], due.isoformat())
        assert payload["lateness_seconds"] == 0
        assert payload["actions"] == {"notify": notify, **(actions or {})}
        key = f"{number}:{event.seq}:{event_type}"
        delivered = [n for n in self.notes if n.key == key]
        assert len(delivered) == 1, (key, [n.key for n in self.notes])
        assert delivered[0].recipients == tuple(notify)
        assert delivered[0].kind == event_type
        assert delivered[0].payload == payload
        # exactly once
        events_before, notes_before = len(self.engine.history(number)), len(self.notes)
        report = self.tick()
        assert report.fired == 0
        assert len(self.engine.history(number)) == events_before
        assert len(self.notes) == notes_before
        return event


@pytest.fixture(scope="module")
def default_rules() -> RuleSet:
    return load_rules()


@pytest.fixture
def sim(tmp_path: Path, default_rules: RuleSet) -> Iterator[Sim]:
    clock = SimulatedClock(local(2, 20, 9))  # before the last days of the Spring Festival
    engine = Engine.open(f"sqlite:///{tmp_path / 'timers.db'}", rules=default_rules, clock=clock)
    s = Sim(engine, clock, Scheduler(engine, worker="acceptance"))
    engine.outbox.add_sink(s.notes.append)
    try:
        yield s
    finally:
        engine.close()


# -- receipt: hand-over, reporting, first response, registration ---------------------------


@covers("handover_to_cs")
def test_handover_to_cs_warns_at_half_and_breaches_after_30_minutes(sim: Sim) -> None:
    number = sim.submit(local(3, 2, 9), SALES)
    assert "handover_to_cs" in sim.started(number)
    sim.expect(
        number, "handover_to_cs", "warning", local(3, 2, 9, 15), ["department_manager"], index=1
    )
    sim.expect(
        number,
        "handover_to_cs",
        "breach",
        local(3, 2, 9, 30),
        ["customer_service", "department_manager"],
    )
    # received by customer service itself: nothing to hand over
    assert "handover_to_cs" not in sim.started(sim.submit(local(3, 2, 9, 40), CS))


@covers("handover_to_cs")
def test_a_stopped_clock_never_fires_hand_over_before_30_minutes(sim: Sim) -> None:
    number = sim.submit(local(3, 2, 9), SALES)
    sim.at(local(3, 2, 9, 20))
    sim.tick()  # the 15-minute warning fires
    sim.fire(number, "hand_over", SALES)
    assert sim.view(number, "handover_to_cs").status == "stopped"
    sim.at(local(3, 2, 12))
    sim.tick()
    events = sim.timer_events(number, "handover_to_cs")
    assert [e.type for e in events] == ["timer_warning"]
    assert not [
        n
        for n in sim.notes
        if n.payload.get("timer") == "handover_to_cs" and n.kind == "timer_breached"
    ]


@covers("report_to_service_centre")
def test_report_to_service_centre_within_1_hour_for_service_firms(sim: Sim) -> None:
    number = sim.submit(local(3, 2, 9), sla_profile="service_firm")
    sim.expect(number, "report_to_service_centre", "breach", local(3, 2, 10), ["customer_service"])
    standard = sim.submit(local(3, 2, 10, 5))
    assert "report_to_service_centre" not in sim.started(standard)


@covers("report_to_service_centre")
def test_report_to_service_centre_stops_on_registration(sim: Sim) -> None:
    number = sim.submit(local(3, 2, 9), sla_profile="service_firm")
    sim.at(local(3, 2, 9, 50))
    sim.fire(number, "record", CS, {"readback_confirmed": True})
    sim.at(local(3, 2, 11))
    sim.tick()
    assert sim.timer_events(number, "report_to_service_centre") == []


@covers("pass_to_quality")
def test_pass_to_quality_within_15_minutes_for_service_firm_quality_complaints(sim: Sim) -> None:
    number = sim.submit(local(3, 2, 9), sla_profile="service_firm")
    sim.expect(
        number, "pass_to_quality", "breach", local(3, 2, 9, 15), ["quality", "quality_manager"]
    )
    other = sim.submit(local(3, 2, 9, 20), sla_profile="service_firm", category="service_behaviour")
    assert "pass_to_quality" not in sim.started(other)
    standard = sim.submit(local(3, 2, 9, 20))
    assert "pass_to_quality" not in sim.started(standard)


@covers("first_response")
@pytest.mark.parametrize(
    ("received", "warning", "breach"),
    [
        pytest.param(local(3, 2, 9), local(3, 2, 9, 45), local(3, 2, 10), id="monday-1h"),
        pytest.param(
            local(3, 2, 20), local(3, 2, 20, 45), local(3, 2, 21), id="working-day-after-hours-1h"
        ),
        pytest.param(local(3, 7, 10), local(3, 7, 13, 45), local(3, 7, 14), id="saturday-4h"),
        pytest.param(
            local(2, 23, 10),
            local(2, 23, 13, 45),
            local(2, 23, 14),
            id="spring-festival-day-off-4h",
        ),
        pytest.param(
            local(2, 28, 10), local(2, 28, 10, 45), local(2, 28, 11), id="make-up-saturday-1h"
        ),
    ],
)
def test_first_response_1_hour_on_working_days_4_hours_otherwise(
    sim: Sim, received: datetime, warning: datetime, breach: datetime
) -> None:
    number = sim.submit(received)
    sim.expect(number, "first_response", "warning", warning, ["customer_service"], index=1)
    sim.expect(
        number, "first_response", "breach", breach, ["customer_service", "department_manager"]
    )


@covers("first_response")
def test_first_response_stops_when_responded(sim: Sim) -> None:
    number = sim.submit(local(3, 2, 9))
    sim.at(local(3, 2, 9, 30))
    sim.fire(number, "respond", CS, {"response_note": "已电话回复客户"})
    sim.at(local(3, 2, 10, 30))
    sim.tick()
    assert sim.timer_events(number, "first_response") == []
    assert sim.view(number, "first_response").stopped_at == local(3, 2, 9, 30)


@covers("registration")
@pytest.mark.parametrize(
    ("received", "counts_from"),
    [
        pytest.param(local(3, 2, 9), local(3, 2, 9), id="working-time"),
        pytest.param(local(3, 2, 20), local(3, 3, 8, 30), id="evening-next-opening"),
        pytest.param(local(3, 2, 12, 30), local(3, 2, 13), id="lunch-break"),
        pytest.param(local(3, 7, 10), local(3, 9, 8, 30), id="saturday-monday-opening"),
        pytest.param(local(2, 23, 10), local(2, 24, 8, 30), id="day-off-next-opening"),
    ],
)
def test_registration_2_hours_counted_from_the_next_opening(
    sim: Sim, received: datetime, counts_from: datetime
) -> None:
    number = sim.submit(received)
    view = sim.view(number, "registration")
    assert view.started_at == counts_from
    assert view.due_at == counts_from + timedelta(hours=2)
    sim.expect(
        number,
        "registration",
        "warning",
        counts_from + timedelta(minutes=90),
        ["customer_service"],
        index=1,
    )
    sim.expect(
        number,
        "registration",
        "breach",
        counts_from + timedelta(hours=2),
        ["customer_service", "department_manager"],
    )


@covers("urgent_after_hours")
def test_urgent_after_hours_escalates_at_once_to_the_general_manager(sim: Sim) -> None:
    number = sim.submit(local(3, 2, 20), urgent=True)
    sim.expect(
        number,
        "urgent_after_hours",
        "breach",
        local(3, 2, 20),
        ["general_manager", "top_management"],
        actions={"reassign": "general_manager"},
        before=False,
    )
    assert sim.engine.get(number).escalated_to == "general_manager"
    # urgent in office hours, or not urgent after hours: the normal procedure
    in_hours = sim.submit(local(3, 3, 10), urgent=True)
    after_hours = sim.submit(local(3, 3, 20), urgent=False)
    for other in (in_hours, after_hours):
        assert "urgent_after_hours" not in sim.started(other)
        assert sim.engine.get(other).escalated_to is None


@covers("major_to_management")
def test_major_complaint_reported_to_management_at_once(sim: Sim) -> None:
    number = sim.submit(local(3, 2, 9), **MAJOR)
    assert sim.engine.get(number).severity == "major"
    sim.expect(
        number,
        "major_to_management",
        "breach",
        local(3, 2, 9),
        ["general_manager", "top_management"],
        before=False,
    )
    general = sim.submit(local(3, 2, 9, 5))
    assert "major_to_management" not in sim.started(general)


@covers("major_to_management")
def test_a_complaint_a_breach_made_major_is_reported_to_management_at_once(sim: Sim) -> None:
    """Procedure section 3: major complaints are reported to management at once, also one
    the whole-complaint breach made major while it was under investigation (its condition
    held at no entry into a state, so no transition started the clock)."""
    number = sim.confirmed(local(3, 2, 9))
    resolved = sim.confirmed(local(3, 2, 9))  # out of the clock's states: nothing starts
    sim.investigated(number, local(3, 2, 10))
    sim.investigated(resolved, local(3, 2, 10))
    sim.resolved(resolved, local(3, 3, 10))
    assert "major_to_management" not in sim.started(number)
    sim.expect(number, "whole_complaint", "breach", local(3, 23, 17, 30),
               ["general_manager", "quality_manager"], actions={"raise_severity": "major"},
               before=False)
    complaint = sim.engine.get(number)
    assert (complaint.state, complaint.severity) == ("investigated", "major")
    [reported] = sim.timer_events(number, "major_to_management")  # in the same tick
    assert reported.type == "timer_breached" and reported.occurred_at == local(3, 23, 17, 30)
    assert reported.payload["actions"] == {"notify": ["general_manager", "top_management"]}
    assert sim.engine.get(resolved).severity == "major"
    assert "major_to_management" not in sim.started(resolved)
    assert sim.engine.verify(deep=True).ok


# -- after assignment ------------------------------------------------------------------------


@covers("contact_customer")
def test_contact_customer_2_working_hours_skip_the_lunch_break(sim: Sim) -> None:
    number = sim.confirmed(local(3, 2, 11))
    sim.expect(number, "contact_customer", "breach", local(3, 2, 14), ["department_manager"])


@covers("contact_customer")
def test_contact_customer_stops_when_the_handler_calls(sim: Sim) -> None:
    number = sim.confirmed(local(3, 2, 11))
    sim.at(local(3, 2, 13, 30))
    sim.fire(number, "contact_customer", QA, {"contact_note": "已联系客户"})
    sim.at(local(3, 2, 15))
    sim.tick()
    assert sim.timer_events(number, "contact_customer") == []


@covers("onsite_visit")
def test_onsite_visit_2_working_days_when_the_customer_asks(sim: Sim) -> None:
    number = sim.confirmed(local(3, 2, 10), customer_demand=["onsite_visit"])
    sim.expect(
        number, "onsite_visit", "breach", local(3, 4, 17, 30), ["sales_rep", "department_manager"]
    )
    plain = sim.confirmed(local(3, 4, 17, 40))
    assert "onsite_visit" not in sim.started(plain)


@covers("onsite_check")
def test_onsite_check_3_working_days(sim: Sim) -> None:
    number = sim.confirmed(local(3, 2, 10), customer_demand=["onsite_visit", "repair"])
    sim.expect(
        number, "onsite_check", "breach", local(3, 5, 17, 30), ["quality", "department_manager"]
    )
    plain = sim.confirmed(local(3, 5, 17, 40))
    assert "onsite_check" not in sim.started(plain)


@covers("sample_reinspection")
def test_sample_reinspection_3_working_days_after_the_sample_arrives(sim: Sim) -> None:
    number = sim.confirmed(local(3, 2, 10))
    assert "sample_reinspection" not in sim.started(number)
    sim.at(local(3, 3, 15))
    sim.fire(number, "receive_sample", QA)
    sim.expect(number, "sample_reinspection", "breach", local(3, 6, 17, 30), ["quality_manager"])


@covers("investigation_organised")
@pytest.mark.parametrize(
    ("fields", "breach"),
    [
        pytest.param({}, local(3, 4, 17, 30), id="general-2-working-days"),
        pytest.param(MAJOR, local(3, 3, 17, 30), id="major-1-working-day"),
    ],
)
def test_investigation_organised(sim: Sim, fields: dict[str, Any], breach: datetime) -> None:
    number = sim.confirmed(local(3, 2, 10), **fields)
    sim.expect(
        number,
        "investigation_organised",
        "breach",
        breach,
        ["department_manager", "general_manager"],
    )


@covers("investigation_report")
@pytest.mark.parametrize(
    ("fields", "warning", "breach"),
    [
        # the 5th working date after Monday is the next Monday (the start date is not day 1);
        # 390 + 5 * 480 = 2790 working minutes from Mon 10:00, 0.8 of it = 2232 -> Fri 16:12
        pytest.param({}, local(3, 6, 16, 12), local(3, 9, 17, 30), id="general-5-working-days"),
        # 3 working days: 390 + 3 * 480 = 1830 minutes, 0.8 = 1464 -> Thu 10:24
        pytest.param(MAJOR, local(3, 5, 10, 24), local(3, 5, 17, 30), id="major-3-working-days"),
    ],
)
def test_investigation_report(
    sim: Sim, fields: dict[str, Any], warning: datetime, breach: datetime
) -> None:
    number = sim.confirmed(local(3, 2, 10), **fields)
    sim.expect(
        number, "investigation_report", "warning", warning, ["quality", "technical"], index=1
    )
    sim.expect(
        number, "investigation_report", "breach", breach, ["department_manager", "quality_manager"]
    )


@covers("investigation_report")
def test_investigation_report_stops_when_the_report_is_in(sim: Sim) -> None:
    number = sim.confirmed(local(3, 2, 10))
    sim.investigated(number, local(3, 5, 16))
    sim.at(local(3, 9, 9))
    sim.tick()
    assert sim.timer_events(number, "investigation_report") == []


@covers("progress_report")
def test_progress_report_after_3_working_days_unsolved(sim: Sim) -> None:
    number = sim.confirmed(local(3, 2, 10))
    sim.expect(number, "progress_report", "breach", local(3, 5, 17, 30), ["customer_service"])


@covers("disposal_plan")
def test_disposal_plan_2_working_days_after_the_report(sim: Sim) -> None:
    number = sim.confirmed(local(3, 2, 10))
    sim.investigated(number, local(3, 3, 10))
    sim.expect(number, "disposal_plan", "breach", local(3, 5, 17, 30), ["department_manager"])


@covers("major_disposal_start")
def test_major_disposal_starts_1_working_day_after_approval(sim: Sim) -> None:
    number = sim.confirmed(local(3, 2, 10), **MAJOR)
    sim.fire(number, "name_special_team", GM, {"special_team": "质量部+技术部专项小组"})
    sim.investigated(number, local(3, 3, 10))
    assert "disposal_plan" not in sim.started(number)  # general complaints only
    sim.fire(number, "propose_plan", QA, PLAN)
    assert "major_disposal_start" not in sim.started(number)
    sim.at(local(3, 4, 10))
    sim.fire(number, "approve_plan", GM)
    sim.expect(number, "major_disposal_start", "breach", local(3, 5, 17, 30), ["general_manager"])


@covers("reply_with_solution")
def test_reply_with_solution_within_a_week_for_service_firms(sim: Sim) -> None:
    number = sim.submit(local(3, 2, 9), sla_profile="service_firm")
    sim.expect(
        number,
        "reply_with_solution",
        "breach",
        local(3, 9, 9),
        ["customer_service", "department_manager"],
    )
    assert "reply_with_solution" not in sim.started(sim.submit(local(3, 9, 10)))


# -- after the disposal -----------------------------------------------------------------------


@covers("feedback_to_customer")
def test_feedback_to_customer_2_working_days_after_the_disposal(sim: Sim) -> None:
    number = sim.confirmed(local(3, 2, 10))
    sim.investigated(number, local(3, 2, 11))
    sim.resolved(number, local(3, 3, 10))
    sim.expect(number, "feedback_to_customer", "breach", local(3, 5, 17, 30), ["customer_service"])


@covers("whole_complaint")
@pytest.mark.parametrize(
    ("fields", "warning", "breach"),
    [
        # 15 working days from Mon 09:00 = 450 + 15 * 480 minutes; 0.8 -> the 12th day 16:00
        pytest.param({}, local(3, 18, 16), local(3, 23, 17, 30), id="general-15-working-days"),
        # 30 working days, 清明 Monday 04-06 off; 0.8 -> the 24th working day (Fri 04-03) 16:00
        pytest.param(MAJOR, local(4, 3, 16), local(4, 14, 17, 30), id="major-30-working-days"),
        pytest.param(
            {"sla_profile": "lab"}, local(3, 13, 13, 48), local(3, 16, 9), id="lab-two-weeks"
        ),
        pytest.param(
            {"sla_profile": "lab", **MAJOR},
            local(3, 26, 9),
            local(4, 1, 9),
            id="lab-major-one-month",
        ),
    ],
)
def test_whole_complaint_and_severity_raised_on_breach(
    sim: Sim, fields: dict[str, Any], warning: datetime, breach: datetime
) -> None:
    number = sim.submit(local(3, 2, 9), **fields)
    sim.expect(
        number,
        "whole_complaint",
        "warning",
        warning,
        ["department_manager", "customer_service"],
        index=1,
    )
    sim.expect(
        number,
        "whole_complaint",
        "breach",
        breach,
        ["general_manager", "quality_manager"],
        actions={"raise_severity": "major"},
    )
    complaint = sim.engine.get(number)
    assert complaint.severity == "major"
    breached = sim.timer_events(number, "whole_complaint")[-1]
    assert breached.payload["severity"] == "major"


@covers("revisit_window")
def test_revisit_window_warns_on_day_6_and_breaches_on_day_7(sim: Sim) -> None:
    number = sim.confirmed(local(3, 2, 10))
    sim.investigated(number, local(3, 2, 11))
    sim.resolved(number, local(3, 2, 14))
    sim.fed_back(number, local(3, 3, 10))
    sim.expect(number, "revisit_window", "warning", local(3, 9, 10), ["customer_service"], index=1)
    sim.expect(
        number,
        "revisit_window",
        "breach",
        local(3, 10, 10),
        ["customer_service", "department_manager"],
    )


@covers("revisit_window")
def test_revisit_refused_before_day_5_after_feedback_and_allowed_from_day_5(sim: Sim) -> None:
    number = sim.confirmed(local(3, 2, 10))
    sim.investigated(number, local(3, 2, 11))
    sim.resolved(number, local(3, 2, 14))
    sim.fed_back(number, local(3, 3, 10))
    before = sim.engine.history(number)
    sim.at(local(3, 8, 9, 59, 59))
    with pytest.raises(ConditionFailed):
        sim.fire(number, "revisit", CS, SATISFIED)
    assert sim.engine.history(number) == before
    sim.at(local(3, 8, 10))
    assert sim.fire(number, "revisit", CS, SATISFIED).state == "revisited"
    assert sim.view(number, "revisit_window").status == "stopped"
    sim.at(local(3, 11, 10))
    sim.tick()
    assert sim.timer_events(number, "revisit_window") == []


@covers("revisit_window")
def test_no_revisit_clocks_for_the_lab_profile_and_no_waiting(sim: Sim) -> None:
    number = sim.confirmed(local(3, 2, 10), sla_profile="lab")
    sim.investigated(number, local(3, 2, 11))
    sim.resolved(number, local(3, 2, 14))
    sim.fed_back(number, local(3, 3, 10))
    assert not sim.started(number) & {
        "revisit_window",
        "revisit_after_completion",
        "revisit_within_day",
    }
    assert sim.fire(number, "revisit", CS, SATISFIED).state == "revisited"


@covers("revisit_after_completion")
def test_revisit_after_completion_5_working_days(sim: Sim) -> None:
    number = sim.confirmed(local(3, 2, 10))
    sim.investigated(number, local(3, 2, 11))
    sim.resolved(number, local(3, 2, 14))
    sim.fed_back(number, local(3, 3, 10))
    sim.expect(
        number, "revisit_after_completion", "breach", local(3, 10, 17, 30), ["customer_service"]
    )


@covers("revisit_within_day")
def test_revisit_within_24_hours_for_service_firms(sim: Sim) -> None:
    number = sim.confirmed(local(3, 2, 10), sla_profile="service_firm")
    sim.investigated(number, local(3, 2, 11))
    sim.resolved(number, local(3, 2, 14))
    sim.fed_back(number, local(3, 3, 10))
    started = sim.started(number)
    assert "revisit_window" not in started
    assert "revisit_after_completion" not in started
    sim.expect(number, "revisit_within_day", "breach", local(3, 4, 10), ["customer_service"])
    # the day-5 rule is the standard (002) procedure only
    assert sim.fire(number, "revisit", CS, SATISFIED).state == "revisited"


@covers("satisfied_result_reported")
@pytest.mark.parametrize(
    ("revisited", "breach"),
    [
        pytest.param(local(3, 9, 10), local(3, 9, 17, 30), id="same-day"),
        pytest.param(local(3, 9, 18), local(3, 10, 17, 30), id="after-closing-next-day"),
        pytest.param(local(3, 14, 10), local(3, 16, 17, 30), id="saturday-next-working-day"),
    ],
)
def test_satisfied_result_reported_the_same_day(
    sim: Sim, revisited: datetime, breach: datetime
) -> None:
    number = sim.confirmed(local(3, 2, 10))
    sim.investigated(number, local(3, 2, 11))
    sim.resolved(number, local(3, 2, 14))
    sim.fed_back(number, local(3, 4, 10))
    sim.at(revisited)
    sim.fire(number, "revisit", CS, SATISFIED)
    sim.expect(number, "satisfied_result_reported", "breach", breach, ["customer_service"])


@covers("satisfied_result_reported")
def test_no_satisfied_report_clock_for_a_dissatisfied_customer(sim: Sim) -> None:
    number = sim.confirmed(local(3, 2, 10))
    sim.investigated(number, local(3, 2, 11))
    sim.resolved(number, local(3, 2, 14))
    sim.fed_back(number, local(3, 4, 10))
    sim.at(local(3, 9, 10))
    sim.fire(
        number,
        "revisit",
        CS,
        {"satisfaction_score": 40, "satisfaction": "dissatisfied", "revisit_note": "客户不满意"},
    )
    assert "satisfied_result_reported" not in sim.started(number)


# -- the monthly review, exactly once -----------------------------------------------------------


def test_monthly_review_on_the_4th_at_9_local_once_per_period(sim: Sim) -> None:
    open_one = sim.submit(local(3, 2, 9))
    done = sim.submit(local(3, 2, 9, 30))
    sim.fire(done, "record", CS, {"readback_confirmed": True})
    sim.fire(done, "reject", CS, {"rejection_reason": "重复投诉"})  # closed: not reviewed

    def reviews() -> list[Notification]:
        return [n for n in sim.notes if n.kind == "review"]

    sim.at(local(3, 4, 8, 59, 59))
    assert sim.tick().reviews == 0
    sim.at(local(3, 4, 9))
    report = sim.tick()
    assert report.reviews == 1
    [note] = reviews()
    assert note.key == "review:monthly_unresolved_review:2026-03"
    assert note.recipients == ("general_manager", "quality_manager")
    assert parse_due(note.payload["scheduled_at"]) == local(3, 4, 9)
    assert note.payload["lateness_seconds"] == 0
    assert note.payload["unresolved"] == [open_one]
    assert sim.tick().reviews == 0
    sim.at(local(3, 20, 9))
    assert sim.tick().reviews == 0
    sim.at(local(4, 4, 8, 59))
    assert sim.tick().reviews == 0
    assert len(reviews()) == 1
    # a scheduler that was down on the 4th catches up once, late
    sim.at(local(4, 6, 10))
    assert sim.tick().reviews == 1
    assert sim.tick().reviews == 0
    second = reviews()[-1]
    assert second.key == "review:monthly_unresolved_review:2026-04"
    assert second.payload["lateness_seconds"] == timedelta(days=2, hours=1).total_seconds()
    assert len(reviews()) == 2


def test_ticking_twice_never_duplicates(sim: Sim) -> None:
    numbers = [sim.submit(local(3, 2, 9), SALES, sla_profile="service_firm") for _ in range(3)]
    sim.at(local(3, 2, 12))
    first = sim.tick()
    assert first.fired > 0
    histories = {n: sim.engine.history(n) for n in numbers}
    notes = list(sim.notes)
    second = sim.tick()
    assert (second.fired, second.reviews) == (0, 0)
    assert {n: sim.engine.history(n) for n in numbers} == histories
    assert sim.notes == notes
    keys = [n.key for n in notes]
    assert len(keys) == len(set(keys)) == first.fired
    for number in numbers:
        seen = [(e.payload["timer"], e.payload["index"]) for e in sim.timer_events(number)]
        assert len(seen) == len(set(seen))


def test_every_default_timer_has_an_acceptance_test(default_rules: RuleSet) -> None:
    timers = {t.id for t in default_rules.definition.timers}
    assert len(timers) == 23
    assert set(COVERED) == timers
    reviews = {r.id for r in default_rules.definition.reviews}
    assert reviews == {"monthly_unresolved_review"}
