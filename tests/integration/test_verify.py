"""Tampering with the stored history behind the engine's back is found by ``verify()``, which
names the complaint, the first bad event and the kind of damage."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa

from complaintflow import Engine, VerificationReport
from complaintflow.rules.loader import default_rules_text, parse_rules
from complaintflow.storage.tables import Base
from tests.support import AFTER, CS, QA, QM, complaint_fields

C = Base.metadata.tables["complaints"]
RULESETS = Base.metadata.tables["rulesets"]
REPORT = {
    "root_cause": "process",
    "responsibility": "company",
    "investigation_report": "绕组浸漆不良",
}


def populate(engine: Engine) -> list[str]:
    """Three complaints of 1, 5 and 6 events."""
    first = engine.submit(complaint_fields(), CS).number
    numbers = [first]
    for steps in (4, 5):
        n = engine.submit(complaint_fields(), CS).number
        data: list[tuple[str, Any, dict[str, Any]]] = [
            ("record", CS, {"readback_confirmed": True}),
            ("confirm", CS, {"responsible_department": "quality", "handler": "wang.qa"}),
            ("submit_report", QA, REPORT),
            ("propose_plan", QA, {"disposal_plan": "更换", "disposal_measures": ["replace"]}),
            ("resolve", AFTER, {"disposal_result": "已更换"}),
        ]
        for trigger, actor, fields in data[:steps]:
            engine.fire(n, trigger, actor, fields)
        numbers.append(n)
    return numbers


def execute(engine: Engine, sql: str, **params: Any) -> int:
    with engine.database.begin() as conn:
        return int(conn.execute(sa.text(sql), params).rowcount)


def complaint_id(engine: Engine, number: str) -> int:
    with engine.database.connect() as conn:
        return int(
            conn.execute(
                sa.text("SELECT id FROM complaints WHERE number = :n"), {"n": number}
            ).scalar_one()
        )


def delete_complaint(engine: Engine, number: str) -> None:
    """Delete a complaint and every row that refers to it, children first."""
    cid = complaint_id(engine, number)
    with engine.database.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            if "complaint_id" in table.c:
                conn.execute(sa.delete(table).where(table.c.complaint_id == cid))
        conn.execute(sa.delete(C).where(C.c.id == cid))


def findings(report: VerificationReport) -> list[tuple[str | None, int | None, str]]:
    return [(f.number, f.seq, f.kind) for f in report.findings]


def test_clean_database_verifies(engine: Engine) -> None:
    empty = engine.verify()
    assert empty.ok
    assert (empty.complaints, empty.events, empty.findings) == (0, 0, [])
    populate(engine)
    seen: list[int] = []
    report = engine.verify(progress=seen.append)
    assert report.ok, report.findings
    assert (report.complaints, report.events) == (3, 1 + 5 + 6)
    assert sum(seen) == 3
    assert report.to_json() == {"ok": True, "complaints": 3, "events": 12, "findings": []}


def test_edited_event_payload(engine: Engine) -> None:
    numbers = populate(engine)
    target = numbers[1]
    cid = complaint_id(engine, target)
    with engine.database.connect() as conn:
        payload = conn.execute(
            sa.text("SELECT payload FROM events WHERE complaint_id = :c AND seq = 3"), {"c": cid}
        ).scalar_one()
    changed = json.loads(payload)
    changed["set"]["handler"] = "someone.else"
    assert (
        execute(
            engine,
            "UPDATE events SET payload = :p WHERE complaint_id = :c AND seq = 3",
            p=json.dumps(changed),
            c=cid,
        )
        == 1
    )
    report = engine.verify()
    assert not report.ok
    assert findings(report) == [(target, 3, "edited")]
    assert report.findings[0].detail


def test_edited_event_actor(engine: Engine) -> None:
    numbers = populate(engine)
    target = numbers[2]
    execute(
        engine,
        "UPDATE events SET actor_id = 'gm.liu' WHERE complaint_id = :c AND seq = 1",
        c=complaint_id(engine, target),
    )
    assert findings(engine.verify()) == [(target, 1, "edited")]


def test_deleted_middle_event(engine: Engine) -> None:
    numbers = populate(engine)
    target = numbers[2]
    assert (
        execute(
            engine,
            "DELETE FROM events WHERE complaint_id = :c AND seq = 3",
            c=complaint_id(engine, target),
        )
        == 1
    )
    assert findings(engine.verify()) == [(target, 3, "missing")]


def test_swapped_events(engine: Engine) -> None:
    numbers = populate(engine)
    target = numbers[2]
    cid = complaint_id(engine, target)
    with engine.database.begin() as conn:
        for old, new in ((3, -3), (4, 3), (-3, 4)):
            conn.execute(
                sa.text("UPDATE events SET seq = :new WHERE complaint_id = :c AND seq = :old"),
                {"new": new, "old": old, "c": cid},
            )
    report = engine.verify()
    assert len(report.findings) == 1
    (finding,) = report.findings
    assert (finding.number, finding.seq) == (target, 3)
    assert finding.kind in ("reordered", "edited")


def test_truncated_tail(engine: Engine) -> None:
    numbers = populate(engine)
    target = numbers[2]
    assert (
        execute(
            engine,
            "DELETE FROM events WHERE complaint_id = :c AND seq = 6",
            c=complaint_id(engine, target),
        )
        == 1
    )
    report = engine.verify()
    assert findings(report) == [(target, 6, "truncated")]
    assert "6" in report.findings[0].detail


def test_all_events_of_a_complaint_deleted(engine: Engine) -> None:
    numbers = populate(engine)
    target = numbers[1]
    execute(engine, "DELETE FROM events WHERE complaint_id = :c", c=complaint_id(engine, target))
    assert findings(engine.verify()) == [(target, 1, "truncated")]


def test_complaint_emptied_to_a_shell_row(engine: Engine) -> None:
    """Its history deleted and its row reset to look as if it never had any: the row still
    holds its number's place in the sequence, so only the missing events can show it."""
    numbers = populate(engine)
    target = numbers[1]
    cid = complaint_id(engine, target)
    with engine.database.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            if "complaint_id" in table.c:
                conn.execute(sa.delete(table).where(table.c.complaint_id == cid))
        conn.execute(sa.update(C).where(C.c.id == cid).values(
            head_seq=0, version=0, fields="{}", facts=None))
    report = engine.verify()
    assert findings(report) == [(target, 1, "truncated")]
    assert "never had any" in report.findings[0].detail
    assert findings(engine.verify(deep=True))[:1] == [(target, 1, "truncated")]


