"""The working-time caches deep verification leans on must not hide a forged clock.

``WorkingCalendar`` remembers the end of N working days per start date (and the whole days
up to it): complaints received on the same date share those answers, and they stay warm from
one verification to the next in the same engine. A due time forged in one complaint, or a
warning deleted from it, must still be found in that complaint, and only there.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from complaintflow import Engine, SimulatedClock
from complaintflow.scheduler import Scheduler
from tests.integration.test_replay_audit import delete_event, findings, forge
from tests.support import CS, complaint_fields


def whole_complaint_warning(engine: Engine, number: str) -> int:
    return next(e.seq for e in engine.history(number) if e.type == "timer_warning"
                and e.payload["timer"] == "whole_complaint")


def test_a_forged_working_days_due_time_is_found_with_warm_caches(
    engine: Engine, clock: SimulatedClock
) -> None:
    numbers = []
    for _ in range(3):  # one date: whole_complaint (15 working days) ends at the same
        # instant for all three; its warning (at 0.8) counts from each one's receipt
        numbers.append(engine.submit(complaint_fields(), CS).number)
        clock.advance(timedelta(hours=1))
    clock.advance(timedelta(days=40))
    Scheduler(engine).tick()
    assert engine.verify(deep=True).ok  # every cache warm, from the first complaint on
    first, forged, deleted = numbers
    dues = {
        n: next(item["due_at"] for item in engine.history(n)[0].payload["timers"]["started"]
                if item["timer"] == "whole_complaint")
        for n in numbers
    }
    assert len(set(dues.values())) == 1

    def later(payload: dict[str, Any]) -> None:
        for item in payload["timers"]["started"]:
            if item["timer"] == "whole_complaint":
                moved = datetime.fromisoformat(item["due_at"]) + timedelta(days=1)
                item["due_at"] = moved.isoformat().replace("+00:00", "Z")

    forge(engine, forged, 1, later)
    delete_event(engine, deleted, whole_complaint_warning(engine, deleted))
    assert engine.verify().ok  # the chains are intact: only the clocks can tell
    deep = engine.verify(deep=True)
    assert findings(deep) == [(forged, 1, "wrong_due"), (deleted, 1, "missed_warning")]
    assert "timer whole_complaint run 1 recorded due" in deep.findings[0].detail
    assert "timer whole_complaint run 1 was due (warning 1)" in deep.findings[1].detail
    assert first not in {f.number for f in deep.findings}
