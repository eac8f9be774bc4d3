"""Generate the golden complaint histories under tests/golden/ (not a test; run by hand).

    python tests/golden/make_golden.py           # (re)write every golden file
    python tests/golden/make_golden.py --check   # regenerate in memory, compare, exit 1 on drift

Each scenario runs the real engine on a fresh SQLite file with a ``SimulatedClock`` (fixed
instants, no randomness), then saves:

* ``events``: the complaint's exported rows (``export.export_events``, JSONL, unmasked);
* ``rulesets``: the text of every rule file its events name, by hash;
* ``expected``: ``Replayed.to_json()`` (as ``engine.replay(..., actor=customer_service)``
  returns it) after the last event and at two instants in between.

tests/acceptance/test_golden_histories.py rebuilds the events from the rows, replays them with
``complaintflow.replay.replay_events`` and must get exactly ``expected``. Regenerate only when
a change of the replayed result is intended, and review the diff of the JSON files.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from complaintflow import Actor, Consent, Engine, HistoryEvent, SimulatedClock, export, parse_rules
from complaintflow.compiled import Compiled
from complaintflow.migrate import apply as migrate
from complaintflow.replay import ReplayedTimer, replay_events
from complaintflow.rules.loader import default_rules_text
from complaintflow.scheduler import Scheduler

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run as a script: the repository's tests package
    sys.path.insert(0, str(ROOT))

from tests.support import (  # noqa: E402
    AFTER,
    ASSIGN,
    CS,
    DISSATISFIED,
    DM,
    FEEDBACK,
    GM,
    PLAN,
    QA,
    QM,
    REPORT,
    RESULT,
    SALES,
    SATISFIED,
    TOP,
    complaint_fields,
)

HERE = Path(__file__).resolve().parent
SH = ZoneInfo("Asia/Shanghai")
FORMAT = 1

FIELDS: dict[str, Any] = complaint_fields()
ARCHIVE = {"archive_location": "档案柜A-3", "capa": "浸漆工艺增加抽检"}

#: the second rule file of the migration scenario: whole_complaint 20 working days instead
#: of 15, and a new clock for every open complaint
BUDGET = "extend_roles: [customer_service, department_manager]\n    duration: {working_days: "
HOLIDAY = "    overrides:\n      - {date: 2026-03-04, kind: holiday, note: 临时停工}\n"
NEW_TIMER = """\
  - id: customer_update
    label: {zh: 客户进度更新, en: Customer update}
    start: {on: receipt}
    stop: [closed]
    duration: {working_days: 10}
    on_breach: {notify: [customer_service]}

