"""The shipped default rule file expresses the procedure (shared/procedure.md, sections 1-4)."""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import pytest

from complaintflow.actor import Actor
from complaintflow.rules.loader import default_rules_text, json_schema, load_rules
from complaintflow.rules.model import (
    AllOf,
    AnyOf,
    Compare,
    Condition,
    RuleFile,
    TransitionDef,
)
from complaintflow.rules.ruleset import RuleSet
from complaintflow.rules.source import read_yaml
from complaintflow.states.conditions import Facts, Scope, compile_condition, severity_function

CJK = re.compile(r"[\u4e00-\u9fff]")
LIFECYCLE = {
    "received": "接获",
    "recorded": "登记",
    "confirmed": "确认",
    "investigated": "调查",
    "resolved": "处",
    "revisited": "回访",
    "closed": "结案",
}
# procedure section 4, one Chinese term each
PROCEDURE_ROLES = {
    "sales_rep": "销售",
    "customer_service": "客户部",
    "department_manager": "部门经理",
    "quality": "质量部",
    "technical": "技术部",
    "production": "生产部",
    "after_sales": "售后",
    "marketing_vp": "营销副总",
    "general_manager": "总经理",
    "quality_manager": "质量负责人",
    "top_management": "最高管理者",
    "archivist": "资料管理员",
    "auditor": "审核",
}


@pytest.fixture(scope="module")
def rules() -> RuleSet:
    return load_rules()


def only(rules: RuleSet, trigger: str) -> TransitionDef:
    (transition,) = rules.transitions_by_trigger[trigger]
    return transition


def holds(rules: RuleSet, cond: Condition | None, fields: Mapping[str, Any]) -> bool:
    assert cond is not None
    scope = Scope(dict(fields), Actor("tester", ()), Facts())
    return compile_condition(cond, rules)(scope)


# -- lifecycle -----------------------------------------------------------------------------


def test_the_default_file_loads(rules: RuleSet) -> None:
    assert rules.name
    assert rules.source.endswith("default.yaml")
    assert len(rules.version) == 64
    assert rules.text == default_rules_text()
    assert rules.initial == "received"


def test_exactly_the_seven_states_of_the_lifecycle(rules: RuleSet) -> None:
    assert list(rules.states) == list(LIFECYCLE)
    for state_id, term in LIFECYCLE.items():
        label = rules.states[state_id].label
        assert term in label.zh, (state_id, label.zh)
        assert label.en


def test_closed_is_the_only_final_state(rules: RuleSet) -> None:
    assert rules.final_states == {"closed"}
    assert not [t for t in rules.transitions if "closed" in t.source]


def test_the_main_path_runs_through_every_state(rules: RuleSet) -> None:
    path = ["record", "confirm", "submit_report", "resolve", "revisit", "close"]
    state = rules.initial
    for trigger in path:
        transition = only(rules, trigger)
        assert state in transition.source
        state = transition.to
    assert state == "closed"


# -- roles ---------------------------------------------------------------------------------


def test_the_roles_of_procedure_section_4(rules: RuleSet) -> None:
    for role_id, term in PROCEDURE_ROLES.items():
        assert role_id in rules.roles, role_id
        assert term in rules.roles[role_id].label.zh, (role_id, rules.roles[role_id].label.zh)
    for role in rules.roles.values():
        assert CJK.search(role.label.zh), role.id


def test_anyone_may_receive_customer_service_registers(rules: RuleSet) -> None:
    assert rules.definition.submit.roles == "*"
    assert only(rules, "record").roles == ["customer_service"]


def test_contact_data_is_personal(rules: RuleSet) -> None:
    assert {"contact_person", "phone", "email", "address"} <= rules.personal_fields
    assert "customer_service" in rules.personal_readers
    assert "auditor" not in rules.personal_readers


# -- approvals, recusal, satisfaction ------------------------------------------------------


def test_gm_approves_the_plan_after_it_was_proposed(rules: RuleSet) -> None:
    approve = only(rules, "approve_plan")
    assert approve.roles == ["general_manager"]
    resolve = only(rules, "resolve")
    assert resolve.approval is not None
    assert resolve.approval.by == "approve_plan"
    assert resolve.approval.since == "propose_plan"


@pytest.mark.parametrize(
    ("fields", "needed"),
    [
        ({"severity": "general"}, False),
        (
            {
                "severity": "general",
                "compensation_amount": Decimal(0),
                "disposal_measures": ("repair",),
            },
            False,
        ),
        ({"severity": "major"}, True),
        ({"severity": "general", "compensation_amount": Decimal("500")}, True),
        ({"severity": "general", "disposal_measures": ("replace", "compensation")}, True),
    ],
)
def test_gm_approval_needed_on_resolve_when_major_or_compensation(
    rules: RuleSet, fields: dict[str, Any], needed: bool
) -> None:
    approval = only(rules, "resolve").approval
    assert approval is not None
    assert holds(rules, approval.when, fields) is needed


def test_whoever_proposed_the_plan_may_not_approve_it(rules: RuleSet) -> None:
    rules_for = rules.separation_rules_for("approve_plan")
    assert any(r.not_actor_of == ["propose_plan"] for r in rules_for)