def test_deleted_complaint_with_its_events(engine: Engine) -> None:
    numbers = populate(engine)
    target = numbers[1]
    delete_complaint(engine, target)
    report = engine.verify()
    assert findings(report) == [(None, None, "complaint_missing")]
    assert target == "TS-2026-000002"
    assert re.search(r"\b2026\b.*\bnumbers 2\b", report.findings[0].detail)
    assert report.complaints == 2


def test_deleted_complaint_with_the_later_numbers_shifted_down(engine: Engine) -> None:
    """Deleting a complaint and moving every later one's sequence number (and the counter)
    down to close the gap still shows: the numbers, which the hashes cover, no longer fit
    their sequence numbers."""
    numbers = populate(engine)
    delete_complaint(engine, numbers[0])
    for seq in (2, 3):
        execute(engine, "UPDATE complaints SET seq = seq - 1 WHERE scope = '2026' AND seq = :s",
                s=seq)
    execute(engine, "UPDATE number_sequences SET value = value - 1 WHERE scope = '2026'")
    report = engine.verify()
    assert findings(report) == [(numbers[1], 1, "number_mismatch"),
                                (numbers[2], 1, "number_mismatch")]
    assert "TS-2026-000001" in report.findings[0].detail
    assert findings(engine.verify(deep=True))[:2] == findings(report)


def test_complaint_moved_to_another_number_scope(engine: Engine) -> None:
    numbers = populate(engine)
    execute(engine, "UPDATE complaints SET scope = '2025' WHERE number = :n", n=numbers[2])
    report = engine.verify()
    assert (numbers[2], 1, "number_mismatch") in findings(report)
    assert (None, None, "complaint_missing") in findings(report)


def test_numbers_without_a_year_verify(db_url: str, clock: Any) -> None:
    text = default_rules_text().replace('number_pattern: "TS-{year}-{seq:06d}"',
                                        'number_pattern: "C{seq}"')
    assert "C{seq}" in text
    eng = Engine.open(db_url, rules=parse_rules(text), clock=clock)
    try:
        numbers = [eng.submit(complaint_fields(), CS).number for _ in range(3)]
        assert numbers == ["C1", "C2", "C3"]
        assert eng.verify().ok
        execute(eng, "UPDATE complaints SET seq = 7 WHERE number = 'C3'")
        assert (("C3", 1, "number_mismatch") in findings(eng.verify()))
    finally:
        eng.close()