"""


def local(month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=SH)


def second_rules_text(text: str) -> str:
    assert text.count(BUDGET + "15}") == 1
    anchor = "  - id: whole_complaint\n"
    assert text.count(anchor) == 1
    return text.replace(BUDGET + "15}", BUDGET + "20}").replace(anchor, NEW_TIMER + anchor)


class Sim:
    """One engine on a fresh SQLite file, driven in simulated time. A ``punctual`` scheduler
    fires every deadline at its exact instant while the clock moves on; otherwise only the
    explicit ``tick`` calls fire anything (late)."""

    def __init__(self, directory: Path, start: datetime, rules_text: str, punctual: bool) -> None:
        self.url = f"sqlite:///{directory / 'golden.db'}"
        self.clock = SimulatedClock(start)
        self.engine = Engine.open(
            self.url, rules=parse_rules(rules_text, "<golden>"), clock=self.clock
        )
        self.number = ""
        self.punctual = punctual
        self.instants: list[datetime] = []  # replay instants, if the scenario picks them

    def at(self, moment: datetime) -> Sim:
        while self.punctual and (due := self.engine.next_due()) is not None and due <= moment:
            self.clock.set(max(due, self.clock()))
            Scheduler(self.engine, worker="golden").tick()
        self.clock.set(moment)
        return self

    def tick(self, moment: datetime) -> None:
        self.at(moment)
        Scheduler(self.engine, worker="golden").tick()

    def submit(self, actor: Actor = CS, **extra: Any) -> None:
        self.number = self.engine.submit({**FIELDS, **extra}, actor).number

    def fire(self, trigger: str, actor: Actor, data: dict[str, Any] | None = None) -> None:
        self.engine.fire(self.number, trigger, actor, data)

    def reopen(self, rules_text: str) -> None:
        self.engine.close()
        self.engine = Engine.open(
            self.url, rules=parse_rules(rules_text, "<golden v2>"), clock=self.clock
        )


# -- scenarios -------------------------------------------------------------------------------


def general_closed(sim: Sim) -> None:
    """A general complaint from receipt to archive, every clock kept."""
    sim.submit()
    sim.at(local(3, 2, 9, 20)).fire("respond", CS, {"response_note": "已致电客户, 承诺两日内联系"})
    sim.at(local(3, 2, 9, 50)).fire(
        "record", CS, {"readback_confirmed": True, "customer_demand": ["replace"]}
    )
    sim.at(local(3, 2, 10, 30)).fire("confirm", CS, ASSIGN)
    sim.at(local(3, 2, 11)).fire("contact_customer", QA, {"contact_note": "约定3日上门"})
    sim.at(local(3, 2, 14)).fire("organise_investigation", QA)
    sim.tick(local(3, 3, 9))
    sim.at(local(3, 4, 15)).fire("submit_report", QA, REPORT)
    sim.at(local(3, 5, 10)).fire("propose_plan", QA, PLAN)
    sim.at(local(3, 6, 10)).fire("resolve", AFTER, RESULT)
    sim.at(local(3, 6, 16)).fire("feed_back", CS, FEEDBACK)
    sim.tick(local(3, 10, 9))
    sim.at(local(3, 11, 16, 30)).fire("revisit", CS, SATISFIED)
    sim.tick(local(3, 12, 9))
    sim.at(local(3, 12, 10)).fire("close", CS, ARCHIVE)


def major_with_approvals_and_reopen(sim: Sim) -> None:
    """A safety complaint: special team, GM approvals, top management's signature, a
    dissatisfied customer, reopening and a second round."""
    sim.submit(SALES, safety_issue=True, customer_demand=["replace", "compensation"])
    sim.at(local(3, 2, 9, 10)).fire("hand_over", SALES)
    sim.tick(local(3, 2, 9, 15))
    sim.at(local(3, 2, 9, 30)).fire("record", CS, {"readback_confirmed": True})
    sim.at(local(3, 2, 10)).fire("confirm", DM, ASSIGN)
    sim.at(local(3, 2, 14)).fire("name_special_team", GM, {"special_team": "质量部+技术部专项小组"})
    sim.at(local(3, 4, 11)).fire("submit_report", QA, REPORT)
    sim.at(local(3, 4, 15)).fire(
        "propose_plan",
        QA,
        {
            "disposal_plan": "更换电机并赔偿停机损失",
            "disposal_measures": ["replace", "compensation"],
            "compensation_amount": "3000",
        },
    )
    sim.at(local(3, 5, 9)).fire("approve_plan", GM)
    sim.at(local(3, 5, 16)).fire("resolve", AFTER, RESULT)
    sim.at(local(3, 6, 9)).fire("sign_reply", TOP)
    sim.at(local(3, 6, 10)).fire("feed_back", CS, FEEDBACK)
    sim.tick(local(3, 11, 9))
    sim.at(local(3, 11, 10)).fire("revisit", CS, DISSATISFIED)
    sim.at(local(3, 11, 11)).fire("reopen", QM, {"dispute_reason": "赔偿金额不足"})
    sim.at(local(3, 12, 10)).fire(
        "propose_plan",
        QA,
        {
            "disposal_plan": "追加赔偿",
            "disposal_measures": ["compensation"],
            "compensation_amount": "5000",
        },
    )
    sim.at(local(3, 12, 15)).fire("approve_plan", GM)
    sim.at(local(3, 13, 10)).fire("resolve", AFTER, {"disposal_result": "追加赔偿已支付"})
    sim.at(local(3, 13, 11)).fire("sign_reply", TOP)
    sim.at(local(3, 13, 14)).fire("feed_back", CS, FEEDBACK)
    sim.tick(local(3, 18, 15))
    sim.at(local(3, 18, 16)).fire("revisit", CS, SATISFIED)
    sim.tick(local(3, 19, 9))
    sim.at(local(3, 19, 10)).fire("close", CS, ARCHIVE)


def breached_clocks(sim: Sim) -> None:
    """An urgent complaint taken by a sales rep on a Friday night and left lying: handover,
    urgent escalation (reassigned to the GM), registration, then every investigation clock
    and finally the whole-complaint clock breach, which raises the severity to major."""
    sim.submit(SALES, urgent=True, customer_demand=["onsite_visit"])
    for moment in (
        local(3, 6, 20, 20),
        local(3, 6, 21, 30),
        local(3, 7, 10),
        local(3, 9, 9),
        local(3, 9, 12),
    ):
        sim.tick(moment)
    sim.at(local(3, 9, 13, 30)).fire("record", CS, {"readback_confirmed": True})
    sim.at(local(3, 9, 14)).fire("confirm", CS, ASSIGN)
    day = local(3, 10, 9)
    while day < local(4, 10):
        sim.tick(day)
        day += timedelta(days=1)
    sim.at(local(4, 10, 10)).fire("report_progress", CS, {"progress_note": "仍在调查"})


def extension_with_consent(sim: Sim) -> None:
    """A sample re-inspection that needs more time: two clocks extended, each with the
    customer's recorded consent, then resolved within the extended whole-complaint budget."""
    sim.submit()
    sim.at(local(3, 2, 9, 30)).fire("record", CS, {"readback_confirmed": True})
    sim.at(local(3, 2, 10)).fire("confirm", CS, ASSIGN)
    sim.at(local(3, 2, 11)).fire("contact_customer", QA, {"contact_note": "客户寄回样品"})
    sim.at(local(3, 3, 10)).fire("receive_sample", QA)
    sim.at(local(3, 3, 11)).fire("organise_investigation", QA)
    sim.tick(local(3, 5, 9))
    given = local(3, 5, 9, 30)
    sim.at(local(3, 5, 10))
    sim.engine.extend_timer(
        sim.number,
        "sample_reinspection",
        QA,
        2,
        Consent("张伟", given, "phone", "同意等待第三方检测"),
        reason="第三方检测排期",
    )
    sim.engine.extend_timer(
        sim.number,
        "whole_complaint",
        DM,
        5,
        Consent("张伟", given, "phone", "同意延长总时限"),
        reason="检测周期长",
    )
    sim.tick(local(3, 9, 9))
    sim.at(local(3, 10, 10)).fire("record_reinspection", QA, {"reinspection_result": "复检不合格"})
    sim.at(local(3, 11, 10)).fire("submit_report", QA, REPORT)
    sim.at(local(3, 12, 10)).fire("propose_plan", QA, PLAN)
    sim.at(local(3, 13, 10)).fire("resolve", AFTER, RESULT)
    sim.tick(local(3, 16, 9))


