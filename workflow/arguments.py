"""Checks of the arguments callers pass to the public API (``Engine``, ``Outbox``,
``Scheduler``). Each gives the problem with one argument, or ``None``; ``refuse`` raises
them all at once, so that a call names every bad argument in one ``InvalidInput`` before
anything is read or written (a wrong type never reaches the database as a driver error)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from complaintflow.errors import FieldProblem, InvalidInput
from complaintflow.rules.values import text_problem

__all__ = ["EARLIEST", "LATEST", "duration", "flag", "in_range", "integer", "moment", "refuse",
           "text"]


def refuse(problems: Iterable[FieldProblem | None], context: str = "input") -> None:
    """Raise ``InvalidInput`` naming every problem given (``None`` is no problem)."""
    found = [p for p in problems if p is not None]
    if found:
        raise InvalidInput(found, context=context)


def flag(name: str, value: object, *, optional: bool = False) -> FieldProblem | None:
    """``value`` is ``True`` or ``False`` (or ``None`` if ``optional``): ``"yes"`` and ``1``
    are not, though Python would take them as true."""
    if isinstance(value, bool) or (optional and value is None):
        return None
    return FieldProblem(name, "True or False" + (", or None" if optional else ""))


def integer(name: str, value: object, low: int, high: int, *,
            optional: bool = False) -> FieldProblem | None:
    """``value`` is a whole number from ``low`` to ``high`` (not a bool, not text)."""
    if optional and value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        within = f"from {low} up" if high >= 2**53 else f"from {low} to {high}"
        return FieldProblem(name, f"an integer {within}" + (", or None" if optional else ""))
    return None


#: the instants a caller may name: far enough from ``datetime``'s own limits (years 1 and
#: 9999) that moving one to any time zone, or adding a deadline's budget, cannot overflow
EARLIEST = datetime(1000, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)
WITHIN = "between the years 1000 and 9000"


def in_range(value: datetime) -> bool:
    """Whether the aware ``value`` lies within ``EARLIEST`` .. ``LATEST``."""
    return EARLIEST <= value < LATEST


def moment(name: str, value: object, *, optional: bool = False) -> FieldProblem | None:
    """``value`` is an aware datetime (or ``None`` if ``optional``) ``in_range``."""
    if optional and value is None:
        return None
    if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
        return FieldProblem(name, "an aware datetime" + (", or None" if optional else ""))
    if not in_range(value):
        return FieldProblem(name, f"an instant {WITHIN}")
    return None


def duration(name: str, value: object, longest: timedelta) -> FieldProblem | None:
    """``value`` is a ``timedelta`` above zero and at most ``longest``."""
    if not isinstance(value, timedelta) or not timedelta(0) < value <= longest:
        most = f"{longest.days} days" if longest == timedelta(days=longest.days) else longest
        return FieldProblem(name, f"a timedelta above zero and at most {most}")
    return None


def text(name: str, value: object, what: str = "text", *, max_length: int | None = None,
         optional: bool = False, empty: bool = False) -> FieldProblem | None:
    """``value`` is text that every backend stores as given (``values.text_problem``: no
    NUL character), not empty unless ``empty``, of at most ``max_length`` characters; or
    ``None`` if ``optional``. ``what`` says what it names (``"a complaint number"``)."""
    if optional and value is None:
        return None
    if not isinstance(value, str):
        return FieldProblem(name, f"{what} (text), not {type(value).__name__}")
    if (not value and not empty) or (max_length is not None and len(value) > max_length):
        least = 0 if empty else 1
        return FieldProblem(name, f"{what}: {least} to {max_length} characters" if max_length
                            else f"{what}: not empty")
    problem = text_problem(value)
    return FieldProblem(name, f"{what}: {problem}") if problem else None
