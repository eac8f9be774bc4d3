"""The scheduler: fires every due warning and breach exactly once, from any number of
processes on one database.

The database is the source of truth. Each process runs its own APScheduler 3.x
``BackgroundScheduler`` (in-memory job store, ONE interval job, coalesce, max_instances=1);
job stores are never shared between processes. A tick claims due deadlines in batches
(``SELECT ... FOR UPDATE SKIP LOCKED`` on PostgreSQL; ``BEGIN IMMEDIATE`` on SQLite) and, in
ONE transaction per batch, marks each one fired, applies its actions, appends the history
events and writes the notifications to the outbox. A process killed mid-batch loses its
transaction, and the rows return to the pool for the others.

Order: within one complaint, deadlines fire in due order. Across complaints, each batch is
taken in due order, but parallel processes interleave their batches.
"""

from __future__ import annotations

import calendar as _calendar
import logging
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from complaintflow import sla
from complaintflow.actor import Actor
from complaintflow.engine import CommittedEvent, Engine, build_event, insert_ignore
from complaintflow.errors import TransitionRefused
from complaintflow.rules.model import ReviewDef
from complaintflow.states.conditions import Facts
from complaintflow.storage import db
from complaintflow.storage.hashing import canonical, iso
from complaintflow.storage.tables import complaints as C
from complaintflow.storage.tables import deadlines as D
from complaintflow.storage.tables import events as E
from complaintflow.storage.tables import outbox as O
from complaintflow.storage.tables import review_runs as RR
from complaintflow.storage.tables import timers as T

__all__ = ["SYSTEM", "BatchReport", "Scheduler", "TickReport"]

log = logging.getLogger("complaintflow.scheduler")

SYSTEM = Actor("system:scheduler", ())


@dataclass
class BatchReport:
    fired: int = 0
    warnings: int = 0
    breaches: int = 0
    max_lateness: timedelta = timedelta(0)
    events: list[CommittedEvent] = field(default_factory=list)


@dataclass
class TickReport:
    fired: int = 0
    warnings: int = 0
    breaches: int = 0
    batches: int = 0
    max_lateness: timedelta = timedelta(0)
    reviews: int = 0
    delivered: int = 0
    next_due: datetime | None = None

    def add(self, batch: BatchReport) -> None:
        self.fired += batch.fired
        self.warnings += batch.warnings
        self.breaches += batch.breaches
        self.batches += 1
        self.max_lateness = max(self.max_lateness, batch.max_lateness)


def _raise(levels: tuple[str, ...], current: str | None, level: str) -> str:
    if current is None or levels.index(level) > levels.index(current):
        return level
    return current


