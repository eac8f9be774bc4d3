"""A refused condition says which part failed and with what values: for every condition of
the shipped rule file, under random fields, facts and actors, ``explain`` states what a false
condition requires and the values it read."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from complaintflow import Actor, load_rules
from complaintflow.rules.model import Compare, Condition, NotOf
from complaintflow.rules.timing import build_calendars
from complaintflow.rules.values import coerce, type_of_field
from complaintflow.states.conditions import Facts, Scope, compile_condition, explain

RULES = load_rules()
CONDITIONS: list[tuple[str, Condition]] = [
    (f"{t.trigger}->{t.to}", t.condition) for t in RULES.transitions if t.condition is not None
] + [
    (f"{t.trigger}->{t.to} approval", t.approval.when)
    for t in RULES.transitions if t.approval is not None and t.approval.when is not None
]
NOW = datetime(2026, 3, 20, 2, 0, tzinfo=UTC)
NAMES = ["wang.qa", "li.na", "gm.liu"]


def value_of(fdef: Any) -> st.SearchStrategy[Any]:
    vtype = type_of_field(fdef)
    kind = fdef.type
    raw: st.SearchStrategy[Any]
    if kind in ("string", "text"):
        raw = st.sampled_from([*NAMES, "x", "电机"])
    elif kind == "integer":
        raw = st.integers(0, 120)
    elif kind == "decimal":
        raw = st.decimals(0, 100_000, places=2).map(str)
    elif kind == "bool":
        raw = st.booleans()
    elif kind == "enum":
        raw = st.sampled_from(list(fdef.values))
    elif kind == "enum_list":
        raw = st.lists(st.sampled_from(list(fdef.values)), unique=True)
    else:
        return st.none()
    return st.one_of(st.none(), raw.map(lambda v: coerce(vtype, v)))


FIELDS = st.fixed_dictionaries({f.id: value_of(f) for f in RULES.definition.fields})
TRIGGERS = list(RULES.triggers)
FACTS = st.builds(
    Facts,
    last_actor=st.dictionaries(st.sampled_from(TRIGGERS), st.sampled_from(NAMES)),
    count=st.dictionaries(st.sampled_from(TRIGGERS), st.integers(0, 3)),
    last_time=st.dictionaries(st.sampled_from(TRIGGERS),
                              st.integers(0, 20 * 24).map(lambda h: NOW - timedelta(hours=h))),
)
ACTORS = st.builds(Actor, st.sampled_from(NAMES),
                   st.lists(st.sampled_from(list(RULES.roles)), min_size=1, unique=True))
CALENDARS = build_calendars(RULES.definition)


@settings(max_examples=300, deadline=None)
@given(index=st.integers(0, len(CONDITIONS) - 1), fields=FIELDS, facts=FACTS, actor=ACTORS,
       severity=st.sampled_from(list(RULES.severity_levels)))
def test_every_false_condition_is_explained(
        index: int, fields: dict[str, Any], facts: Facts, actor: Actor, severity: str) -> None:
    _, cond = CONDITIONS[index]
    scope = Scope({**fields, "severity": severity}, actor, facts, NOW, CALENDARS,
                  RULES.definition.calendar)
    assume(not compile_condition(cond, RULES)(scope))
    said = explain(cond, RULES, scope)
    assert "None" not in said and "must" in said  # a requirement, stated in words
    for name in sorted(RULES.fields):
        if f"{name} (" in said:  # a field named is shown with the value it has
            shown = said.split(f"{name} (", 1)[1]
            assert shown.startswith("not set" if fields.get(name) is None else "")


def scope_with(**fields: Any) -> Scope:
    return Scope(fields, Actor("li.na", ("customer_service",)), Facts(), NOW, CALENDARS,
                 RULES.definition.calendar)


def condition(trigger: str) -> Condition:
    found = next(t.condition for t in RULES.transitions if t.trigger == trigger)
    assert found is not None
    return found


def test_the_words_name_each_failing_comparison_and_its_values() -> None:
    assert explain(condition("confirm"), RULES, scope_with(
        handler="wang.qa", person_complained_about="wang.qa")) == (
        "handler ('wang.qa') must not be person_complained_about ('wang.qa')")
    assert explain(condition("record"), RULES, scope_with()) == (
        "readback_confirmed (not set) must be True")
    # all: the first part that fails
    assert explain(condition("close"), RULES, scope_with(
        satisfaction_score=90, satisfaction="dissatisfied")) == (
        "satisfaction ('dissatisfied') must not be 'dissatisfied'")
    # any: every part, since none holds
    said = explain(condition("submit_report"), RULES, scope_with(severity="major"))
    assert said == ("none of these holds: severity ('major') must be 'general'; "
                    "special_team (not set) must be set")


def test_elapsed_time_is_shown_rounded_and_negations_say_what_holds() -> None:
    facts = Facts(last_time={"feed_back": NOW - timedelta(hours=50)})
    scope = Scope({"sla_profile": "manufacturer"}, Actor("li.na", ("customer_service",)),
                  facts, NOW, CALENDARS, RULES.definition.calendar)
    said = explain(condition("revisit"), RULES, scope)
    assert "days since 'feed_back' (2.08) must be at least 5" in said
    cond = NotOf.model_validate({"not": {"actor": "roles", "contains": "customer_service"}})
    assert explain(cond, RULES, scope_with()) == (
        "this must not hold, and does: the actor's roles (['customer_service']) contains "
        "'customer_service'")


def test_a_rounded_value_never_seems_to_meet_the_bound_it_failed() -> None:
    hours = Compare.model_validate({"elapsed_since": "feed_back", "unit": "hours", "ge": 2})
    facts = Facts(last_time={"feed_back": NOW - timedelta(seconds=7199)})  # 1.9997 hours
    scope = Scope({}, Actor("li.na", ("customer_service",)), facts, NOW, CALENDARS,
                  RULES.definition.calendar)
    assert explain(hours, RULES, scope) == "hours since 'feed_back' (1.99) must be at least 2"
    at_most = Compare.model_validate({"elapsed_since": "feed_back", "unit": "hours", "le": 1})
    facts = Facts(last_time={"feed_back": NOW - timedelta(seconds=3601)})  # 1.0003 hours
    scope = Scope({}, Actor("li.na", ("customer_service",)), facts, NOW, CALENDARS,
                  RULES.definition.calendar)
    assert explain(at_most, RULES, scope) == "hours since 'feed_back' (1.01) must be at most 1"
