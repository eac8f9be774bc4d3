"""The engine against a plain model of the default rules, driven by Hypothesis.

The model below is written from the rule file by hand, independently of the engine's guard
pipeline: a table of transitions, the default file's conditions as Python, and data drawn
with its validity known in advance. After every step the engine's outcome (accepted, or
the specific refusal) must be the model's, the complaint it touched must have the model's
state, version, severity, fields and history, and after every write the hash chains must
verify; every complaint is compared at the end of a run. ``reopen_engine`` closes the
engine and opens a new one on the same database mid-run (save/restore: nothing may change).

``COMPLAINTFLOW_TORTURE_EXAMPLES`` sets the number of runs per backend (default 25).
Shrinking replays steps against a real database and can take minutes, so a failure is
reported as found (every step listed) unless ``COMPLAINTFLOW_TORTURE_SHRINK=1``.
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, Phase, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from complaintflow import (
    Actor,
    ApprovalMissing,
    ComplaintflowError,
    ConcurrentUpdate,
    ConditionFailed,
    Engine,
    InvalidInput,
    MissingFields,
    NotFound,
    RoleNotAllowed,
    RuleSet,
    SeparationOfDuties,
    SimulatedClock,
    TriggerNotAllowed,
    UnknownTrigger,
    load_rules,
)
from complaintflow.rules.values import to_json
from tests.conftest import new_pg_schema_url
from tests.support import complaint_fields

EXAMPLES = int(os.environ.get("COMPLAINTFLOW_TORTURE_EXAMPLES") or 25)
SHRINK = os.environ.get("COMPLAINTFLOW_TORTURE_SHRINK") == "1"
START = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)
SHANGHAI = ZoneInfo("Asia/Shanghai")

# -- the model: the default rule file, restated ------------------------------------------------


@dataclass(frozen=True)
class T:
    sources: tuple[str, ...]
    to: str | None  # None: stays in the state it was fired from
    roles: tuple[str, ...]
    fields: tuple[str, ...] = ()
    requires: tuple[str, ...] = ()


TRANSITIONS: dict[str, T] = {
    "hand_over": T(
        ("received",),
        "received",
        (
            "employee",
            "sales_rep",
            "department_manager",
            "quality",
            "technical",
            "production",
            "after_sales",
            "marketing_vp",
        ),
    ),
    "respond": T(
        ("received", "recorded"),
        None,
        ("customer_service", "sales_rep", "after_sales"),
        ("response_note",),
        ("response_note",),
    ),
    "contact_customer": T(
        ("confirmed",),
        "confirmed",
        ("customer_service", "quality", "technical", "after_sales", "department_manager"),
        ("contact_note",),
        ("contact_note",),
    ),
    "report_progress": T(
        ("confirmed", "investigated"),
        None,
        ("customer_service", "department_manager"),
        ("progress_note",),
        ("progress_note",),
    ),
    "visit_site": T(
        ("confirmed",),
        "confirmed",
        ("sales_rep", "after_sales", "technical", "quality"),
        ("visit_note",),
        ("visit_note",),
    ),
    "organise_investigation": T(
        ("confirmed",), "confirmed", ("quality", "technical", "department_manager")
    ),
    "receive_sample": T(("confirmed",), "confirmed", ("quality", "technical")),
    "record_reinspection": T(
        ("confirmed",),
        "confirmed",
        ("quality", "technical"),
        ("reinspection_result",),
        ("reinspection_result",),
    ),
    "record": T(
        ("received",),
        "recorded",
        ("customer_service",),
        (
            "contact_person",
            "phone",
            "email",
            "address",
            "product_model",
            "batch_no",
            "purchase_date",
            "quantity",
            "defective_quantity",
            "serial_number",
            "usage_scenario",
            "loss_description",
            "customer_demand",
            "claimed_amount",
            "readback_confirmed",
        ),
        ("readback_confirmed",),
    ),
    "confirm": T(
        ("recorded",),
        "confirmed",
        ("customer_service", "department_manager"),
        ("responsible_department", "handler", "category"),
        ("responsible_department", "handler"),
    ),
    "reject": T(
        ("recorded",),
        "closed",
        ("customer_service", "department_manager"),
        ("rejection_reason",),
        ("rejection_reason",),
    ),
    "name_special_team": T(
        ("confirmed",),
        "confirmed",
        ("general_manager", "top_management"),
        ("special_team",),
        ("special_team",),
    ),
    "submit_report": T(
        ("confirmed",),
        "investigated",
        ("quality", "technical", "department_manager"),
        ("root_cause", "responsibility", "investigation_report"),
        ("root_cause", "responsibility", "investigation_report"),
    ),
    "propose_plan": T(
        ("investigated",),
        "investigated",
        ("quality", "technical", "after_sales", "department_manager", "customer_service"),
        ("disposal_plan", "disposal_measures", "compensation_amount"),
        ("disposal_plan", "disposal_measures"),
    ),
    "approve_plan": T(("investigated",), "investigated", ("general_manager",)),
    "reinvestigate": T(
        ("investigated",),
        "investigated",
        ("quality", "technical", "department_manager"),
        ("root_cause", "responsibility", "investigation_report"),
    ),
    "resolve": T(
        ("investigated",),
        "resolved",
        ("after_sales", "customer_service", "department_manager", "quality"),
        ("disposal_result", "capa"),
        ("disposal_plan", "disposal_measures", "disposal_result"),
    ),
    "sign_reply": T(("resolved",), "resolved", ("top_management",)),
    "feed_back": T(
        ("resolved",),
        "resolved",
        ("customer_service", "sales_rep", "after_sales"),
        ("customer_feedback",),
        ("customer_feedback",),
    ),
    "dispute": T(
        ("resolved",),
        "investigated",
        ("customer_service", "sales_rep"),
        ("dispute_reason",),
        ("dispute_reason",),
    ),
    "revisit": T(
        ("resolved",),
        "revisited",
        ("customer_service", "sales_rep"),
        ("satisfaction_score", "satisfaction", "revisit_note"),
        ("satisfaction_score", "satisfaction", "revisit_note"),
    ),
    "close": T(
        ("revisited",),
        "closed",
        ("customer_service", "archivist"),
        ("archive_location", "capa"),
        ("archive_location",),
    ),
    "reopen": T(
        ("revisited",), "investigated", ("customer_service", "quality_manager"), ("dispute_reason",)
    ),
}

# name -> (kind, enum values or (min, max), max_length)
FIELDS: dict[str, tuple[str, Any, int | None]] = {
    "customer_name": ("string", None, None),
    "contact_person": ("string", None, None),
    "phone": ("string", None, 40),
    "email": ("string", None, None),
    "address": ("text", None, 500),
    "channel": (
        "enum",
        ("phone", "fax", "letter", "email", "visit", "sales_rep", "dealer", "authority", "online"),
        None,
    ),
    "forwarded_by": (
        "enum",
        ("consumer_association", "regulator", "media", "lawyer", "police", "government"),
        None,
    ),
    "urgent": ("bool", None, None),
    "sla_profile": ("enum", ("standard", "service_firm", "lab"), None),
    "product_name": ("string", None, None),
    "product_model": ("string", None, None),
    "batch_no": ("string", None, None),
    "purchase_date": ("date", None, None),
    "quantity": ("integer", (0, None), None),
    "defective_quantity": ("integer", (0, None), None),
    "serial_number": ("string", None, None),
    "category": (
        "enum",
        ("product_quality", "service_behaviour", "staff_conduct", "non_quality", "other"),
        None,
    ),
    "description": ("text", None, None),
    "usage_scenario": ("text", None, None),
    "loss_description": ("text", None, None),
    "customer_demand": (
        "enum_list",
        ("repair", "replace", "return", "compensation", "onsite_visit", "apology", "explanation"),
        None,
    ),
    "claimed_amount": ("decimal", (0, None), None),
    "safety_issue": ("bool", None, None),
    "media_involved": ("bool", None, None),
    "lawyer_involved": ("bool", None, None),
    "police_involved": ("bool", None, None),
    "consumer_association": ("bool", None, None),
    "government_involved": ("bool", None, None),
    "multiple_batches": ("bool", None, None),
    "repeated_repairs": ("bool", None, None),
    "escalation_risk": ("bool", None, None),
    "person_complained_about": ("string", None, None),
    "response_note": ("text", None, None),
    "contact_note": ("text", None, None),
    "visit_note": ("text", None, None),
    "reinspection_result": ("text", None, None),
    "progress_note": ("text", None, None),
    "readback_confirmed": ("bool", None, None),
    "responsible_department": (
        "enum",
        (
            "quality",
            "technical",
            "production",
            "after_sales",
            "sales",
            "customer_service",
            "logistics",
        ),
        None,
    ),
    "handler": ("string", None, None),
    "rejection_reason": ("text", None, None),
    "special_team": ("text", None, None),
    "root_cause": (
        "enum",
        (
            "process",
            "raw_material",
            "inspection",
            "transport_storage",
            "customer_misuse",
            "design",
            "other",
        ),
        None,
    ),
    "responsibility": ("enum", ("company", "customer", "shared", "undetermined"), None),
    "investigation_report": ("text", None, None),
    "disposal_plan": ("text", None, None),
    "disposal_measures": (
        "enum_list",
        (
            "repair",
            "replace",
            "return",
            "compensation",
            "technical_improvement",
            "apology",
            "explanation",
        ),
        None,
    ),
    "compensation_amount": ("decimal", (0, None), None),
    "disposal_result": ("text", None, None),
    "customer_feedback": ("text", None, None),
    "dispute_reason": ("text", None, None),
    "satisfaction_score": ("integer", (0, 100), None),
    "satisfaction": ("enum", ("satisfied", "basically_satisfied", "dissatisfied"), None),
    "revisit_note": ("text", None, None),
    "capa": ("text", None, None),
    "archive_location": ("string", None, None),
}
#: Required on the complaint form.
FORM_REQUIRED = frozenset({"customer_name", "channel", "product_name", "category", "description"})
MAJOR_FLAGS = (
    "safety_issue",
    "multiple_batches",
    "repeated_repairs",
    "media_involved",
    "lawyer_involved",
    "police_involved",
    "consumer_association",
    "government_involved",
    "escalation_risk",
)


def blank(value: Any) -> bool:
    return value is None or (isinstance(value, str | tuple) and len(value) == 0)


def severity_of(f: Mapping[str, Any]) -> str:
    major = (
        (f.get("claimed_amount") is not None and f["claimed_amount"] >= 10000)
        or (f.get("compensation_amount") is not None and f["compensation_amount"] > 0)
        or "compensation" in (f.get("customer_demand") or ())
        or "compensation" in (f.get("disposal_measures") or ())
        or any(f.get(flag) is True for flag in MAJOR_FLAGS)
        or f.get("forwarded_by") is not None
    )
    return "major" if major else "general"


def needs_plan_approval(f: Mapping[str, Any]) -> bool:
    return (
        severity_of(f) == "major"
        or (f.get("compensation_amount") is not None and f["compensation_amount"] > 0)
        or "compensation" in (f.get("disposal_measures") or ())
    )


@dataclass
class ModelComplaint:
    number: str
    state: str
    fields: dict[str, Any]
    received_at: datetime
    updated_at: datetime
    version: int = 1
    # (trigger, actor id, from, to) per event; the submission has trigger None
    events: list[tuple[str | None, str, str | None, str]] = field(default_factory=list)
    times: list[datetime] = field(default_factory=list)

    @property
    def severity(self) -> str:
        return severity_of(self.fields)

    def last_seq(self, trigger: str) -> int | None:
        found = [i for i, ev in enumerate(self.events, start=1) if ev[0] == trigger]
        return found[-1] if found else None

    def last_time(self, trigger: str) -> datetime | None:
        seq = self.last_seq(trigger)
        return None if seq is None else self.times[seq - 1]

    def last_actor(self, trigger: str) -> str | None:
        found = [ev[1] for ev in self.events if ev[0] == trigger]
        return found[-1] if found else None

    def count(self, trigger: str) -> int:
        return sum(1 for ev in self.events if ev[0] == trigger)

    def entered_seq(self) -> int:
        return max(i for i, ev in enumerate(self.events, start=1) if ev[2] != ev[3])


def condition(trigger: str, c: ModelComplaint, f: Mapping[str, Any], now: datetime) -> bool:
    score, satisfaction = f.get("satisfaction_score"), f.get("satisfaction")
    if trigger == "record":
        return f.get("readback_confirmed") is True
    if trigger == "confirm":
        return f.get("handler") != f.get("person_complained_about")
    if trigger in ("name_special_team", "sign_reply"):
        return severity_of(f) == "major"
    if trigger == "submit_report":
        return severity_of(f) == "general" or not blank(f.get("special_team"))
    if trigger == "approve_plan":
        return c.count("propose_plan") >= 1
    if trigger == "revisit":  # not before day 5 after the feedback (standard profile)
        fed_back = c.last_time("feed_back")
        return f.get("sla_profile") in ("service_firm", "lab") or (
            fed_back is not None and now - fed_back >= timedelta(days=5)
        )
    if trigger == "record_reinspection":
        return c.count("receive_sample") >= 1
    if trigger == "close":
        return score is not None and score >= 85 and satisfaction != "dissatisfied"
    if trigger == "reopen":
        return (score is not None and score < 85) or satisfaction == "dissatisfied"
    return True


def approved(trigger: str, c: ModelComplaint, f: Mapping[str, Any]) -> bool:
    if trigger == "resolve" and needs_plan_approval(f):
        approval = c.last_seq("approve_plan")
        return approval is not None and approval > (c.last_seq("propose_plan") or 0)
    if trigger == "feed_back" and severity_of(f) == "major":
        signed = c.last_seq("sign_reply")
        return signed is not None and signed > c.entered_seq()
    if trigger == "revisit":  # the latest resolution's result was fed back
        fed_back = c.last_seq("feed_back")
        return fed_back is not None and fed_back > (c.last_seq("resolve") or 0)
    return True


INVALID = object()


def main_line(c: ModelComplaint) -> tuple[str, ...]:
    """Where the procedure would go next (the generator aims here most of the time, or
    complaints would rarely get far). Guidance only: the model decides the outcome."""
    f, state = c.fields, c.state
    since_entered = [ev[0] for ev in c.events[c.entered_seq() :]]
    if state == "received":
        return ("record",)
    if state == "recorded":
        return ("confirm",)
    if state == "confirmed":
        needs_team = severity_of(f) == "major" and blank(f.get("special_team"))
        return ("name_special_team",) if needs_team else ("submit_report",)
    if state == "investigated":
        if "propose_plan" not in since_entered:
            return ("propose_plan",)
        if needs_plan_approval(f) and not approved("resolve", c, f):
            return ("approve_plan", "approve_plan", "resolve")  # and sometimes too early
        return ("resolve",)
    if state == "resolved":
        if severity_of(f) == "major" and "sign_reply" not in since_entered:
            return ("sign_reply", "sign_reply", "feed_back")  # and sometimes too early
        return ("revisit",) if "feed_back" in since_entered else ("feed_back",)
    if state == "revisited":
        satisfied = condition("close", c, f, c.updated_at)
        return ("close",) if satisfied else ("reopen",)
    return ()


def expected_outcome(
    c: ModelComplaint, trigger: str, actor: Actor, data: Mapping[str, Any], now: datetime
) -> tuple[type[ComplaintflowError] | None, dict[str, Any]]:
    """The refusal the rules demand (``None``: accepted) and the fields afterwards.

    ``data`` maps names to normalised values, or ``INVALID`` for values the strategy drew
    as invalid."""
    t = TRANSITIONS.get(trigger)
    if t is None:
        return UnknownTrigger, c.fields
    if c.state not in t.sources:
        return TriggerNotAllowed, c.fields
    if not set(actor.roles) & set(t.roles):
        return RoleNotAllowed, c.fields
    if c.fields.get("person_complained_about") == actor.id:
        return SeparationOfDuties, c.fields
    if trigger == "approve_plan" and c.last_actor("propose_plan") == actor.id:
        return SeparationOfDuties, c.fields
    after = dict(c.fields)
    bad = False
    for name, value in data.items():
        # only a transition's fields are settable; ``requires`` demands a value, grants none;
        # a field the form requires can be changed but not cleared
        cleared_required = value is None and name in FORM_REQUIRED
        if name not in FIELDS or name not in t.fields or value is INVALID or cleared_required:
            bad = True
        else:
            after[name] = value
    if bad or any(blank(after.get(name)) for name in t.requires):
        return MissingFields, c.fields
    after = {k: v for k, v in after.items() if v is not None}
    if not condition(trigger, c, after, now):
        return ConditionFailed, c.fields
    if not approved(trigger, c, after):
        return ApprovalMissing, c.fields
    return None, after


# -- the cast: every role, and the person complained about ---------------------------------

PERSON_COMPLAINED_ABOUT = Actor(
    "zhao.pc",
    [
        "customer_service",
        "quality",
        "after_sales",
        "department_manager",
        "general_manager",
        "top_management",
        "sales_rep",
        "archivist",
        "quality_manager",
    ],
)
CAST = (
    Actor("emp.a", ["employee"]),
    Actor("chen.rep", ["sales_rep"]),
    Actor("li.na", ["customer_service"]),
    Actor("wu.cs", ["customer_service"]),
    Actor("gao.dm", ["department_manager"]),
    Actor("wang.qa", ["quality"]),
    Actor("sun.tech", ["technical"]),
    Actor("fan.prod", ["production"]),
    Actor("zhou.svc", ["after_sales"]),
    Actor("tang.vp", ["marketing_vp"]),
    Actor("gm.liu", ["general_manager"]),
    Actor("liu.deputy", ["general_manager", "department_manager"]),
    Actor("qm.wu", ["quality_manager"]),
    Actor("boss.ma", ["top_management"]),
    Actor("he.arch", ["archivist"]),
    Actor("audit.xu", ["auditor"]),
    PERSON_COMPLAINED_ABOUT,
)
READER = Actor("reader.cs", ["customer_service"])  # may read personal data; never acts
ACTOR_IDS = tuple(a.id for a in CAST)

# -- data with its validity known ------------------------------------------------------------

Drawn = tuple[Any, Any]  # (raw value given to the engine, normalised value or INVALID)


@functools.cache
def _valid(name: str) -> st.SearchStrategy[Drawn]:
    kind, extra, _ = FIELDS[name]
    if name in ("handler", "person_complained_about"):
        return st.sampled_from(ACTOR_IDS).map(lambda v: (v, v))
    if name == "satisfaction_score":
        return st.one_of(st.sampled_from([92, 85, 84, 70]), st.integers(0, 100)).map(
            lambda v: (v, v)
        )
    if name == "readback_confirmed":
        return st.sampled_from([True, True, True, False]).map(lambda v: (v, v))
    if kind in ("string", "text"):
        words = ["甲方", "abc", "B-7"] + (["两行\n说明"] if kind == "text" else [])
        # the empty string is valid, but blank for a transition requiring the field
        return st.sampled_from([*words * 4, ""]).map(lambda v: (v, v))
    if kind == "integer":
        low = extra[0]
        return st.integers(low, low + 500).flatmap(lambda v: st.sampled_from([(v, v), (str(v), v)]))
    if kind == "decimal":
        return st.sampled_from([0, 300, 9999, 10000, 50000]).flatmap(
            lambda v: st.sampled_from([(v, Decimal(v)), (f"{v}.00", Decimal(v))])
        )
    if kind == "date":
        return st.dates(date(2024, 1, 1), date(2026, 3, 1)).flatmap(
            lambda d: st.sampled_from([(d, d), (d.isoformat(), d)])
        )
    if kind == "bool":
        return st.booleans().map(lambda v: (v, v))
    if kind == "enum":
        return st.sampled_from(extra).map(lambda v: (v, v))
    assert kind == "enum_list"
    # the empty list is valid, but blank for a transition requiring the field
    lists = st.lists(st.sampled_from(extra), unique=True, min_size=1, max_size=3)
    return (
        st.integers(0, 9)
        .flatmap(lambda n: st.just([]) if n == 9 else lists)
        .map(lambda v: (v, tuple(v)))
    )


@functools.cache
def _invalid(name: str) -> st.SearchStrategy[Drawn]:
    kind, extra, max_length = FIELDS[name]
    bad: list[Any]
    if kind == "string":
        bad = [12345, "两\n行", "x" * ((max_length or 200) + 1)]
    elif kind == "text":
        bad = [12345, ["list"]]
    elif kind == "integer":
        low, high = extra
        bad = ["abc", True, 1.5, low - 1] + ([high + 1] if high is not None else [])
    elif kind == "decimal":
        bad = ["abc", True, "-1", "NaN"]
    elif kind == "date":
        bad = ["2026-13-40", "yesterday", datetime(2026, 1, 1, tzinfo=UTC)]
    elif kind == "bool":
        bad = ["yes", 1]
    elif kind == "enum":
        bad = ["bogus", 3]
    else:
        bad = [["bogus"], "repair", [extra[0], extra[0]]]
    return st.sampled_from(bad).map(lambda v: (v, INVALID))


@functools.cache
def data_for(trigger: str) -> st.SearchStrategy[dict[str, Drawn]]:
    """Data for ``trigger``: mostly valid values of its fields, sometimes invalid or missing
    values, sometimes a field it may not set."""
    t = TRANSITIONS.get(trigger)
    own = t.fields if t else ()
    required = set(t.requires) if t else set()

    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Drawn]:
        out: dict[str, Drawn] = {}
        for name in own:
            if draw(st.integers(0, 99)) < (95 if name in required else 35):
                out[name] = draw(_valid(name))
        spoil = draw(st.integers(0, 19))
        if spoil == 19 and own:  # one invalid value
            name = draw(st.sampled_from(own))
            out[name] = draw(_invalid(name))
        elif spoil == 18 and own:  # one value cleared
            name = draw(st.sampled_from(own))
            out[name] = (None, None)
        elif spoil == 17:
            # a field this transition may not set (a field it only requires, among others)
            foreign = draw(
                st.sampled_from([*sorted(n for n in FIELDS if n not in own), "no_such_field"])
            )
            out[foreign] = ("x", INVALID)
        return out

    return build()


def _mostly_none(*values: Any, nones: int = 3) -> st.SearchStrategy[Any]:
    return st.sampled_from([None] * nones + list(values))


# ``complaint_fields`` drops the None values: about half the complaints are general
SUBMISSIONS = st.fixed_dictionaries(
    {
        "claimed_amount": _mostly_none("9999.99", "10000", "50000", nones=6),
        "media_involved": _mostly_none(False, True, nones=8),
        "forwarded_by": _mostly_none("media", "consumer_association", nones=14),
        "customer_demand": _mostly_none(["repair"], ["compensation", "apology"], [], nones=2),
        "safety_issue": _mostly_none(False, True, nones=8),
        "urgent": _mostly_none(False, True),
        "sla_profile": _mostly_none("standard", "service_firm", "lab"),
        "person_complained_about": _mostly_none(
            PERSON_COMPLAINED_ABOUT.id, "li.na", "wang.qa", "gm.liu", nones=4
        ),
    }
)


def normalise_submission(fields: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in fields.items():
        kind = FIELDS[name][0]
        out[name] = (
            Decimal(value) if kind == "decimal" else tuple(value) if kind == "enum_list" else value
        )
    return out


# -- the state machine -------------------------------------------------------------------------


class EngineVsModel(RuleBasedStateMachine):
    """Subclassed per backend by ``machine_for``; ``make_url`` returns (url, cleanup)."""

    make_url: Callable[[], tuple[str, Callable[[], None]]]

    def __init__(self) -> None:
        super().__init__()
        self.url, self._cleanup = self.make_url()
        self.clock = SimulatedClock(START)
        self.engine = Engine.open(self.url, rules=RULES, clock=self.clock)
        self.model: dict[str, ModelComplaint] = {}
        self.next_seq = 1
        self.touched: set[str] = set()  # complaints a step may have changed
        self.wrote = False  # whether a step stored something (then the chains are verified)
        self.fires = 0  # since the engine was (re)opened

    def teardown(self) -> None:
        try:
            self.check(self.model)
        finally:
            try:
                self.engine.close()
            finally:
                self._cleanup()

    def _tick(self, minutes: int) -> None:
        self.clock.advance(timedelta(minutes=minutes))

    # -- rules -------------------------------------------------------------------------------

    @precondition(lambda self: len(self.model) < 2)
    @rule(
        fields=SUBMISSIONS,
        submitter=st.sampled_from(CAST),
        drop_required=st.integers(0, 14),
        minutes=st.integers(1, 90),
    )
    def submit(
        self, fields: dict[str, Any], submitter: Actor, drop_required: int, minutes: int
    ) -> None:
        self._tick(minutes)
        given = complaint_fields(**fields)
        if drop_required == 14:  # an incomplete form is refused and uses no number
            del given["category"]
            with pytest.raises(InvalidInput):
                self.engine.submit(given, submitter)
            return
        c = self.engine.submit(given, submitter)
        year = self.clock().astimezone(SHANGHAI).year
        assert c.number == f"TS-{year}-{self.next_seq:06d}"
        self.next_seq += 1
        now = self.clock()
        m = ModelComplaint(c.number, "received", normalise_submission(given), now, now)
        m.events.append((None, submitter.id, None, "received"))
        m.times.append(now)
        self.model[c.number] = m
        self.touched.add(c.number)
        self.wrote = True
        assert (c.state, c.version, c.severity) == ("received", 1, m.severity)

    @precondition(lambda self: bool(self.model))
    @rule(
        data=st.data(), wait=st.integers(0, 9), minutes=st.integers(1, 600), days=st.integers(1, 6)
    )
    def fire(self, data: st.DataObject, wait: int, minutes: int, days: int) -> None:
        # a little time between steps, and now and then days (the revisit waits 5 days)
        self._tick(days * 24 * 60 if wait == 9 else minutes)
        self.fires += 1
        if data.draw(st.integers(0, 29), label="unknown number") == 29:
            with pytest.raises(NotFound):
                self.engine.fire("TS-2026-999999", "record", CAST[2], {"readback_confirmed": True})
            return
        # mostly the oldest open complaint, so that some get all the way through
        numbers = sorted(self.model)
        still_open = [n for n in numbers if self.model[n].state != "closed"] or numbers
        pick = data.draw(st.integers(0, 9), label="pick")
        number = (
            still_open[0]
            if pick < 7
            else data.draw(st.sampled_from(still_open if pick < 9 else numbers), label="number")
        )
        m = self.model[number]
        # mostly aim at a way out of the current state, or else the complaint never gets far
        aim = data.draw(st.integers(0, 9), label="aim")
        here = sorted(t for t, d in TRANSITIONS.items() if m.state in d.sources)
        if aim < 6 and main_line(m):
            trigger = data.draw(st.sampled_from(main_line(m)), label="trigger")
            if trigger == "revisit" and data.draw(st.integers(0, 2), label="patience") < 2:
                self._tick(5 * 24 * 60)  # the revisit comes 5 days after the feedback
        elif aim < 9 and here:
            trigger = data.draw(st.sampled_from(here), label="trigger")
        else:
            trigger = data.draw(
                st.sampled_from([*RULES.triggers, "no_such_trigger"]), label="trigger"
            )
        t = TRANSITIONS.get(trigger)
        fitting = [
            a
            for a in CAST
            if t and set(a.roles) & set(t.roles) and a.id != m.fields.get("person_complained_about")
        ]
        if fitting and data.draw(st.integers(0, 9), label="cast") < 9:
            actor = data.draw(st.sampled_from(fitting), label="actor")
        else:
            actor = data.draw(st.sampled_from(CAST), label="actor")
        drawn = data.draw(data_for(trigger), label="data")
        version_choice = data.draw(st.integers(0, 29), label="expected_version")
        expected_version = (
            None if version_choice < 22 else m.version if version_choice < 29 else m.version - 1
        )

        if expected_version is not None and expected_version < 1:  # before the submission
            error: type[ComplaintflowError] | None = InvalidInput
            after = m.fields
        elif expected_version is not None and expected_version != m.version:
            error = ConcurrentUpdate
            after = m.fields
        else:
            error, after = expected_outcome(
                m, trigger, actor, {k: v[1] for k, v in drawn.items()}, self.clock()
            )
        raw = {k: v[0] for k, v in drawn.items()}
        self.touched.add(number)
        try:
            c = self.engine.fire(number, trigger, actor, raw, expected_version)
        except ComplaintflowError as exc:
            assert error is not None, f"engine refused, model accepts: {exc!r}"
            assert type(exc) is error, f"engine: {exc!r}; model: {error.__name__}"
            event(f"refused {trigger}: {error.__name__}")
            return
        event(f"accepted: {trigger}")
        self.wrote = True
        assert error is None, f"engine accepted {trigger} by {actor.id}; model: {error}"
        to = TRANSITIONS[trigger].to or m.state
        m.events.append((trigger, actor.id, m.state, to))
        m.times.append(self.clock())
        m.state, m.version, m.fields, m.updated_at = to, m.version + 1, after, self.clock()
        assert (c.state, c.version, c.severity) == (m.state, m.version, m.severity)

    @precondition(lambda self: self.fires >= 10)
    @rule()
    def reopen_engine(self) -> None:
        self.fires = 0
        before = {
            n: (self.engine.get(n, READER), self.engine.history(n, READER)) for n in self.model
        }
        self.engine.close()
        self.engine = Engine.open(self.url, rules=RULES, clock=self.clock)
        after = {
            n: (self.engine.get(n, READER), self.engine.history(n, READER)) for n in self.model
        }
        assert after == before
        self.wrote = True  # verify the chains through the new engine too

    # -- what must hold after every step -------------------------------------------------------

    @invariant()
    def engine_equals_model(self) -> None:
        # every complaint a step touched, refused or not; all of them at the end. A refused
        # step that stored something anyway shows up in its complaint's version and history.
        self.check(self.touched, verify=self.wrote)
        self.touched.clear()
        self.wrote = False

    def check(self, numbers: Iterable[str], *, verify: bool = True) -> None:
        for number in numbers:
            m = self.model[number]
            c = self.engine.get(number, READER)
            assert (c.state, c.version, c.severity) == (m.state, m.version, m.severity)
            assert dict(c.fields) == m.fields
            assert c.updated_at == m.updated_at and c.received_at == m.received_at
            department = m.fields.get("responsible_department")
            assert (c.department, c.handler) == (department, m.fields.get("handler"))
            history = self.engine.history(number, READER)
            assert len(history) == m.version
            assert [
                (ev.trigger, ev.actor_id, ev.from_state, ev.to_state) for ev in history
            ] == m.events
            assert [ev.occurred_at for ev in history] == m.times
            # replay (history and pinned rules only) equals the live complaint
            replayed = self.engine.replay(number, actor=READER)
            assert (replayed.state, replayed.version, replayed.severity) == (
                c.state, c.version, c.severity)
            assert replayed.fields == {k: to_json(v) for k, v in c.fields.items()}
        if numbers is self.model:
            assert self.engine.find(limit=10).total == len(self.model)
        if not verify:
            return
        report = self.engine.verify()
        assert report.ok, report.findings
        assert report.complaints == len(self.model)
        assert report.events == sum(m.version for m in self.model.values())


RULES: RuleSet = load_rules(None)

SETTINGS = settings(
    max_examples=EXAMPLES,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    phases=tuple(Phase) if SHRINK else tuple(p for p in Phase if p is not Phase.shrink),
)


def machine_for(make_url: Callable[[], tuple[str, Callable[[], None]]]) -> type[EngineVsModel]:
    return type("EngineVsModelOn", (EngineVsModel,), {"make_url": staticmethod(make_url)})


def _sqlite_url() -> tuple[str, Callable[[], None]]:
    folder = tempfile.mkdtemp(prefix="cf-model-")
    return f"sqlite:///{folder}/complaints.db", lambda: shutil.rmtree(folder, True)


def test_model_restates_the_default_rule_file() -> None:
    """The model above is the default rule file's; if the file changes, so must the model."""
    assert set(RULES.triggers) == set(TRANSITIONS)
    for trigger, mine in TRANSITIONS.items():
        theirs = RULES.transitions_by_trigger[trigger]
        assert {s for t in theirs for s in t.source} == set(mine.sources), trigger
        for t in theirs:
            assert t.to == (mine.to or t.source[0]), trigger
            assert set(t.roles) == set(mine.roles), trigger
            assert (set(t.fields), set(t.requires)) == (set(mine.fields), set(mine.requires))
    conditions = {t.trigger for t in RULES.transitions if t.condition is not None}
    assert conditions == {
        "record",
        "confirm",
        "name_special_team",
        "submit_report",
        "approve_plan",
        "sign_reply",
        "revisit",
        "close",
        "reopen",
        "record_reinspection",
    }  # each restated in condition()
    approvals = {
        t.trigger: (t.approval.by, t.approval.since)
        for t in RULES.transitions
        if t.approval is not None
    }
    assert approvals == {
        "resolve": ("approve_plan", "propose_plan"),
        "feed_back": ("sign_reply", None),
        "revisit": ("feed_back", "resolve"),
    }  # restated in approved()
    assert set(RULES.fields) == set(FIELDS)
    assert {r for a in CAST for r in a.roles} == set(RULES.roles)


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def test_engine_behaves_like_the_model(backend: str, request: pytest.FixtureRequest) -> None:
    if backend == "sqlite":
        make_url = _sqlite_url
    else:
        base = request.getfixturevalue("pg_base_url")

        def make_url() -> tuple[str, Callable[[], None]]:
            return new_pg_schema_url(base)

    run_state_machine_as_test(machine_for(make_url), settings=SETTINGS)