class Scheduler:
    """Fires due deadlines for one engine. Use ``tick()`` directly (tests, simulations) or
    ``start()``/``stop()`` for the background loop."""

    def __init__(
        self,
        engine: Engine,
        *,
        worker: str | None = None,
        batch_size: int = 500,
        max_batches_per_tick: int = 10_000,
        min_interval: float = 0.2,
        max_interval: float = 30.0,
    ) -> None:
        self.engine = engine
        self.worker = worker or f"{socket.gethostname()}:{os.getpid()}"
        self.batch_size = batch_size
        self.max_batches_per_tick = max_batches_per_tick
        self.min_interval = min_interval
        self.max_interval = max_interval
        self._apscheduler: Any = None
        self._stopped = threading.Event()
        self.on_tick: Callable[[TickReport], None] | None = None

    # -- one batch ------------------------------------------------------------------------

    def fire_batch(self, now: datetime) -> BatchReport:
        """Claim and fire up to ``batch_size`` due deadlines in ONE transaction."""
        engine = self.engine
        report = BatchReport()
        fires: list[tuple[int, str, str]] = []
        with db.write(engine.database) as conn:
            postgres = conn.dialect.name == "postgresql"
            query = (sa.select(D.c.id, D.c.timer_id, D.c.complaint_id, D.c.kind, D.c.idx,
                               D.c.due_at)
                     .where(D.c.fired_at.is_(None), D.c.due_at <= now)
                     .order_by(D.c.due_at, D.c.id).limit(self.batch_size))
            if postgres:
                query = query.with_for_update(skip_locked=True)
            claimed = conn.execute(query).all()
            if not claimed:
                return report
            ids = sorted({d.complaint_id for d in claimed})
            cquery = sa.select(C).where(C.c.id.in_(ids)).order_by(C.c.id)
            if postgres:
                cquery = cquery.with_for_update()  # in id order: no deadlock between workers
            complaints = {r.id: dict(r._mapping) for r in conn.execute(cquery)}
            # Due order within a complaint: a claimed deadline waits while an earlier one
            # of the same complaint is pending outside this batch (held by another worker).
            mine = [d.id for d in claimed]
            earliest = dict(conn.execute(
                sa.select(D.c.complaint_id, sa.func.min(D.c.due_at))
                .where(D.c.complaint_id.in_(ids), D.c.fired_at.is_(None),
                       D.c.id.not_in(mine))
                .group_by(D.c.complaint_id)).all())
            claimed = [d for d in claimed if d.complaint_id not in earliest
                       or d.due_at <= earliest[d.complaint_id]]
            if not claimed:
                return report
            timers = {r.id: r for r in conn.execute(
                sa.select(T).where(T.c.id.in_({d.timer_id for d in claimed})))}
            events: list[dict[str, Any]] = []
            notes: list[dict[str, Any]] = []
            timer_updates: dict[int, dict[str, Any]] = {}
            touched: set[int] = set()
            raised: set[int] = set()
            for d in claimed:
                comp = complaints[d.complaint_id]
                trow = timers[d.timer_id]
                compiled = engine.compiled(conn, comp["ruleset"])
                ctimer = compiled.timers.by_id.get(trow.timer)
                lateness = max(now - d.due_at, timedelta(0))
                actions: dict[str, Any] = {}
                notify: list[str] = []
                if d.kind == "warning":
                    kind = "timer_warning"
                    if ctimer is not None and d.idx <= len(ctimer.definition.warnings):
                        notify = list(ctimer.definition.warnings[d.idx - 1].notify)
                    update = timer_updates.setdefault(trow.id, {"warned": trow.warned})
                    update["warned"] += 1
                    report.warnings += 1
                else:
                    kind = "timer_breached"
                    timer_updates.setdefault(trow.id, {"warned": trow.warned})["breached_at"] = now
                    report.breaches += 1
                    if ctimer is not None:
                        b = ctimer.definition.on_breach
                        notify = list(b.notify)
                        if b.raise_severity is not None:
                            levels = compiled.rules.severity_levels
                            before = comp["severity"]
                            comp["severity_floor"] = _raise(levels, comp["severity_floor"],
                                                            b.raise_severity)
                            comp["severity"] = _raise(levels, comp["severity"],
                                                      b.raise_severity)
                            actions["raise_severity"] = b.raise_severity
                            if comp["severity"] != before:
                                raised.add(comp["id"])
                        if b.reassign is not None:
                            comp["escalated_to"] = b.reassign
                            actions["reassign"] = b.reassign
                        if b.fire is not None:
                            actions["fire"] = b.fire
                            fires.append((comp["id"], b.fire, trow.timer))
                if notify:
                    actions["notify"] = notify
                seq = comp["version"] + 1
                payload = {
                    "timer": trow.timer, "run": trow.run, "kind": d.kind, "index": d.idx,
                    "due_at": iso(d.due_at), "lateness_seconds": lateness.total_seconds(),
                    "provisional": trow.provisional, "actions": actions,
                    "severity": comp["severity"],
                }
                row, view = build_event(
                    complaint_id=comp["id"], number=comp["number"], seq=seq,
                    prev_hash=comp["head_hash"], type=kind, trigger=None,
                    from_state=comp["state"], to_state=comp["state"], actor=SYSTEM, now=now,
                    payload=payload, ruleset=comp["ruleset"])
                events.append(row)
                report.events.append(CommittedEvent(view, None))
                comp.update(version=seq, head_seq=seq, head_hash=view.hash, updated_at=now)
                touched.add(comp["id"])
                if notify:
                    notes.append({
                        "key": f"{comp['number']}:{seq}:{kind}", "complaint_id": comp["id"],
                        "number": comp["number"], "event_seq": seq, "kind": kind,
                        "recipients": canonical(notify), "payload": canonical(payload),
                        "created_at": now, "attempts": 0,
                    })
                report.fired += 1
                report.max_lateness = max(report.max_lateness, lateness)
            conn.execute(sa.insert(E), events)
            conn.execute(sa.update(D).where(D.c.id.in_([d.id for d in claimed]))
                         .values(fired_at=now, fired_by=self.worker[:200]))
            conn.execute(
                sa.update(C).where(C.c.id == sa.bindparam("b_id")).values(
                    version=sa.bindparam("b_version"), head_seq=sa.bindparam("b_version"),
                    head_hash=sa.bindparam("b_hash"), severity=sa.bindparam("b_severity"),
                    severity_floor=sa.bindparam("b_floor"),
                    escalated_to=sa.bindparam("b_escalated"), updated_at=now),
                [{"b_id": c["id"], "b_version": c["version"], "b_hash": c["head_hash"],
                  "b_severity": c["severity"], "b_floor": c["severity_floor"],
                  "b_escalated": c["escalated_to"]} for c in (complaints[i] for i in touched)],
            )
            if timer_updates:
                conn.execute(
                    sa.update(T).where(T.c.id == sa.bindparam("b_id")).values(
                        warned=sa.bindparam("b_warned"),
                        breached_at=sa.func.coalesce(sa.bindparam("b_breached"),
                                                     T.c.breached_at)),
                    [{"b_id": tid, "b_warned": v["warned"], "b_breached": v.get("breached_at")}
                     for tid, v in timer_updates.items()])
            if notes:
                conn.execute(sa.insert(O), notes)
            for complaint_id in raised:
                compiled = engine.compiled(conn, complaints[complaint_id]["ruleset"])
                if compiled.timers.severity_sensitive:
                    report.events.extend(self._rederive(conn, complaints[complaint_id], now))
            for complaint_id, trigger, timer_name in fires:
                report.events.extend(self._fire_action(conn, complaint_id, trigger, timer_name,
                                                       now))
        return report

    def _rederive(self, conn: Connection, comp: dict[str, Any],
                  now: datetime) -> list[CommittedEvent]:
        """A breach raised the severity: clocks whose budget depends on it are re-derived,
        recorded in one ``timers_rederived`` event."""
        engine = self.engine
        row = conn.execute(sa.select(C).where(C.c.id == comp["id"])).one()
        compiled = engine.compiled(conn, row.ruleset)
        fields = {**compiled.codec.decode(row.fields),
                  **compiled.builtins(row.number, row.received_at),
                  "severity": row.severity, "state": row.state}
        changes = sla.on_event(
            conn, compiled, engine.calendar_lookup(conn), row.id, kind="severity",
            trigger=None, from_state=row.state, to_state=row.state,
            scope=compiled.scope(fields, SYSTEM, Facts(), now), now=now)
        if not changes:
            return []
        event = engine.append_event(conn, row, type="timers_rederived", actor=SYSTEM, now=now,
                                    payload={"timers": sla.summarise(changes),
                                             "reason": "severity raised"})
        return [CommittedEvent(event, None)]

    def _fire_action(self, conn: Connection, complaint_id: int, trigger: str, timer: str,
                     now: datetime) -> list[CommittedEvent]:
        """A breach action that fires a transition as the system, in the same transaction."""
        engine = self.engine
        row = conn.execute(sa.select(C).where(C.c.id == complaint_id)).one()
        compiled = engine.compiled(conn, row.ruleset)
        roles = tuple(sorted({r for t in compiled.rules.transitions_by_trigger.get(trigger, ())
                              for r in t.roles}))
        actor = Actor("system:scheduler", roles)
        try:
            savepoint = conn.begin_nested()
            event, complaint = engine.transition(conn, row, trigger, actor, {}, now,
                                                 comment=f"breach action of timer {timer}")
            savepoint.commit()
            return [CommittedEvent(event, complaint)]
        except TransitionRefused as exc:
            savepoint.rollback()
            row = conn.execute(sa.select(C).where(C.c.id == complaint_id)).one()
            event = engine.append_event(conn, row, type="timer_action_refused", actor=SYSTEM,
                                        now=now, payload={"timer": timer, "trigger": trigger,
                                                          "check": exc.check,
                                                          "reason": exc.reason})
            return [CommittedEvent(event, None)]

    # -- periodic reviews -----------------------------------------------------------------

    def _review_due(self, review: ReviewDef, now: datetime) -> tuple[str, datetime] | None:
        compiled = self.engine.compiled_current()
        name = review.calendar or compiled.rules.definition.calendar
        cal = compiled.calendars.get(name or "")
        if cal is None:
            return None
        local = cal.to_local(now)
        hour, minute = (int(x) for x in review.at.split(":"))
        year, month = local.year, local.month
        scheduled = datetime.combine(
            local.date().replace(day=min(review.day_of_month,
                                         _calendar.monthrange(year, month)[1])),
            time(hour, minute), tzinfo=cal.zone)
        if local < scheduled:
            month -= 1
            if month == 0:
                year, month = year - 1, 12
            scheduled = scheduled.replace(year=year, month=month)
        return f"{year:04d}-{month:02d}", scheduled

    def run_reviews(self, now: datetime) -> int:
        """Fire each periodic review once per period (the latest missed one on catch-up)."""
        fired = 0
        rules = self.engine.rules
        for review in rules.definition.reviews:
            due = self._review_due(review, now)
            if due is None:
                continue
            period, scheduled = due
            with db.write(self.engine.database) as conn:
                exists = conn.execute(sa.select(RR.c.period).where(
                    RR.c.review == review.id, RR.c.period == period)).first()
                if exists is not None:
                    continue
                older = conn.execute(sa.select(C.c.id).where(C.c.received_at < scheduled)
                                     .limit(1)).first()
                if older is None:
                    continue  # nothing existed yet when this review was due
                open_rows = conn.execute(sa.select(C.c.number, C.c.state, C.c.severity)
                                         .where(C.c.state.in_(review.states))
                                         .order_by(C.c.id)).all()
                insert_ignore(conn, RR, {"review": review.id, "period": period,
                                         "fired_at": now, "fired_by": self.worker[:200],
                                         "complaints": len(open_rows)})
                payload = {"review": review.id, "period": period, "scheduled_at": iso(scheduled),
                           "lateness_seconds": max((now - scheduled).total_seconds(), 0.0),
                           "unresolved": [r.number for r in open_rows],
                           "by_state": {s: sum(1 for r in open_rows if r.state == s)
                                        for s in review.states}}
                insert_ignore(conn, O, {
                    "key": f"review:{review.id}:{period}", "complaint_id": None,
                    "number": None, "event_seq": None, "kind": "review",
                    "recipients": canonical(list(review.notify)), "payload": canonical(payload),
                    "created_at": now, "attempts": 0,
                })
                fired += 1
        return fired

    # -- ticks ----------------------------------------------------------------------------

    def tick(self) -> TickReport:
        """Fire everything due now (in batches), run due reviews, feed the sinks."""
        now = self.engine.now()
        report = TickReport()
        for _ in range(self.max_batches_per_tick):
            batch = self.fire_batch(now)
            if batch.fired == 0:
                break
            report.add(batch)
            self.engine.notify(batch.events)
            if batch.fired < self.batch_size:
                break
        report.reviews = self.run_reviews(now)
        report.delivered = self.engine.outbox.deliver()
        report.next_due = self.engine.next_due()
        return report

    def next_interval(self, report: TickReport) -> float:
        """Seconds until the next tick: sooner when the next deadline is close."""
        if report.batches and report.fired >= self.batch_size:
            return self.min_interval
        if report.next_due is None:
            return self.max_interval
        wait = (report.next_due - self.engine.now()).total_seconds()
        return min(self.max_interval, max(self.min_interval, wait))

    def _job(self) -> None:
        try:
            report = self.tick()
        except Exception:
            log.exception("tick failed; retrying at the next interval")
            interval = self.max_interval
        else:
            if report.fired or report.reviews:
                log.info("fired %d (warnings %d, breaches %d, max lateness %s), reviews %d",
                         report.fired, report.warnings, report.breaches, report.max_lateness,
                         report.reviews)
            interval = self.next_interval(report)
            if self.on_tick is not None:
                self.on_tick(report)
        if self._apscheduler is not None and not self._stopped.is_set():
            self._apscheduler.reschedule_job("tick", trigger="interval", seconds=interval)

    def start(self) -> None:
        """Run ticks in the background (APScheduler, one interval job, in-memory store)."""
        from apscheduler.executors.pool import ThreadPoolExecutor
        from apscheduler.jobstores.memory import MemoryJobStore
        from apscheduler.schedulers.background import BackgroundScheduler

        self._stopped.clear()
        scheduler = BackgroundScheduler(
            jobstores={"default": MemoryJobStore()},
            executors={"default": ThreadPoolExecutor(1)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
            timezone="UTC",
        )
        scheduler.add_job(self._job, "interval", seconds=self.min_interval, id="tick",
                          coalesce=True, max_instances=1)
        self._apscheduler = scheduler
        scheduler.start()

    def stop(self, wait: bool = True) -> None:
        self._stopped.set()
        if self._apscheduler is not None:
            self._apscheduler.shutdown(wait=wait)
            self._apscheduler = None

    def run(self, stop: threading.Event) -> None:
        """Run in the background until ``stop`` is set (the CLI sets it on SIGTERM/SIGINT)."""
        self.start()
        try:
            stop.wait()
        finally:
            self.stop()
