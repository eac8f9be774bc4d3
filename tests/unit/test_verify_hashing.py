"""Verification hashes each event from its stored texts (``verify.stored_hash``) instead of
re-serialising a list with ``storage.hashing.event_hash``; both must give the same digest for
any column values, and stored instants must come back as the text ``hashing.iso`` hashes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st

from complaintflow.storage.hashing import event_hash, iso
from complaintflow.storage.tables import events as E
from complaintflow.verify import StoredEvent, _EventReader, stored_hash

texts = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=40)
maybe = st.none() | texts
instants = st.datetimes(
    min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
)


@given(
    number=texts,
    seq=st.integers(0, 10**9),
    type_=texts,
    trigger=maybe,
    from_state=maybe,
    to_state=texts,
    actor_id=texts,
    actor_roles=texts,
    department=maybe,
    at=instants,
    payload=texts,
    ruleset=texts,
    schema_version=st.integers(0, 99),
    prev_hash=texts,
)
def test_stored_hash_equals_event_hash(
    number: str,
    seq: int,
    type_: str,
    trigger: str | None,
    from_state: str | None,
    to_state: str,
    actor_id: str,
    actor_roles: str,
    department: str | None,
    at: datetime,
    payload: str,
    ruleset: str,
    schema_version: int,
    prev_hash: str,
) -> None:
    expected = event_hash(
        number=number,
        seq=seq,
        type=type_,
        trigger=trigger,
        from_state=from_state,
        to_state=to_state,
        actor_id=actor_id,
        actor_roles=actor_roles,
        actor_department=department,
        occurred_at=at,
        payload=payload,
        ruleset=ruleset,
        schema_version=schema_version,
        prev_hash=prev_hash,
    )
    ev = StoredEvent(
        seq,
        type_,
        trigger,
        from_state,
        to_state,
        actor_id,
        actor_roles,
        department,
        iso(at),
        payload,
        None,
        ruleset,
        schema_version,
        prev_hash,
        "",
    )
    assert stored_hash(number, ev) == expected


@given(at=instants)
def test_sqlite_instants_read_as_the_hashed_text(at: datetime) -> None:
    engine = sa.create_engine("sqlite://")
    with engine.connect() as conn:
        stored = E.c.occurred_at.type.dialect_impl(conn.dialect).bind_processor(conn.dialect)
        assert stored is not None
        raw = stored(at)
        assert _EventReader(conn).instant(raw) == iso(at)
        # an instant written some other way still reads as the same text
        assert _EventReader(conn).instant(at.replace(tzinfo=None).isoformat()) == iso(at)
    engine.dispose()


def test_an_instant_with_an_offset_is_hashed_in_utc() -> None:
    engine = sa.create_engine("sqlite://")
    with engine.connect() as conn:
        at = datetime(2026, 3, 2, 9, 0, tzinfo=UTC) + timedelta(microseconds=1)
        assert _EventReader(conn).instant("2026-03-02 09:00:00.000001") == iso(at)
    engine.dispose()
