"""Generated rule files: broken ones only ever raise a located ``RuleError``; valid ones load.

``COMPLAINTFLOW_TORTURE_EXAMPLES`` sets the number of examples per test (default 300).
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from complaintflow.errors import RuleError, RuleProblem
from complaintflow.rules.loader import default_rules_text, parse_rules
from complaintflow.rules.ruleset import BUILTIN_FIELDS

EXAMPLES = int(os.environ.get("COMPLAINTFLOW_TORTURE_EXAMPLES", "300"))
SOURCE = "generated.yaml"
DEFAULT = default_rules_text()
DEFAULT_LINES = DEFAULT.splitlines(keepends=True)
# every identifier and key of the default file, to be replaced by near misses
WORDS = sorted(set(re.findall(r"\b[a-z][a-z0-9_]{2,}\b", DEFAULT)))
TAGS = [
    "!!python/object:os.system",
    "!!python/object/apply:os.system ['true']",
    "!!python/name:builtins.eval",
    "!!str",
    "!!int",
    "!!binary",
    "!!set",
    "!!omap",
    "!!map",
    "!!seq",
    "!!timestamp",
    "!local",
    "!<tag:example.com,2000:x>",
    "!",
]
JUNK = [
    "{",
    "}",
    "[",
    "]",
    ": ",
    "- ",
    "? ",
    "&a ",
    "*a ",
    "*b ",
    "<<: *a",
    "\t",
    "'",
    '"',
    "|",
    ">-",
    "%YAML 1.1",
    "---",
    "...",
    "~",
    "#",
    "13:00",
    "on",
    "1e999",
    "-.inf",
    "\ufeff",
    "\x00",
    "\x85",
    "\u2028",
    "é",
    "满意",
    "\\",
    "`",
    "@",
    "%",
    "!",
    "&",
    "*",
]
KEYS = [
    "foo",
    "when",
    "final",
    "roles",
    "from",
    "to",
    "condition",
    "all",
    "any",
    "not",
    "field",
    "eq",
    "in",
    "is_set",
    "approval",
    "by",
    "since",
    "triggers",
    "id",
    "label",
    "zh",
    "type",
    "values",
    "levels",
    "default",
    "rules",
    "<<",
    "1",
    "~",
    "true",
    "on",
]

_YAML_BREAK = re.compile("\r\n|[\r\n\x85\u2028\u2029]")
_WHOLE_FILE = ("the rule file is empty", "the rule file must be a mapping")


def check_outcome(text: str) -> None:
    """Loading either succeeds or raises ``RuleError``; any other exception fails the test."""
    try:
        parse_rules(text, SOURCE)
    except RuleError as exc:
        assert exc.problems
        for problem in exc.problems:
            assert_located(problem, text)


def assert_located(problem: RuleProblem, text: str) -> None:
    assert problem.file == SOURCE, problem
    assert isinstance(problem.message, str) and problem.message.strip(), problem
    assert isinstance(problem.path, str), problem
    if problem.path == "" and problem.message in _WHOLE_FILE:
        return
    assert problem.line is not None and problem.column is not None, problem
    # YAML breaks lines at \r too; a parser may point just past the end of the input
    assert 1 <= problem.line <= len(_YAML_BREAK.findall(text)) + 2, problem
    assert problem.column >= 1, problem


# -- broken files: mutations of the default file -------------------------------------------


def near_miss(word: str, draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["drop", "double", "swap", "upper", "typo", "suffix"]))
    i = draw(st.integers(0, len(word) - 1))
    if kind == "drop":
        return word[:i] + word[i + 1 :]
    if kind == "double":
        return word[:i] + word[i] + word[i:]
    if kind == "swap" and i + 1 < len(word):
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    if kind == "upper":
        return word[:i] + word[i].upper() + word[i + 1 :]
    if kind == "typo":
        return word[:i] + draw(st.sampled_from("aeiouxz_1")) + word[i + 1 :]
    return word + draw(st.sampled_from(["s", "_x", "2", "ed"]))


@st.composite
def mutated_default(draw: st.DrawFn) -> str:
    lines = list(DEFAULT_LINES)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(
            st.sampled_from(
                ["delete", "duplicate", "swap", "char", "key", "near_miss", "junk", "tag", "indent"]
            )
        )
        i = draw(st.integers(0, len(lines) - 1))
        line = lines[i]
        if op == "delete":
            del lines[i]
        elif op == "duplicate":
            lines.insert(draw(st.integers(0, len(lines))), line)
        elif op == "swap":
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif op == "char" and line:
            k = draw(st.integers(0, len(line) - 1))
            lines[i] = line[:k] + draw(st.characters(codec="utf-8")) + line[k + 1 :]
        elif op == "key":
            indent = " " * draw(st.sampled_from([0, 2, 4, 6, 8]))
            key = draw(st.sampled_from(KEYS) | st.from_regex(r"[a-z_]{1,12}", fullmatch=True))
            value = draw(st.sampled_from(["1", "x", "[a, b]", "{a: 1}", "", "true", "null"]))
            lines.insert(i, f"{indent}{key}: {value}\n")
        elif op == "near_miss":
            word = draw(st.sampled_from(WORDS))
            if word in "".join(lines):
                everywhere = draw(st.booleans())
                text = "".join(lines)
                text = re.sub(
                    rf"\b{word}\b", near_miss(word, draw), text, count=0 if everywhere else 1
                )
                lines = text.splitlines(keepends=True) or ["\n"]
        elif op == "junk":
            k = draw(st.integers(0, len(line)))
            junk = draw(st.sampled_from(JUNK) | st.text(max_size=8))
            lines[i] = line[:k] + junk + line[k:]
        elif op == "tag":
            colon = line.find(": ")
            k = colon + 2 if colon >= 0 else line.find("- ") + 2 if "- " in line else 0
            lines[i] = line[:k] + draw(st.sampled_from(TAGS)) + " " + line[k:]
        else:
            delta = draw(st.sampled_from([-2, -1, 1, 2]))
            lines[i] = " " * max(0, delta) + line[max(0, -delta) :]
        if not lines:
            lines = ["\n"]
    return "".join(lines)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(mutated_default())
def test_a_mutated_default_file_loads_or_raises_located_problems(text: str) -> None:
    check_outcome(text)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=300) | st.binary(max_size=200).map(lambda b: b.decode("latin-1")))
def test_random_junk_raises_located_problems(text: str) -> None:
    check_outcome(text)


# -- valid files ---------------------------------------------------------------------------

_RESERVED = {"null", "true", "false", *BUILTIN_FIELDS}
IDENT = st.builds(
    str.__add__,
    st.sampled_from("abcdefghijklmnopqrstuvwxyz"),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_", max_size=11),
).filter(lambda s: s not in _RESERVED)
CJK = st.text(
    alphabet="接获登记确认调查分析处置回访结案归档客户部经理质量总销售员", min_size=1, max_size=6
)
ENGLISH = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 -",
    min_size=1,
    max_size=20,
)


def scalar(value: Any) -> str:
    """A YAML scalar: identifiers and numbers plain, everything else as a JSON string."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if (
        isinstance(value, str)
        and re.fullmatch(r"[a-z][a-z0-9_]*", value)
        and value not in ("true", "false", "null")
    ):
        return value
    return json.dumps(value, ensure_ascii=False)


