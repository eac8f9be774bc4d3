"""The README is the truth: CI runs its test command verbatim, and its embedding snippets
run as written."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _commands() -> list[str]:
    text = (ROOT / "README.md").read_text("utf-8")
    return re.findall(r"```sh\n(.+?)\n```", text)


def test_readme_has_the_two_commands() -> None:
    demo, tests = _commands()[:2]
    assert demo.startswith("python3 -m venv .venv") and demo.endswith("complaintflow demo")
    assert tests.startswith("python3 -m venv .venv") and tests.endswith(".venv/bin/pytest")


def test_ci_runs_the_readme_test_command() -> None:
    tests = _commands()[1]
    ci = (ROOT / ".ci" / "run").read_text("utf-8")
    assert tests in ci.splitlines()
    assert "COMPLAINTFLOW_REQUIRE_PG=1" in ci
    assert "pg_ctlcluster --skip-systemctl-redirect" in ci


def _snippets() -> list[str]:
    text = (ROOT / "README.md").read_text("utf-8")
    return re.findall(r"```python\n(.+?)\n```", text, re.S)


def test_the_embedding_snippets_run_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README's Python blocks, as a reader would paste them: one after the other, in a
    fresh directory, on the system clock (so the outbox may well be empty)."""
    snippets = _snippets()
    assert len(snippets) == 2
    monkeypatch.chdir(tmp_path)
    scope: dict[str, Any] = {"__name__": "readme"}
    try:
        for snippet in snippets:
            exec(compile(snippet, "README.md", "exec"), scope)
    finally:
        if "engine" in scope:
            scope["engine"].close()
    assert (tmp_path / "complaints.db").exists()
    assert "confirm True" in capsys.readouterr().out  # the host's buttons were printed


def test_the_auditor_commands_are_those_the_default_demo_prints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README shows what ``complaintflow demo`` (seed 7, 300 complaints) tells an
    auditor to run; the demo is deterministic, so they must be the same (before: the
    README showed another complaint and instant than the demo printed)."""
    import json

    from click.testing import CliRunner

    from complaintflow.cli import main

    text = (ROOT / "README.md").read_text("utf-8")
    shown = re.search(r"For the default run .*?\n```\n(.+?)\n```", text, re.S)
    assert shown is not None
    monkeypatch.chdir(tmp_path)
    result = CliRunner(env={"COMPLAINTFLOW_NOW": None, "COMPLAINTFLOW_DB": None}).invoke(
        main, ["--json", "demo"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)["auditor"]["commands"]
    assert shown.group(1).splitlines() == printed