def test_the_person_complained_about_is_recused_from_everything(rules: RuleSet) -> None:
    recusal = {r.id: r for r in rules.definition.separation_of_duties}["recusal"]
    assert recusal.triggers == "*"
    assert recusal.not_field == ["person_complained_about"]
    assert "回避" in recusal.reason
    for trigger in rules.triggers:
        assert recusal in rules.separation_rules_for(trigger)
    assert rules.fields["person_complained_about"].type == "string"


@pytest.mark.parametrize(
    ("score", "satisfaction", "closes"),
    [
        (85, "satisfied", True),
        (100, "basically_satisfied", True),
        (84, "satisfied", False),
        (95, "dissatisfied", False),
        (None, "satisfied", False),
    ],
)
def test_close_needs_score_85_and_no_dissatisfaction(
    rules: RuleSet, score: int | None, satisfaction: str, closes: bool
) -> None:
    close = only(rules, "close")
    assert close.source == ["revisited"] and close.to == "closed"
    fields = {"satisfaction_score": score, "satisfaction": satisfaction}
    assert holds(rules, close.condition, fields) is closes


def test_close_condition_is_written_as_in_the_procedure(rules: RuleSet) -> None:
    cond = only(rules, "close").condition
    assert isinstance(cond, AllOf)
    assert Compare(field="satisfaction_score", ge=85) in cond.all
    assert Compare(field="satisfaction", ne="dissatisfied") in cond.all


@pytest.mark.parametrize(
    ("score", "satisfaction"),
    [
        (84, "satisfied"),
        (95, "dissatisfied"),
        (40, "basically_satisfied"),
    ],
)
def test_an_unsatisfied_customer_reopens_into_investigation(
    rules: RuleSet, score: int, satisfaction: str
) -> None:
    reopen = only(rules, "reopen")
    assert reopen.source == ["revisited"]
    assert reopen.to == "investigated"
    fields = {"satisfaction_score": score, "satisfaction": satisfaction}
    assert holds(rules, reopen.condition, fields)
    assert not holds(rules, only(rules, "close").condition, fields)


def test_reopen_and_close_exclude_each_other(rules: RuleSet) -> None:
    fields = {"satisfaction_score": 85, "satisfaction": "satisfied"}
    assert not holds(rules, only(rules, "reopen").condition, fields)
    assert isinstance(only(rules, "reopen").condition, AnyOf)


def test_a_disputed_result_goes_back_to_investigation(rules: RuleSet) -> None:
    dispute = only(rules, "dispute")
    assert dispute.source == ["resolved"]
    assert dispute.to == "investigated"
    assert dispute.requires == ["dispute_reason"]


def test_handler_may_not_be_the_person_complained_about(rules: RuleSet) -> None:
    confirm = only(rules, "confirm")
    assert {"responsible_department", "handler"} <= set(confirm.requires)
    assert not holds(
        rules, confirm.condition, {"handler": "wang.qa", "person_complained_about": "wang.qa"}
    )
    assert holds(
        rules, confirm.condition, {"handler": "wang.qa", "person_complained_about": "chen.rep"}
    )


# -- classification ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "level"),
    [
        ({}, "general"),
        ({"claimed_amount": Decimal("9999.99")}, "general"),
        ({"claimed_amount": Decimal("10000")}, "major"),
        ({"customer_demand": ("repair", "compensation")}, "major"),
        ({"safety_issue": True}, "major"),
        ({"safety_issue": False}, "general"),
        ({"media_involved": True}, "major"),
        ({"forwarded_by": "consumer_association"}, "major"),
    ],
)
def test_severity_general_or_major(rules: RuleSet, fields: dict[str, Any], level: str) -> None:
    assert rules.severity_levels == ("general", "major")
    assert severity_function(rules)(fields, None) == level


# -- JSON Schema ---------------------------------------------------------------------------

_ANNOTATIONS = {
    "title",
    "description",
    "default",
    "examples",
    "format",
    "deprecated",
    "$schema",
    "$defs",
    "discriminator",
}
_TYPES: dict[str, Any] = {
    "object": dict,
    "array": list,
    "string": str,
    "boolean": bool,
    "null": type(None),
    "integer": int,
    "number": (int, float),
}


