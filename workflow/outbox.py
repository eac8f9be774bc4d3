"""Notifications, written in the same transaction as the event that caused them.

Delivery is at least once: pollers ``claim`` a batch (leased, so a crashed consumer's rows
come back after the lease) and ``ack`` what they handled; in-process sinks are fed by
``deliver``. Every notification carries an idempotency ``key`` for consumers to dedupe.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from complaintflow import arguments
from complaintflow.errors import FieldProblem, InvalidInput
from complaintflow.storage import db
from complaintflow.storage.tables import outbox as O

if TYPE_CHECKING:
    from complaintflow.engine import Engine

__all__ = ["Notification", "Outbox"]

log = logging.getLogger("complaintflow.outbox")

#: the longest a claim may lease its notifications for
MAX_LEASE = timedelta(days=30)


@dataclass(frozen=True)
class Notification:
    id: int
    key: str
    number: str
    event_seq: int
    kind: str
    recipients: tuple[str, ...]
    payload: dict[str, Any]
    created_at: datetime
    attempts: int

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "key": self.key, "number": self.number,
                "event_seq": self.event_seq, "kind": self.kind,
                "recipients": list(self.recipients), "payload": self.payload,
                "created_at": self.created_at.isoformat(), "attempts": self.attempts}


Sink = Callable[[Notification], None]


class Outbox:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._sinks: list[Sink] = []

    def add_sink(self, sink: Sink) -> None:
        """Deliver every notification to ``sink`` (from ``deliver``, e.g. each scheduler
        tick). A sink that raises gets the notification again after the lease."""
        if not callable(sink):
            raise InvalidInput([FieldProblem("sink", "a callable taking a Notification")])
        self._sinks.append(sink)

    @property
    def has_sinks(self) -> bool:
        return bool(self._sinks)

    def claim(self, limit: int = 100, lease: timedelta = timedelta(minutes=5)
              ) -> list[Notification]:
        """Lease up to ``limit`` undelivered notifications, oldest first, for ``lease``
        (above zero, at most 30 days): unacknowledged, they are handed out again after it."""
        arguments.refuse([arguments.integer("limit", limit, 1, 10_000),
                          arguments.duration("lease", lease, MAX_LEASE)])
        now = self._engine.now()
        with db.write(self._engine.database) as conn:
            query = (sa.select(O).where(O.c.acked_at.is_(None),
                                        sa.or_(O.c.leased_until.is_(None),
                                               O.c.leased_until <= now))
                     .order_by(O.c.id).limit(limit))
            if conn.dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True)
            rows = conn.execute(query).all()
            if rows:
                conn.execute(sa.update(O).where(O.c.id.in_([r.id for r in rows]))
                             .values(leased_until=now + lease, attempts=O.c.attempts + 1))
        return [Notification(r.id, r.key, r.number, r.event_seq, r.kind,
                             tuple(json.loads(r.recipients)), json.loads(r.payload),
                             r.created_at, r.attempts + 1) for r in rows]

    def ack(self, ids: Iterable[int]) -> int:
        """Mark notifications delivered; returns how many were still pending."""
        wanted = list(ids) if isinstance(ids, Iterable) and not isinstance(ids, str | bytes) \
            else None
        if wanted is None or any(isinstance(i, bool) or not isinstance(i, int)
                                 or not 1 <= i < 2**63 for i in wanted):
            raise InvalidInput([FieldProblem("ids", "notification ids (positive integers)")])
        if not wanted:
            return 0
        now = self._engine.now()
        with db.write(self._engine.database) as conn:
            return int(conn.execute(sa.update(O).where(O.c.id.in_(wanted),
                                                       O.c.acked_at.is_(None))
                                    .values(acked_at=now)).rowcount)

    def pending(self) -> int:
        with db.read(self._engine.database) as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(O)
                                    .where(O.c.acked_at.is_(None))).scalar_one())

    def deliver(self, limit: int = 500) -> int:
        """Hand pending notifications to the in-process sinks; ack the delivered ones."""
        if not self._sinks:
            return 0
        delivered = 0
        while True:
            batch = self.claim(limit)
            if not batch:
                return delivered
            done = []
            for note in batch:
                try:
                    for sink in self._sinks:
                        sink(note)
                    done.append(note.id)
                except Exception:
                    log.exception("sink failed on %s; will retry after the lease", note.key)
            self.ack(done)
            delivered += len(done)
            if len(batch) < limit:
                return delivered