def migrated(sim: Sim) -> None:
    """Started under the default rules, moved to a second version (longer whole-complaint
    budget, one more clock) while investigated, finished under the second version."""
    sim.submit()
    sim.at(local(3, 2, 9, 30)).fire("record", CS, {"readback_confirmed": True})
    sim.at(local(3, 2, 10)).fire("confirm", CS, ASSIGN)
    sim.at(local(3, 3, 10)).fire("submit_report", QA, REPORT)
    sim.tick(local(3, 4, 9))
    sim.at(local(3, 4, 10))
    sim.reopen(second_rules_text(sim.engine.rules.text))
    moved = migrate(sim.engine, sim.engine.rules.version, QM)
    assert [i.number for i in moved] == [sim.number]
    sim.at(local(3, 5, 10)).fire("propose_plan", QA, PLAN)
    sim.at(local(3, 6, 10)).fire("resolve", AFTER, RESULT)
    sim.at(local(3, 6, 15)).fire("feed_back", CS, FEEDBACK)
    sim.tick(local(3, 24, 9))


#: name -> (start, scenario, punctual scheduler)
def recomputed_after_a_new_holiday(sim: Sim) -> None:
    """Confirmed on Monday; on Tuesday a new rule version declares Wednesday a holiday and
    the working-time clocks are recomputed on its calendar (the complaint stays on its own
    rule version); then investigated and planned. Replayed before and after the holiday."""
    sim.submit()
    sim.at(local(3, 2, 9, 20)).fire("respond", CS, {"response_note": "已致电客户"})
    sim.at(local(3, 2, 9, 40)).fire("record", CS, {"readback_confirmed": True})
    sim.at(local(3, 2, 10)).fire("confirm", CS, ASSIGN)
    sim.at(local(3, 2, 11)).fire("contact_customer", QA, {"contact_note": "约定寄回样品"})
    sim.at(local(3, 3, 9))
    anchor = "    official_through: 2026\n"
    text = sim.engine.rules.text
    assert text.count(anchor) == 1
    sim.reopen(text.replace(anchor, HOLIDAY + anchor))
    assert sim.engine.recompute_timers(QM)
    sim.at(local(3, 6, 10)).fire("submit_report", QA, REPORT)
    sim.at(local(3, 9, 10)).fire("propose_plan", QA, PLAN)
    sim.instants = [local(3, 3, 9, 30), local(3, 5, 12)]


