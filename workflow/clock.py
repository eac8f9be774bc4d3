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
        if start.tzinfo is None:
            raise ValueError("SimulatedClock needs an aware start")
        self._now = start.astimezone(UTC)

    def __call__(self) -> datetime:
        return self._now

    def advance(self, delta: timedelta) -> datetime:
        if delta < timedelta(0):
            raise ValueError("a clock does not run backwards")
        self._now += delta
        return self._now

    def set(self, moment: datetime) -> None:
        if moment.tzinfo is None:
            raise ValueError("aware datetimes only")
        if moment.astimezone(UTC) < self._now:
            raise ValueError("a clock does not run backwards")
        self._now = moment.astimezone(UTC)