def schema_errors(
    schema: Mapping[str, Any], value: Any, root: Mapping[str, Any], where: str = ""
) -> list[str]:
    """A small draft 2020-12 validator for the keywords pydantic generates (used when the
    jsonschema package is not installed). Unknown keywords fail loudly."""
    errors: list[str] = []
    for key, rule in schema.items():
        if key in _ANNOTATIONS:
            continue
        if key == "$ref":
            assert rule.startswith("#/$defs/"), rule
            errors += schema_errors(
                root["$defs"][rule.removeprefix("#/$defs/")], value, root, where
            )
        elif key in ("anyOf", "oneOf"):
            passing = [s for s in rule if not schema_errors(s, value, root, where)]
            if not passing or (key == "oneOf" and len(passing) > 1):
                errors.append(f"{where}: {len(passing)} of the {key} alternatives match")
        elif key == "allOf":
            for sub in rule:
                errors += schema_errors(sub, value, root, where)
        elif key == "type":
            kinds = rule if isinstance(rule, list) else [rule]
            ok = any(
                isinstance(value, _TYPES[k])
                and not (k in ("integer", "number") and isinstance(value, bool))
                for k in kinds
            )
            if not ok:
                errors.append(f"{where}: not of type {rule}")
        elif key == "const":
            if value != rule or type(value) is not type(rule):
                errors.append(f"{where}: not {rule!r}")
        elif key == "enum":
            if value not in rule:
                errors.append(f"{where}: not one of {rule}")
        elif key == "properties":
            if isinstance(value, dict):
                for name, sub in rule.items():
                    if name in value:
                        errors += schema_errors(sub, value[name], root, f"{where}.{name}")
        elif key == "required":
            if isinstance(value, dict):
                errors += [f"{where}: {name} missing" for name in rule if name not in value]
        elif key == "additionalProperties":
            if isinstance(value, dict):
                extra = [k for k in value if k not in schema.get("properties", {})]
                for name in extra:
                    if rule is False:
                        errors.append(f"{where}: unexpected {name}")
                    elif isinstance(rule, dict):
                        errors += schema_errors(rule, value[name], root, f"{where}.{name}")
        elif key == "propertyNames":
            if isinstance(value, dict):
                for name in value:
                    errors += schema_errors(rule, name, root, f"{where}.{name}")
        elif key == "items":
            if isinstance(value, list):
                for i, item in enumerate(value):
                    errors += schema_errors(rule, item, root, f"{where}[{i}]")
        elif key in ("minItems", "maxItems", "minLength", "maxLength"):
            if isinstance(value, list | str):
                size = len(value)
                if (size < rule) if key.startswith("min") else (size > rule):
                    errors.append(f"{where}: violates {key} {rule}")
        elif key in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
            if isinstance(value, int | float) and not isinstance(value, bool):
                bad = {
                    "minimum": value < rule,
                    "maximum": value > rule,
                    "exclusiveMinimum": value <= rule,
                    "exclusiveMaximum": value >= rule,
                }[key]
                if bad:
                    errors.append(f"{where}: violates {key} {rule}")
        elif key == "pattern":
            if isinstance(value, str) and not re.search(rule, value):
                errors.append(f"{where}: does not match {rule}")
        else:
            raise AssertionError(f"the test validator does not know the keyword {key!r}")
    return errors


def default_data() -> Any:
    data, _, problems = read_yaml(default_rules_text(), "default.yaml")
    assert not problems
    return data


def test_json_schema_has_the_draft_2020_12_shape() -> None:
    schema = json_schema()
    json.dumps(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["type"] == "object"
    assert schema["additionalProperties"] is False
    top_level = {info.alias or name for name, info in RuleFile.model_fields.items()}
    assert set(schema["properties"]) == top_level
    assert {
        "format",
        "name",
        "description",
        "timezone",
        "number_pattern",
        "department_field",
        "handler_field",
        "initial",
        "states",
        "roles",
        "fields",
        "severity",
        "submit",
        "transitions",
        "separation_of_duties",
        "personal_data",
    } <= top_level
    assert set(schema["required"]) == {
        "name",
        "initial",
        "states",
        "roles",
        "severity",
        "transitions",
    }
    refs = re.findall(r'"\$ref": "#/\$defs/([^"]+)"', json.dumps(schema))
    assert refs and set(refs) <= set(schema["$defs"])
    transition = schema["$defs"]["TransitionDef"]["properties"]
    assert "from" in transition and "source" not in transition
    assert "in" in schema["$defs"]["Compare"]["properties"]
    assert "not" in schema["$defs"]["NotOf"]["properties"]


def installed_jsonschema() -> Any:
    """The jsonschema package when it happens to be installed (it is not a dependency)."""
    try:
        return importlib.import_module("jsonschema")
    except ImportError:
        return None


def test_the_default_file_validates_against_the_schema() -> None:
    schema, data = json_schema(), default_data()
    assert schema_errors(schema, data, schema) == []
    jsonschema = installed_jsonschema()
    if jsonschema is not None:
        jsonschema.Draft202012Validator.check_schema(schema)
        jsonschema.Draft202012Validator(schema).validate(data)


@pytest.mark.parametrize(
    "breakage",
    [
        lambda d: d.update(timezon="UTC"),
        lambda d: d.pop("states"),
        lambda d: d["transitions"][0].update(to=5),
        lambda d: d["transitions"][0].update(condition={"all": []}),
        lambda d: d["roles"][0].update(id="Not An Id"),
        lambda d: d["fields"][0].update(type="boolean"),
    ],
)
def test_the_schema_refuses_broken_files(breakage: Any) -> None:
    schema, data = json_schema(), default_data()
    breakage(data)
    assert schema_errors(schema, data, schema)
    jsonschema = installed_jsonschema()
    if jsonschema is not None:
        assert list(jsonschema.Draft202012Validator(schema).iter_errors(data))
