"""The public API is exactly what ``complaintflow.__all__`` lists; the exception tree is the
one drawn at the top of ``errors.py``."""

from __future__ import annotations

import inspect
import re
from importlib.metadata import version

import pytest

import complaintflow
from complaintflow import errors
from complaintflow.states.guards import GUARD_ORDER, Refusal

EXPORTED = [
    "EVENT_SCHEMA_VERSION",
    "GUARD_ORDER",
    "Actor",
    "ApprovalMissing",
    "CalendarError",
    "Clock",
    "CommittedEvent",
    "Complaint",
    "ComplaintflowError",
    "ConcurrentUpdate",
    "ConditionFailed",
    "Consent",
    "Engine",
    "FieldProblem",
    "Finding",
    "HistoryEvent",
    "IdempotencyConflict",
    "IntegrityError",
    "InvalidInput",
    "MissingFields",
    "NotFound",
    "Notification",
    "Page",
    "Replayed",
    "RoleNotAllowed",
    "RuleError",
    "RuleProblem",
    "RuleSet",
    "Scheduler",
    "SeparationOfDuties",
    "SimulatedClock",
    "StorageError",
    "TimerRefused",
    "TimerView",
    "TransitionRefused",
    "TriggerNotAllowed",
    "TriggerOption",
    "UnknownTrigger",
    "VerificationReport",
    "__version__",
    "load_rules",
    "parse_rules",
    "system_clock",
]

#: TransitionRefused subclasses in the order their guards run.
REFUSALS = [
    complaintflow.UnknownTrigger,
    complaintflow.TriggerNotAllowed,
    complaintflow.RoleNotAllowed,
    complaintflow.SeparationOfDuties,
    complaintflow.MissingFields,
    complaintflow.ConditionFailed,
    complaintflow.ApprovalMissing,
]


def exception_classes() -> dict[str, type[BaseException]]:
    return {
        name: cls
        for name, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, BaseException) and cls.__module__ == errors.__name__
    }


def test_all_is_pinned() -> None:
    assert complaintflow.__all__ == EXPORTED
    assert sorted(EXPORTED, key=lambda n: (not n.isupper(), n)) == EXPORTED


@pytest.mark.parametrize("name", EXPORTED)
def test_every_exported_name_resolves(name: str) -> None:
    assert getattr(complaintflow, name) is not None


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from complaintflow import *", namespace)
    assert set(namespace) - {"__builtins__"} == set(EXPORTED)


def test_version_matches_the_distribution() -> None:
    assert complaintflow.__version__ == version("complaintflow")


def test_errors_all_lists_every_exception() -> None:
    assert set(exception_classes()) <= set(errors.__all__)
    for name in errors.__all__:
        assert hasattr(errors, name)


def test_every_error_is_exported_from_the_package() -> None:
    missing = sorted(set(exception_classes()) - set(complaintflow.__all__))
    assert missing == []
    for name, cls in exception_classes().items():
        assert getattr(complaintflow, name) is cls


@pytest.mark.parametrize("name", sorted(exception_classes()))
def test_every_error_subclasses_the_base(name: str) -> None:
    assert issubclass(exception_classes()[name], complaintflow.ComplaintflowError)


def _drawn_tree() -> dict[str, str | None]:
    """``{class: parent}`` as drawn in the docstring of ``errors.py``."""
    doc = errors.__doc__ or ""
    parents: dict[str, str | None] = {}
    stack: list[str] = []
    base_column = 0
    for line in doc.splitlines():
        if line.strip() == "ComplaintflowError":
            parents["ComplaintflowError"] = None
            stack = ["ComplaintflowError"]
            base_column = line.index("C")
            continue
        match = re.match(r"^([\s│]*)[├└]── (\w+)", line)
        if match and stack:
            depth = (len(match.group(1)) - base_column) // 4 + 1
            del stack[depth:]
            parents[match.group(2)] = stack[-1]
            stack.append(match.group(2))
    return parents


def test_the_drawn_tree_is_the_real_tree() -> None:
    drawn = _drawn_tree()
    classes = exception_classes()
    assert set(drawn) == set(classes)
    for name, parent in drawn.items():
        if parent is not None:
            assert classes[name].__bases__ == (classes[parent],), name


def test_refusals_match_the_guard_order() -> None:
    refused = {
        cls
        for cls in exception_classes().values()
        if issubclass(cls, complaintflow.TransitionRefused)
    }
    assert refused == {complaintflow.TransitionRefused, *REFUSALS}
    assert tuple(cls.check for cls in REFUSALS) == GUARD_ORDER
    assert complaintflow.GUARD_ORDER is GUARD_ORDER


@pytest.mark.parametrize("cls", REFUSALS[2:], ids=lambda c: c.__name__)
def test_a_refusal_becomes_its_exception(cls: type[complaintflow.TransitionRefused]) -> None:
    problems = (complaintflow.FieldProblem("phone", "expected text"),)
    exc = Refusal(cls.check, "because", problems).exception("TS-2026-000001", "record", "received")
    assert type(exc) is cls
    assert (exc.number, exc.trigger, exc.state, exc.reason, exc.check) == (
        "TS-2026-000001",
        "record",
        "received",
        "because",
        cls.check,
    )
    assert cls.check in str(exc)
    if isinstance(exc, complaintflow.MissingFields):
        assert exc.problems == problems


def test_other_errors_carry_their_facts() -> None:
    conflict = complaintflow.IdempotencyConflict("k-1")
    assert isinstance(conflict, complaintflow.InvalidInput)
    assert conflict.key == "k-1"
    assert [p.field for p in conflict.problems] == ["idempotency_key"]
    stale = complaintflow.ConcurrentUpdate("TS-2026-000001", 3, 4)
    assert (stale.number, stale.expected_version, stale.actual_version) == ("TS-2026-000001", 3, 4)
    missing = complaintflow.NotFound("complaint", "TS-2026-000009")
    assert (missing.kind, missing.key) == ("complaint", "TS-2026-000009")
    bad = complaintflow.InvalidInput(
        [complaintflow.FieldProblem("a", "x"), complaintflow.FieldProblem("b", "y")],
        context="complaint",
    )
    assert [p.field for p in bad.problems] == ["a", "b"]
    assert "a: x" in str(bad) and "b: y" in str(bad)
    broken = complaintflow.IntegrityError("chain broken", number="TS-2026-000001", seq=3)
    assert (broken.number, broken.seq) == ("TS-2026-000001", 3)
    cause = OSError("disk full")
    storage = complaintflow.StorageError("write failed", cause)
    assert storage.cause is cause
    rule = complaintflow.RuleError(
        [complaintflow.RuleProblem("r.yaml", 3, 5, "states.0.id", "bad", "an id", "received")]
    )
    assert rule.problems[0].line == 3
    assert "r.yaml:3:5" in str(rule) and "did you mean 'received'" in str(rule)
