"""Who loaded a rule set: the CLI stores a rule file it has not seen before as loaded by the
acting person (``--actor``, or ``COMPLAINTFLOW_ACTOR`` for commands without one), else by
``complaintflow cli``; ``rules list`` and ``rules show`` say so."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner, Result

from complaintflow.cli import main
from tests.unit.test_cli import ENV, FIELDS
from tests.unit.test_cli_audit import second_rules


def run(*args: str, env: dict[str, str | None] | None = None) -> Result:
    return CliRunner(env={**ENV, **(env or {})}).invoke(main, list(args))


def ok(result: Result) -> str:
    assert result.exit_code == 0, result.output
    return result.stdout


def _loaded_by(db: Path) -> dict[str, str | None]:
    doc = json.loads(ok(run("--db", str(db), "--json", "rules", "list")))
    return {r["hash"]: r["loaded_by"] for r in doc["rulesets"]}


def test_a_rule_set_is_stored_as_loaded_by_the_acting_person(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    args = [a for f in FIELDS for a in ("--field", f)]
    ok(run("--db", str(db), "submit", "--actor", "admin.zhou", "--role", "customer_service", *args))
    (first,) = _loaded_by(db).values()
    assert first == "admin.zhou"
    # a command without --actor: COMPLAINTFLOW_ACTOR names who loads a new rule file
    rules = second_rules(tmp_path)
    doc = json.loads(
        ok(
            run(
                "--db",
                str(db),
                "--rules",
                str(rules),
                "--json",
                "rules",
                "list",
                env={"COMPLAINTFLOW_ACTOR": "admin.wang"},
            )
        )
    )
    second = doc["current"]
    assert _loaded_by(db)[second] == "admin.wang"
    shown = run("--db", str(db), "rules", "show", second[:8])
    assert ok(shown) == rules.read_text("utf-8")
    assert f"rule set {second[:12]}" in shown.stderr and "by admin.wang" in shown.stderr
    doc = json.loads(ok(run("--db", str(db), "--json", "rules", "show", second[:8])))
    assert doc["loaded_by"] == "admin.wang" and doc["hash"] == second


def test_without_an_actor_the_cli_is_recorded(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    ok(run("--db", str(db), "rules", "list"))
    assert list(_loaded_by(db).values()) == ["complaintflow cli"]