def flow(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {flow(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(flow(v) for v in value) + "]"
    return scalar(value)


@st.composite
def label(draw: st.DrawFn) -> dict[str, str]:
    return {"zh": draw(CJK), "en": draw(ENGLISH).strip() or "x"}


def fixed_label(ident: str) -> dict[str, str]:
    return {"zh": "名称", "en": ident.replace("_", " ").title()}


@st.composite
def valid_rule_file(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    states = draw(st.lists(IDENT, min_size=2, max_size=6, unique=True))
    roles = draw(st.lists(IDENT, min_size=1, max_size=4, unique=True))
    names = draw(st.lists(IDENT, min_size=4, max_size=4, unique=True))
    flag, score, mood, note = names
    moods = draw(st.lists(IDENT, min_size=2, max_size=4, unique=True))
    levels = draw(st.lists(IDENT, min_size=1, max_size=3, unique=True))
    n_chain = len(states) - 1
    n_extra = draw(st.integers(0, 4))
    triggers = draw(
        st.lists(IDENT, min_size=n_chain + n_extra + 1, max_size=n_chain + n_extra + 1, unique=True)
    )

    def some_roles() -> list[str]:
        return draw(st.lists(st.sampled_from(roles), min_size=1, max_size=len(roles), unique=True))

    conditions: list[dict[str, Any] | None] = [
        None,
        {"field": flag, "eq": True},
        {
            "field": score,
            draw(st.sampled_from(["lt", "le", "gt", "ge", "eq", "ne"])): draw(
                st.integers(-1000, 1000)
            ),
        },
        {"field": mood, "in": draw(st.lists(st.sampled_from(moods), min_size=1, unique=True))},
        {"field": note, "is_set": draw(st.booleans())},
        {"not": {"field": mood, "eq": draw(st.sampled_from(moods))}},
        {"any": [{"field": flag, "eq": False}, {"count_of": triggers[0], "ge": 1}]},
        {"actor": "roles", "contains": draw(st.sampled_from(roles))},
        {"field": "severity", "eq": draw(st.sampled_from(levels))},
    ]
    transitions: list[dict[str, Any]] = []
    for i in range(n_chain):
        t: dict[str, Any] = {
            "trigger": triggers[i],
            "from": [states[i]],
            "to": states[i + 1],
            "roles": some_roles(),
        }
        if draw(st.booleans()):
            t["label"] = draw(label())
        if draw(st.booleans()):
            t["fields"] = draw(st.lists(st.sampled_from(names), max_size=4, unique=True))
        if draw(st.booleans()):
            t["requires"] = draw(st.lists(st.sampled_from(names), max_size=2, unique=True))
        cond = draw(st.sampled_from(conditions))
        if cond is not None:
            t["condition"] = cond
        transitions.append(t)
    for j in range(n_extra):
        src = draw(st.integers(0, len(states) - 1))
        # from the final state only a loop on itself; elsewhere back or in place
        dst = src if src == n_chain else draw(st.integers(0, src))
        transitions.append(
            {
                "trigger": triggers[n_chain + j],
                "from": [states[src]],
                "to": states[dst],
                "roles": some_roles(),
            }
        )
    # one trigger with two transitions that exclude each other
    split = draw(st.integers(0, n_chain - 1))
    limit = draw(st.integers(0, 100))
    decide = triggers[-1]
    exclusive = draw(
        st.sampled_from(
            [
                ({"field": flag, "eq": True}, {"not": {"field": flag, "eq": True}}),
                ({"field": score, "lt": limit}, {"field": score, "ge": limit}),
                ({"field": mood, "eq": moods[0]}, {"field": mood, "eq": moods[1]}),
            ]
        )
    )
    for either in exclusive:
        transitions.append(
            {
                "trigger": decide,
                "from": [states[split]],
                "to": states[split + 1],
                "roles": roles,
                "condition": either,
            }
        )
    if draw(st.booleans()):  # triggers are unique, so decide is not triggers[0]
        transitions[-1]["approval"] = {"by": triggers[0]}

    doc: dict[str, Any] = {
        "format": 1,
        "name": draw(CJK),
        "initial": states[0],
        "states": [{"id": s, "label": draw(label())} for s in states],
        "roles": [{"id": r, "label": fixed_label(r)} for r in roles],
        "fields": [
            {"id": flag, "type": "bool", "label": fixed_label(flag)},
            {
                "id": score,
                "type": "integer",
                "label": fixed_label(score),
                "min": -1000,
                "max": 1000,
            },
            {"id": mood, "type": "enum", "values": moods, "label": fixed_label(mood)},
            {"id": note, "type": "string", "label": fixed_label(note), "personal": True},
        ],
        "severity": {
            "levels": levels,
            "default": levels[0],
            "rules": [{"level": levels[-1], "when": {"field": flag, "eq": True}}],
        },
        "transitions": transitions,
    }
    doc["states"][-1]["final"] = True
    if draw(st.booleans()):
        doc["separation_of_duties"] = [
            {
                "id": "four_eyes",
                "triggers": draw(st.sampled_from(["*", [decide]])),
                "not_actor_of": [triggers[0]],
                "reason": draw(CJK),
            }
        ]
    if draw(st.booleans()):
        doc["personal_data"] = {"readers": some_roles()}
    if draw(st.booleans()):
        doc["submit"] = {"roles": some_roles(), "fields": [flag, note]}
    return render(doc, block=draw(st.booleans())), doc


def render(doc: dict[str, Any], *, block: bool) -> str:
    """Block style for the top level and list items, flow style inside (as admins write)."""
    out: list[str] = []
    for key, value in doc.items():
        if isinstance(value, list) and value and isinstance(value[0], dict) and block:
            out.append(f"{key}:")
            for item in value:
                first = True
                for k, v in item.items():
                    out.append(f"{'  - ' if first else '    '}{k}: {flow(v)}")
                    first = False
        else:
            out.append(f"{key}: {flow(value)}")
    return "\n".join(out) + "\n"


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_rule_file())
def test_generated_valid_files_load(case: tuple[str, dict[str, Any]]) -> None:
    text, doc = case
    try:
        rules = parse_rules(text, SOURCE)
    except RuleError as exc:  # pragma: no cover - shown on failure only
        raise AssertionError(f"{exc}\n---\n{text}") from None
    assert list(rules.states) == [s["id"] for s in doc["states"]]
    assert rules.final_states == {doc["states"][-1]["id"]}
    assert list(rules.roles) == [r["id"] for r in doc["roles"]]
    assert len(rules.transitions) == len(doc["transitions"])
    for state, want in zip(rules.definition.states, doc["states"], strict=True):
        assert state.label.zh == want["label"]["zh"]
        assert state.label.en == want["label"]["en"]