SCENARIOS: dict[str, tuple[datetime, Callable[[Sim], None], bool]] = {
    "general_closed": (local(3, 2, 9), general_closed, True),
    "major_approvals_reopen": (local(3, 2, 9), major_with_approvals_and_reopen, True),
    "breached_clocks": (local(3, 6, 20), breached_clocks, False),
    "extension_with_consent": (local(3, 2, 9), extension_with_consent, True),
    "migrated": (local(3, 2, 9), migrated, True),
    "recomputed_holiday": (local(3, 2, 9), recomputed_after_a_new_holiday, True),
}


# -- offline replay (the same as the test does) ---------------------------------------------


def versions_named(rows: list[dict[str, Any]]) -> set[str]:
    """The rule versions a history needs: those its events ran under, and those whose
    calendars a recompute moved a clock to."""
    named = {r["ruleset"] for r in rows}
    for r in rows:
        version = json.loads(r["payload"]).get("calendar_version")
        if r["type"] == "deadline_recomputed" and version:
            named.add(version)
    return named


def event_from_row(row: dict[str, Any]) -> HistoryEvent:
    """An exported JSONL row back to the event it was written from."""
    return HistoryEvent(
        number=row["number"],
        seq=row["seq"],
        type=row["type"],
        trigger=row["trigger"],
        from_state=row["from_state"],
        to_state=row["to_state"],
        actor_id=row["actor_id"],
        actor_roles=tuple(json.loads(row["actor_roles"])),
        actor_department=row["actor_department"],
        occurred_at=datetime.fromisoformat(row["occurred_at"].replace("Z", "+00:00")),
        payload=json.loads(row["payload"]),
        ruleset=row["ruleset"],
        schema_version=row["schema_version"],
        prev_hash=row["prev_hash"],
        hash=row["hash"],
    )


def remaining_with(
    compiled: dict[str, Compiled],
) -> Callable[[ReplayedTimer, str, datetime], timedelta | None]:
    """Remaining time of a running clock: working time on its calendar (the one of the rule
    version a recompute moved it to, if any) for working units, elapsed time otherwise
    (what ``Engine.replay`` reports)."""

    def remaining(timer: ReplayedTimer, version: str, moment: datetime) -> timedelta | None:
        if timer.due_at is None:
            return None
        rules = compiled[version]
        ctimer = rules.timers.by_id.get(timer.timer)
        cal = rules.timers.calendar_of(ctimer) if ctimer is not None else None
        if timer.calendar_version is not None and ctimer is not None:
            # a recompute moved the clock onto the calendars of a newer rule version
            name = ctimer.definition.calendar or rules.rules.definition.calendar
            cal = compiled[timer.calendar_version].calendars.get(name or "") or cal
        if str(timer.budget.get("unit", "")).startswith("working") and cal is not None:
            return cal.between(moment, timer.due_at)
        return timer.due_at - moment

    return remaining


