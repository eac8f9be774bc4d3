"""ruff and mypy --strict are part of the test run, so the README's one test command and CI
cannot pass with lint or type errors.

mypy cannot follow setuptools' package-dir mapping through an editable install, so the
test builds a link tree ``.typecheck/complaintflow`` (gitignored) mirroring the installed
layout and points MYPYPATH at it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MAPPED = ("states", "rules", "storage", "migrations")


def _link_tree() -> Path:
    tree = ROOT / ".typecheck"
    shutil.rmtree(tree, ignore_errors=True)
    package = tree / "complaintflow"
    package.mkdir(parents=True)
    for item in (ROOT / "workflow").iterdir():
        if item.suffix in (".py", ".typed"):
            (package / item.name).symlink_to(item)
    for name in MAPPED:
        (package / name).symlink_to(ROOT / name, target_is_directory=True)
    return tree


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=env, text=True,
                          capture_output=True, check=False)


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git for the file list")
def test_ruff_check_is_clean() -> None:
    result = _run("ruff", "check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_is_clean() -> None:
    tree = _link_tree()
    env = {**os.environ, "MYPYPATH": str(tree)}
    result = _run("mypy", "--strict", "-p", "complaintflow", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
