"""The schema, as typed SQLAlchemy models. Migrations under ``migrations/`` must equal it
(a test compares them)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy import text as sa_text
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

__all__ = ["Base", "Complaint", "Deadline", "Event", "IdempotencyKey", "NumberSequence",
           "Outbox", "ReviewRun", "RuleSetRow", "Timer", "UTCDateTime"]

Id = BigInteger().with_variant(Integer, "sqlite")

#: PostgreSQL fillfactor of the tables whose rows are updated (migration 0004 says why);
#: the others, append-only or rarely written, keep the default of 100.
FILLFACTOR = {"complaints": 70, "timers": 70, "deadlines": 90}


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, on every backend."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    })


class RuleSetRow(Base):
    """Every rule file the engine loaded, by content hash, with its full text."""

    __tablename__ = "rulesets"
    hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    source: Mapped[str] = mapped_column(String(500))
    text: Mapped[str] = mapped_column(Text)
    loaded_at: Mapped[datetime] = mapped_column(UTCDateTime)
    loaded_by: Mapped[str | None] = mapped_column(String(200))


class NumberSequence(Base):
    """The last complaint number given out per scope (a year, or ``all``)."""

    __tablename__ = "number_sequences"
    scope: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[int] = mapped_column(Integer)


class Complaint(Base):
    """The current state of a complaint; derived from, and checked against, its events."""

    __tablename__ = "complaints"
    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    number: Mapped[str] = mapped_column(String(64), unique=True)
    scope: Mapped[str] = mapped_column(String(32))
    seq: Mapped[int] = mapped_column(Integer)
    ruleset: Mapped[str] = mapped_column(ForeignKey("rulesets.hash"), index=True)
    state: Mapped[str] = mapped_column(String(64), index=True)
    version: Mapped[int] = mapped_column(Integer)
    severity: Mapped[str] = mapped_column(String(64), index=True)
    severity_floor: Mapped[str | None] = mapped_column(String(64))
    department: Mapped[str | None] = mapped_column(String(200), index=True)
    handler: Mapped[str | None] = mapped_column(String(200), index=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    fields: Mapped[str] = mapped_column(Text)
    head_seq: Mapped[int] = mapped_column(Integer)
    head_hash: Mapped[str] = mapped_column(String(64))
    escalated_to: Mapped[str | None] = mapped_column(String(64))
    #: ``Facts.to_text()`` of the history up to ``head_seq``; NULL: replay the history
    facts: Mapped[str | None] = mapped_column(Text)
    __table_args__ = (UniqueConstraint("scope", "seq"),
                      {"postgresql_with": {"fillfactor": FILLFACTOR["complaints"]}})


class Event(Base):
    """Append-only history; each row is chained to the previous one of its complaint."""

    __tablename__ = "events"
    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    complaint_id: Mapped[int] = mapped_column(ForeignKey("complaints.id"))
    seq: Mapped[int] = mapped_column(Integer)
    type: Mapped[str] = mapped_column(String(32))
    trigger: Mapped[str | None] = mapped_column(String(64))
    from_state: Mapped[str | None] = mapped_column(String(64))
    to_state: Mapped[str] = mapped_column(String(64))
    actor_id: Mapped[str] = mapped_column(String(200))
    actor_roles: Mapped[str] = mapped_column(Text)
    actor_department: Mapped[str | None] = mapped_column(String(200))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    payload: Mapped[str] = mapped_column(Text)
    ruleset: Mapped[str] = mapped_column(String(64))
    schema_version: Mapped[int] = mapped_column(Integer)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))
    __table_args__ = (UniqueConstraint("complaint_id", "seq"),)


class IdempotencyKey(Base):
    """A fired request's key, what it asked for, and what it returned."""

    __tablename__ = "idempotency_keys"
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    complaint_id: Mapped[int] = mapped_column(ForeignKey("complaints.id"))
    event_seq: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)



