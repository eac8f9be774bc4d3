"""Two requests with one idempotency key at the same moment, on two connections: the
answer is the one the same requests get one after the other (SQLite serialises its write
transactions, so there they always come one after the other). Requests for different
things: the later one is refused with ``IdempotencyConflict``; the same submission twice:
both get the one complaint. Never a ``ConcurrentUpdate`` or a ``StorageError``.

On PostgreSQL both requests are held after their lookup of the key (which finds nothing)
until both have made it, so that both go on to write the key."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from complaintflow import Complaint, Engine, IdempotencyConflict
from tests.support import CS, complaint_fields

RECORD = {"readback_confirmed": True}


@pytest.fixture
def both_past_the_lookup(engine: Engine, monkeypatch: pytest.MonkeyPatch
                         ) -> Callable[[str], None]:
    """Hold each of two requests after its key lookup (at ``method``) until both are
    there (PostgreSQL; on SQLite the second waits for the first's transaction instead)."""
    def hold(method: str) -> None:
        if engine.dialect != "postgresql":
            return
        barrier = threading.Barrier(2, timeout=20)
        original = getattr(Engine, method)

        def held(self: Engine, *args: Any, **kwargs: Any) -> Any:
            barrier.wait()
            return original(self, *args, **kwargs)

        monkeypatch.setattr(Engine, method, held)

    return hold


def _race(*calls: Callable[[], Complaint]) -> list[Complaint | BaseException]:
    def outcome(call: Callable[[], Complaint]) -> Complaint | BaseException:
        try:
            return call()
        except Exception as exc:
            return exc

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(outcome, calls))


def _kinds(outcomes: list[Complaint | BaseException]) -> list[str]:
    return sorted(type(o).__name__ for o in outcomes)


def test_fires_on_two_complaints_with_one_key(engine: Engine,
                                              both_past_the_lookup: Callable[[str], None]
                                              ) -> None:
    first, second = (engine.submit(complaint_fields(), CS) for _ in range(2))
    both_past_the_lookup("_prepare")
    outcomes = _race(
        lambda: engine.fire(first.number, "record", CS, RECORD, idempotency_key="call-7"),
        lambda: engine.fire(second.number, "record", CS, RECORD, idempotency_key="call-7"))
    assert _kinds(outcomes) == ["Complaint", "IdempotencyConflict"], outcomes
    conflict = next(o for o in outcomes if isinstance(o, IdempotencyConflict))
    assert conflict.key == "call-7"
    assert [p.field for p in conflict.problems] == ["idempotency_key"]
    moved = next(o for o in outcomes if isinstance(o, Complaint))
    assert {engine.get(n, CS).version for n in (first.number, second.number)} == {1, 2}
    # the key stays with the request that won: retried, it answers the same
    again = engine.fire(moved.number, "record", CS, RECORD, idempotency_key="call-7")
    assert again == moved
    assert engine.verify().ok


def test_two_submissions_with_one_key(engine: Engine,
                                      both_past_the_lookup: Callable[[str], None]) -> None:
    both_past_the_lookup("_next_number")
    outcomes = _race(
        lambda: engine.submit(complaint_fields(), CS, idempotency_key="mail-1"),
        lambda: engine.submit(complaint_fields(description="另一件事"), CS,
                              idempotency_key="mail-1"))
    assert _kinds(outcomes) == ["Complaint", "IdempotencyConflict"], outcomes
    assert engine.find().total == 1
    assert engine.verify().ok


def test_the_same_submission_twice_at_once(engine: Engine,
                                           both_past_the_lookup: Callable[[str], None]
                                           ) -> None:
    """A retry sent while the first request is still in flight gets its complaint."""
    both_past_the_lookup("_next_number")
    outcomes = _race(*[lambda: engine.submit(complaint_fields(), CS, idempotency_key="m-2")
                       for _ in range(2)])
    assert _kinds(outcomes) == ["Complaint", "Complaint"], outcomes
    assert outcomes[0] == outcomes[1]
    assert engine.find().total == 1
    assert engine.verify().ok


def test_a_retry_racing_its_original_on_one_complaint(
        engine: Engine, both_past_the_lookup: Callable[[str], None]) -> None:
    """The same fire twice at once (a client retrying before the first answer came): both
    get the one result, on both backends (before, PostgreSQL gave the loser
    ConcurrentUpdate: its version check failed before its key was looked at again)."""
    number = engine.submit(complaint_fields(), CS).number
    both_past_the_lookup("_prepare")
    outcomes = _race(*[lambda: engine.fire(number, "record", CS, RECORD,
                                           idempotency_key="retry-1")] * 2)
    assert _kinds(outcomes) == ["Complaint", "Complaint"], outcomes
    assert outcomes[0] == outcomes[1]
    assert engine.get(number, CS).version == 2
    assert engine.verify().ok


def test_a_different_fire_winning_the_row_is_still_a_concurrent_update(
        engine: Engine, both_past_the_lookup: Callable[[str], None]) -> None:
    number = engine.submit(complaint_fields(), CS).number
    both_past_the_lookup("_prepare")
    outcomes = _race(
        lambda: engine.fire(number, "record", CS, RECORD, idempotency_key="a"),
        lambda: engine.fire(number, "record", CS, RECORD, idempotency_key="b"))
    if engine.dialect == "postgresql":
        assert _kinds(outcomes) == ["Complaint", "ConcurrentUpdate"], outcomes
    else:  # serialised: the second finds the complaint recorded already
        assert _kinds(outcomes) == ["Complaint", "TriggerNotAllowed"], outcomes
