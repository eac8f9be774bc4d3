"""Time is injected. ``system_clock`` is the only place complaintflow reads the wall clock."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from complaintflow.errors import FieldProblem, InvalidInput

__all__ = ["Clock", "SimulatedClock", "now_from", "system_clock"]

Clock = Callable[[], datetime]


def system_clock() -> datetime:
    """The current instant, aware, in UTC."""
    return datetime.now(UTC)


def now_from(clock: Clock) -> datetime:
    """Read ``clock`` and insist on an aware instant; return it in UTC."""
    moment = clock()
    if not isinstance(moment, datetime) or moment.tzinfo is None or moment.utcoffset() is None:
        raise InvalidInput([FieldProblem("clock", f"returned {moment!r}, not an aware datetime")],
                           context="clock")
    return moment.astimezone(UTC)


class SimulatedClock:
    """A clock that moves only when told to (tests, the demo, dry runs)."""

    def __init__(self, start: datetime) -> None:
        self._now = _aware("start", start)

    def __call__(self) -> datetime:
        return self._now

    def advance(self, delta: timedelta) -> datetime:
        if not isinstance(delta, timedelta) or delta < timedelta(0):
            raise InvalidInput([FieldProblem("delta", f"{delta!r}: a clock moves only forward "
                                             "(a non-negative timedelta)")], context="clock")
        try:
            self._now += delta
        except OverflowError:
            raise InvalidInput([FieldProblem("delta", f"{delta!r} moves the clock past the "
                                             "year 9999")], context="clock") from None
        return self._now

    def set(self, moment: datetime) -> None:
        moment = _aware("moment", moment)
        if moment < self._now:
            raise InvalidInput([FieldProblem("moment", f"{moment.isoformat()} is before the "
                                             f"clock's {self._now.isoformat()}: a clock does "
                                             "not run backwards")], context="clock")
        self._now = moment


def _aware(name: str, moment: object) -> datetime:
    if not isinstance(moment, datetime) or moment.tzinfo is None or moment.utcoffset() is None:
        raise InvalidInput([FieldProblem(name, f"{moment!r} is not an aware datetime")],
                           context="clock")
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise InvalidInput([FieldProblem(name, f"{moment!r} is out of range in UTC")],
                           context="clock") from None