def offline_replay(golden: dict[str, Any], at: datetime | None) -> dict[str, Any]:
    compiled = {
        h: Compiled.build(parse_rules(text, f"<golden>/{h[:12]}"))
        for h, text in golden["rulesets"].items()
    }
    events = [event_from_row(r) for r in golden["events"]]
    replayed = replay_events(golden["number"], events, at, remaining_with(compiled),
                             lambda version: compiled[version].rules.severity_levels)
    assert replayed is not None
    result: dict[str, Any] = json.loads(json.dumps(replayed.to_json(), ensure_ascii=False))
    return result


# -- generation -------------------------------------------------------------------------------


def generate(
    name: str, start: datetime, scenario: Callable[[Sim], None], punctual: bool
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="golden-") as tmp:
        sim = Sim(Path(tmp), start, default_rules_text(), punctual)
        try:
            scenario(sim)
            engine, number = sim.engine, sim.number
            out = io.StringIO()
            export.export_events(engine, out, "jsonl", number=number, actor=CS)
            *rows, end = (json.loads(line) for line in out.getvalue().splitlines())
            assert end[export.END_TYPE]["events"] == len(rows)  # the end record is not kept
            assert rows and not any(r["masked"] for r in rows)
            versions = sorted(versions_named(rows))
            from complaintflow.audit import ruleset_text

            rulesets = {v: ruleset_text(engine, v)[1] for v in versions}
            history = engine.history(number, CS)
            picks = [history[len(history) // 3], history[(2 * len(history)) // 3]]
            instants: list[datetime | None] = [
                *(sim.instants or [e.occurred_at + timedelta(minutes=30) for e in picks]),
                None,
            ]
            golden: dict[str, Any] = {
                "format": FORMAT,
                "scenario": name,
                "description": " ".join((scenario.__doc__ or "").split()),
                "scheduler": "punctual" if punctual else "explicit ticks only",
                "number": number,
                "rulesets": rulesets,
                "events": rows,
                "expected": [],
            }
            for at in instants:
                live = json.loads(
                    json.dumps(engine.replay(number, at, CS).to_json(), ensure_ascii=False)
                )
                assert live == offline_replay(golden, at), f"{name}: offline replay differs"
                golden["expected"].append(
                    {"at": at.isoformat() if at is not None else None, "replayed": live}
                )
            report = engine.verify(deep=True)
            assert report.ok, report.findings
            return golden
        finally:
            sim.engine.close()


def render(golden: dict[str, Any]) -> str:
    return json.dumps(golden, ensure_ascii=False, indent=1, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--check", action="store_true", help="compare with the stored files instead of writing them"
    )
    parser.add_argument("--only", nargs="*", help="scenario names (default: all)")
    args = parser.parse_args(argv)
    drift = 0
    for name, (start, scenario, punctual) in SCENARIOS.items():
        if args.only and name not in args.only:
            continue
        text = render(generate(name, start, scenario, punctual))
        path = HERE / f"{name}.json"
        if args.check:
            same = path.exists() and path.read_text(encoding="utf-8") == text
            drift += not same
            print(f"{'ok   ' if same else 'DRIFT'} {path.name}")
        else:
            path.write_text(text, encoding="utf-8")
            golden = json.loads(text)
            print(
                f"wrote {path.name}: {len(golden['events'])} events, "
                f"{len(golden['rulesets'])} rule set(s), {len(text) // 1024} KiB"
            )
    return 1 if drift else 0


if __name__ == "__main__":
    sys.exit(main())