def test_first_rule_version_deleted_after_a_migration(db_url: str, clock: Any) -> None:
    """The numbering version of a migrated complaint is gone: a finding, not a crash."""
    from complaintflow.migrate import apply

    with Engine.open(db_url, clock=clock) as old:
        number = old.submit(complaint_fields(), CS).number
        first = old.rules.version
    text = default_rules_text().replace("name: 客户投诉处理程序 (default)", "name: changed")
    with Engine.open(db_url, rules=parse_rules(text), clock=clock) as new:
        apply(new, new.rules.version, QM)
        assert new.verify().ok
        execute(new, "DELETE FROM rulesets WHERE hash = :h", h=first)
    with Engine.open(db_url, rules=parse_rules(text), clock=clock) as fresh:  # nothing cached
        assert findings(fresh.verify()) == [(number, 1, "unknown_ruleset")]


def test_deleted_newest_complaint(engine: Engine) -> None:
    numbers = populate(engine)
    delete_complaint(engine, numbers[-1])
    report = engine.verify()
    assert findings(report) == [(None, None, "complaint_missing")]
    assert re.search(r"\b2026\b.*\bnumbers 3\b", report.findings[0].detail)


def test_hand_edited_current_state(engine: Engine) -> None:
    numbers = populate(engine)
    target = numbers[1]
    assert (
        execute(engine, "UPDATE complaints SET state = 'closed' WHERE number = :n", n=target) == 1
    )
    report = engine.verify()
    assert findings(report) == [(target, 5, "state_mismatch")]
    assert "closed" in report.findings[0].detail


def test_hand_edited_current_fields(engine: Engine) -> None:
    numbers = populate(engine)
    target = numbers[1]
    with engine.database.connect() as conn:
        stored = json.loads(
            conn.execute(
                sa.text("SELECT fields FROM complaints WHERE number = :n"), {"n": target}
            ).scalar_one()
        )
    stored["handler"] = "someone.else"
    execute(
        engine,
        "UPDATE complaints SET fields = :f WHERE number = :n",
        f=json.dumps(stored, ensure_ascii=False),
        n=target,
    )
    report = engine.verify()
    assert findings(report) == [(target, 5, "fields_mismatch")]
    assert "handler" in report.findings[0].detail


def test_tampering_in_several_complaints_is_reported_for_each(engine: Engine) -> None:
    numbers = populate(engine)
    execute(engine, "UPDATE complaints SET state = 'closed' WHERE number = :n", n=numbers[0])
    execute(
        engine,
        "DELETE FROM events WHERE complaint_id = :c AND seq = 2",
        c=complaint_id(engine, numbers[2]),
    )
    assert findings(engine.verify()) == [
        (numbers[0], 1, "state_mismatch"),
        (numbers[2], 2, "missing"),
    ]


@pytest.mark.parametrize(
    ("column", "value", "kind"),
    [
        ("version", 9, "version_mismatch"),
        ("severity", "major", "severity_mismatch"),
        ("head_hash", "f" * 64, "head_mismatch"),
        ("head_seq", 4, "head_mismatch"),
    ],
)
def test_hand_edited_bookkeeping_columns(
    engine: Engine, column: str, value: object, kind: str
) -> None:
    numbers = populate(engine)
    target = numbers[1]
    with engine.database.begin() as conn:
        conn.execute(sa.update(C).where(C.c.number == target).values({column: value}))
    assert findings(engine.verify()) == [(target, 5, kind)]


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("handler", "someone.else"),
        ("department", "technical"),
        ("received_at", datetime(2020, 1, 1, tzinfo=UTC)),
        ("ruleset", "f" * 64),
    ],
)
def test_hand_edited_columns_derived_from_history(
    engine: Engine, column: str, value: object
) -> None:
    """Every column of the current-state row that the engine acts on (search indexes, the
    pinned rule set, the receipt time) must agree with the history."""
    numbers = populate(engine)
    target = numbers[1]
    with engine.database.begin() as conn:
        conn.execute(
            sa.insert(RULESETS).values(
                hash="f" * 64,
                name="forged",
                source="forged.yaml",
                text="forged",
                loaded_at=datetime(2026, 1, 1, tzinfo=UTC),
                loaded_by=None,
            )
        )
        conn.execute(sa.update(C).where(C.c.number == target).values({column: value}))
    report = engine.verify()
    assert not report.ok, f"a hand-edited complaints.{column} went unnoticed"
    assert {f.number for f in report.findings} == {target}
