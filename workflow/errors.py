"""The one exception hierarchy of complaintflow.

    ComplaintflowError
    ├── RuleError                  an administrator's rule file has problems (all of them, located)
    ├── CalendarError              working-time arithmetic cannot answer (no official data, ...)
    ├── InvalidInput               bad data from a caller (every bad field named)
    │   └── IdempotencyConflict    an idempotency key reused with different arguments
    ├── TransitionRefused          a guard refused a transition; nothing was stored
    │   ├── UnknownTrigger             1. the trigger does not exist
    │   ├── TriggerNotAllowed          2. not allowed from the current state
    │   ├── RoleNotAllowed             3. the actor holds none of the allowed roles
    │   ├── SeparationOfDuties         4. separation of duties / recusal
    │   ├── MissingFields              5. required fields absent or invalid
    │   ├── ConditionFailed            6. a declared condition is false
    │   └── ApprovalMissing            7. the required approval was not given
    ├── TimerRefused               an SLA clock cannot be extended (breached, no consent, ...)
    ├── ConcurrentUpdate           someone else changed the complaint first
    ├── NotFound                   no such complaint (or other object)
    ├── IntegrityError             stored history or state contradicts itself
    └── StorageError               the database failed (driver errors are translated once)

Every exception carries its facts as attributes; the message is for people.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "ApprovalMissing",
    "CalendarError",
    "ComplaintflowError",
    "ConcurrentUpdate",
    "ConditionFailed",
    "FieldProblem",
    "IdempotencyConflict",
    "IntegrityError",
    "InvalidInput",
    "MissingFields",
    "NotFound",
    "RoleNotAllowed",
    "RuleError",
    "RuleProblem",
    "SeparationOfDuties",
    "StorageError",
    "TimerRefused",
    "TransitionRefused",
    "TriggerNotAllowed",
    "UnknownTrigger",
    "did_you_mean",
    "hint",
]


def did_you_mean(word: str, candidates: Iterable[str]) -> str | None:
    """The candidate closest to a misspelt ``word``, if one is close enough."""
    matches = difflib.get_close_matches(word, sorted(candidates), n=1, cutoff=0.6)
    return matches[0] if matches else None


def hint(word: str, candidates: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest candidate, or nothing."""
    found = did_you_mean(word, candidates)
    return f"; did you mean {found!r}?" if found else ""


class ComplaintflowError(Exception):
    """Base of every error complaintflow raises on purpose."""


@dataclass(frozen=True)
class RuleProblem:
    """One problem in a rule file, located so an editor can jump to it."""

    file: str
    line: int | None
    column: int | None
    path: str
    message: str
    expected: str | None = None
    suggestion: str | None = None

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        text = f"{where}: {self.path or '<root>'}: {self.message}"
        if self.expected:
            text += f" (expected {self.expected})"
        if self.suggestion:
            text += f"; did you mean {self.suggestion!r}?"
        return text


class RuleError(ComplaintflowError):
    """The rule file could not be loaded; ``problems`` lists every problem found."""

    def __init__(self, problems: Sequence[RuleProblem]) -> None:
        self.problems: tuple[RuleProblem, ...] = tuple(problems)
        count = len(self.problems)
        head = f"{count} problem{'s' if count != 1 else ''} in rule file"
        super().__init__(head + ":\n" + "\n".join(f"  {p}" for p in self.problems))


class CalendarError(ComplaintflowError):
    """A working-time question that the calendar cannot answer."""


@dataclass(frozen=True)
class FieldProblem:
    """One bad input field: which, and what is wrong with it."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


class InvalidInput(ComplaintflowError):
    """Caller-supplied data is invalid; ``problems`` names every bad field."""

    def __init__(self, problems: Sequence[FieldProblem], context: str = "input") -> None:
        self.problems: tuple[FieldProblem, ...] = tuple(problems)
        self.context = context
        super().__init__(
            f"invalid {context}: " + "; ".join(str(p) for p in self.problems)
        )


class IdempotencyConflict(InvalidInput):
    """An idempotency key was reused for a different request."""

    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(
            [FieldProblem("idempotency_key", f"{key!r} was already used with other arguments")],
            context="request",
        )


class TransitionRefused(ComplaintflowError):
    """A guard refused the transition. Nothing was stored.

    ``check`` names the failed guard (see ``GUARD_ORDER`` in ``complaintflow.states``).
    """

    check: str = "refused"

    def __init__(self, number: str, trigger: str, state: str | None, reason: str) -> None:
        self.number = number
        self.trigger = trigger
        self.state = state
        self.reason = reason
        super().__init__(
            f"{number}: {trigger!r} refused in state {state!r} [{self.check}]: {reason}"
        )


class UnknownTrigger(TransitionRefused):
    check = "trigger_exists"


class TriggerNotAllowed(TransitionRefused):
    check = "source_state"


class RoleNotAllowed(TransitionRefused):
    check = "role"


class SeparationOfDuties(TransitionRefused):
    """``rule`` is the id of the separation rule (e.g. ``recusal``) that refused."""

    check = "separation_of_duties"

    def __init__(self, number: str, trigger: str, state: str | None, reason: str,
                 rule: str | None = None) -> None:
        self.rule = rule
        super().__init__(number, trigger, state, reason)


class MissingFields(TransitionRefused):
    check = "fields"

    def __init__(
        self,
        number: str,
        trigger: str,
        state: str | None,
        reason: str,
        problems: Sequence[FieldProblem] = (),
    ) -> None:
        self.problems: tuple[FieldProblem, ...] = tuple(problems)
        super().__init__(number, trigger, state, reason)


class ConditionFailed(TransitionRefused):
    check = "condition"


class ApprovalMissing(TransitionRefused):
    check = "approval"


class TimerRefused(ComplaintflowError):
    """A request on an SLA clock was refused; nothing was stored."""

    def __init__(self, number: str, timer: str, reason: str) -> None:
        self.number = number
        self.timer = timer
        self.reason = reason
        super().__init__(f"{number}: timer {timer!r}: {reason}")


class ConcurrentUpdate(ComplaintflowError):
    """The complaint changed since the caller read it; nothing was stored."""

    def __init__(self, number: str, expected_version: int | None, actual_version: int | None):
        self.number = number
        self.expected_version = expected_version
        self.actual_version = actual_version
        super().__init__(
            f"{number}: concurrent update (expected version {expected_version}, "
            f"found {actual_version})"
        )


class NotFound(ComplaintflowError):
    """No ``kind`` called ``key``; ``suggestion`` is the closest of the names given as
    ``among``, if one is close."""

    def __init__(self, kind: str, key: str, among: Iterable[str] = ()) -> None:
        self.kind = kind
        self.key = key
        self.suggestion = did_you_mean(key, among) if isinstance(key, str) else None
        super().__init__(f"no {kind} {key!r}"
                         + (f"; did you mean {self.suggestion!r}?" if self.suggestion else ""))


class IntegrityError(ComplaintflowError):
    """Stored data contradicts itself (broken hash chain, state not matching history)."""

    def __init__(self, message: str, number: str | None = None, seq: int | None = None):
        self.number = number
        self.seq = seq
        super().__init__(message)


class StorageError(ComplaintflowError):
    """The database failed in a way that is not the caller's fault."""

    def __init__(self, message: str, cause: BaseException | None = None) -> None:
        self.cause = cause
        super().__init__(message)
