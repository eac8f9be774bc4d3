"""Timer bookkeeping inside the caller's transaction: start, stop, pause, resume, re-derive.

Called by the engine for every event it appends, so a state change, its timer changes and
their pending deadlines always commit together.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from complaintflow.compiled import Compiled
from complaintflow.states.conditions import Scope
from complaintflow.storage.tables import deadlines as D
from complaintflow.storage.tables import timers as T
from complaintflow.timers import CompiledTimer, Due, Ledger, timer_payload
from complaintflow.worktime import WorkingCalendar

__all__ = ["CalendarLookup", "TimerChange", "on_event", "replace_deadlines", "summarise"]

#: (calendar name, rule-set version) -> the calendar to count on
CalendarLookup = Callable[[str | None, str], WorkingCalendar | None]


@dataclass(frozen=True)
class TimerChange:
    kind: str  # started stopped paused resumed rederived extended recomputed
    payload: dict[str, Any]


def replace_deadlines(
    conn: Connection, timer_row_id: int, complaint_id: int, due: Due, now: datetime
) -> None:
    """Swap the pending deadlines of one timer run for freshly derived ones. Fired rows
    stay (they are history), and so do rows already due but not yet fired: a deadline that
    passed before the change still fires (late) once; nothing fires twice."""
    conn.execute(
        sa.delete(D).where(D.c.timer_id == timer_row_id, D.c.fired_at.is_(None), D.c.due_at > now)
    )
    if due.breach is None:
        return
    fired = {
        (r.kind, r.idx)
        for r in conn.execute(sa.select(D.c.kind, D.c.idx).where(D.c.timer_id == timer_row_id))
    }
    rows = _deadline_rows(timer_row_id, complaint_id, due, fired)
    if rows:
        conn.execute(sa.insert(D), rows)


def _deadline_rows(
    timer_row_id: int, complaint_id: int, due: Due, existing: set[tuple[str, int]]
) -> list[dict[str, Any]]:
    if due.breach is None:
        return []
    rows = [
        {
            "timer_id": timer_row_id,
            "complaint_id": complaint_id,
            "kind": "warning",
            "idx": idx,
            "due_at": at,
        }
        for idx, at in due.warnings
        if ("warning", idx) not in existing
    ]
    if ("breach", 0) not in existing:
        rows.append(
            {
                "timer_id": timer_row_id,
                "complaint_id": complaint_id,
                "kind": "breach",
                "idx": 0,
                "due_at": due.breach,
            }
        )
    return rows


def _starts(
    timer: CompiledTimer, kind: str, trigger: str | None, from_state: str | None, to_state: str
) -> bool:
    start = timer.definition.start
    if start.on == "receipt":
        return kind == "receipt"
    if start.on == "enter":
        # receipt enters the initial state
        return to_state in start.states and (from_state != to_state or kind == "receipt")
    return trigger is not None and trigger in start.triggers


def on_event(
    conn: Connection,
    compiled: Compiled,
    calendars: CalendarLookup,
    complaint_id: int,
    *,
    kind: str,
    trigger: str | None,
    from_state: str | None,
    to_state: str,
    scope: Scope,
    now: datetime,
) -> list[TimerChange]:
    """Apply the timer rules to one event; return what changed (for the event payload)."""
    if not compiled.timers.timers:
        return []
    changes: list[TimerChange] = []
    rows = conn.execute(sa.select(T).where(T.c.complaint_id == complaint_id)).all()
    last_run: dict[str, int] = {}
    active: dict[str, Any] = {}
    for row in rows:
        last_run[row.timer] = max(last_run.get(row.timer, 0), row.run)
        if row.status != "stopped":
            active[row.timer] = row
    for name, row in active.items():
        timer = compiled.timers.by_id.get(name)
        if timer is None:
            continue
        ledger = Ledger.from_text(row.ledger)
        if kind == "transition" and (
            to_state in timer.definition.stop or trigger in timer.definition.stop_triggers
        ):
            conn.execute(
                sa.delete(D).where(D.c.timer_id == row.id, D.c.fired_at.is_(None), D.c.due_at > now)
            )
            conn.execute(
                sa.update(T).where(T.c.id == row.id).values(status="stopped", stopped_at=now)
            )
            changes.append(TimerChange("stopped", {"timer": name, "run": row.run}))
            continue
        touched: list[str] = []
        if to_state in timer.definition.pause and not ledger.paused:
            ledger.pause(now, f"state:{to_state}")
            touched.append("paused")
        elif ledger.paused and to_state not in timer.definition.pause:
            ledger.resume(now)
            touched.append("resumed")
        unit, amount = timer.budget_for(scope)
        if (unit, amount) != (ledger.unit, ledger.amount) and row.breached_at is None:
            ledger.unit, ledger.amount = unit, amount
            touched.append("rederived")
        if touched:
            due = compiled.timers.derive(
                timer, ledger, calendars(ledger.calendar, ledger.calendar_version)
            )
            conn.execute(
                sa.update(T)
                .where(T.c.id == row.id)
                .values(
                    status="paused" if ledger.paused else "running",
                    ledger=ledger.to_text(),
                    due_at=due.breach,
                    provisional=due.provisional,
                )
            )
            replace_deadlines(conn, row.id, complaint_id, due, now)
            for what in touched:
                changes.append(
                    TimerChange(what, {**timer_payload(timer, ledger, due), "run": row.run})
                )
    starting: list[tuple[CompiledTimer, Ledger, Due, int]] = []
    for timer in compiled.timers.timers:
        if timer.id in active or not _starts(timer, kind, trigger, from_state, to_state):
            continue
        if to_state in timer.definition.stop:
            continue
        if timer.condition is not None and not timer.condition(scope):
            continue
        ledger = compiled.timers.new_ledger(timer, scope, now)
        if to_state in timer.definition.pause:
            ledger.pause(now, f"state:{to_state}")
        due = compiled.timers.derive(
            timer, ledger, calendars(ledger.calendar, ledger.calendar_version)
        )
        starting.append((timer, ledger, due, last_run.get(timer.id, 0) + 1))
    if starting:
        ids = (
            conn.execute(
                sa.insert(T).returning(T.c.id, sort_by_parameter_order=True),
                [
                    {
                        "complaint_id": complaint_id,
                        "timer": timer.id,
                        "run": run,
                        "status": "paused" if ledger.paused else "running",
                        "ledger": ledger.to_text(),
                        "due_at": due.breach,
                        "provisional": due.provisional,
                        "warned": 0,
                    }
                    for timer, ledger, due, run in starting
                ],
            )
            .scalars()
            .all()
        )
        deadlines = []
        for timer_row_id, (timer, ledger, due, run) in zip(ids, starting, strict=True):
            deadlines.extend(_deadline_rows(timer_row_id, complaint_id, due, set()))
            changes.append(
                TimerChange("started", {**timer_payload(timer, ledger, due), "run": run})
            )
        if deadlines:
            conn.execute(sa.insert(D), deadlines)
    return changes


def summarise(changes: list[TimerChange]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for change in changes:
        out.setdefault(change.kind, []).append(change.payload)
    return out