class Timer(Base):
    """One run of an SLA clock on a complaint: its ledger and derived state."""

    __tablename__ = "timers"
    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    #: looked up through ``uq_timers_complaint_id_timer_run`` (complaint_id leads it)
    complaint_id: Mapped[int] = mapped_column(ForeignKey("complaints.id"))
    timer: Mapped[str] = mapped_column(String(64))
    run: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))  # running | paused | stopped
    ledger: Mapped[str] = mapped_column(Text)
    due_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    provisional: Mapped[bool] = mapped_column(Boolean, default=False)
    warned: Mapped[int] = mapped_column(Integer, default=0)
    breached_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    stopped_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    __table_args__ = (UniqueConstraint("complaint_id", "timer", "run"),
                      {"postgresql_with": {"fillfactor": FILLFACTOR["timers"]}})


class Deadline(Base):
    """A derived warning or breach instant. Pending rows (``fired_at`` NULL) are the only
    ones in the due index, so ticks do not slow down as fired rows pile up."""

    __tablename__ = "deadlines"
    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    #: looked up through ``uq_deadlines_timer_id_kind_idx`` (timer_id leads it)
    timer_id: Mapped[int] = mapped_column(ForeignKey("timers.id"))
    complaint_id: Mapped[int] = mapped_column(ForeignKey("complaints.id"))
    kind: Mapped[str] = mapped_column(String(16))  # warning | breach
    idx: Mapped[int] = mapped_column(Integer)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    fired_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    fired_by: Mapped[str | None] = mapped_column(String(200))
    __table_args__ = (
        UniqueConstraint("timer_id", "kind", "idx"),
        Index("ix_deadlines_pending_due", "due_at",
              sqlite_where=sa_text("fired_at IS NULL"),
              postgresql_where=sa_text("fired_at IS NULL")),
        Index("ix_deadlines_pending_complaint", "complaint_id", "due_at",
              sqlite_where=sa_text("fired_at IS NULL"),
              postgresql_where=sa_text("fired_at IS NULL")),
        {"postgresql_with": {"fillfactor": FILLFACTOR["deadlines"]}},
    )


class Outbox(Base):
    """Notifications written in the same transaction as their event; delivered at least
    once to in-process sinks and to pollers (claim / ack)."""

    __tablename__ = "outbox"
    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(200), unique=True)
    complaint_id: Mapped[int | None] = mapped_column(ForeignKey("complaints.id"))
    number: Mapped[str | None] = mapped_column(String(64))
    event_seq: Mapped[int | None] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(32))
    recipients: Mapped[str] = mapped_column(Text)
    payload: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    leased_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    acked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    __table_args__ = (
        Index("ix_outbox_pending", "id",
              sqlite_where=sa_text("acked_at IS NULL"),
              postgresql_where=sa_text("acked_at IS NULL")),
    )


class ReviewRun(Base):
    """One run of a periodic review; the primary key makes each period fire once."""

    __tablename__ = "review_runs"
    review: Mapped[str] = mapped_column(String(64), primary_key=True)
    period: Mapped[str] = mapped_column(String(16), primary_key=True)
    fired_at: Mapped[datetime] = mapped_column(UTCDateTime)
    fired_by: Mapped[str] = mapped_column(String(200))
    complaints: Mapped[int] = mapped_column(Integer)


def _table(model: type[Base]) -> Table:
    return cast(Table, model.__table__)


#: Core handles for the hot paths (the engine issues Core statements, not ORM sessions).
rulesets: Table = _table(RuleSetRow)
number_sequences: Table = _table(NumberSequence)
complaints: Table = _table(Complaint)
events: Table = _table(Event)
idempotency_keys: Table = _table(IdempotencyKey)
timers: Table = _table(Timer)
deadlines: Table = _table(Deadline)
outbox: Table = _table(Outbox)
review_runs: Table = _table(ReviewRun)
