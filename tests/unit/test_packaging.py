"""The wheel installs one package, ``complaintflow``, with its data files, and no stray
top-level packages from the source layout."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCE_FOLDERS = ("workflow", "states", "rules", "storage", "migrations")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    """Build from a copy of the sources, so no build/ or egg-info lands in the working tree."""
    pytest.importorskip("build")
    base = tmp_path_factory.mktemp("wheel")
    src = base / "src"
    src.mkdir()
    shutil.copy2(ROOT / "pyproject.toml", src)
    for name in ("README.md", "LICENSE", "MANIFEST.in"):
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, src)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for folder in SOURCE_FOLDERS:
        shutil.copytree(ROOT / folder, src / folder, ignore=ignore)
    out = base / "dist"
    # --no-isolation: the build backend is already installed, and the index may be offline
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "build",
            "--wheel",
            "--no-isolation",
            "--outdir",
            str(out),
            str(src),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (built,) = out.glob("complaintflow-*.whl")
    return zipfile.ZipFile(built)


def dist_info(wheel: zipfile.ZipFile, name: str) -> str:
    (path,) = [n for n in wheel.namelist() if n.endswith(f".dist-info/{name}")]
    return wheel.read(path).decode("utf-8")


def test_top_level_is_only_complaintflow(wheel: zipfile.ZipFile) -> None:
    assert dist_info(wheel, "top_level.txt").split() == ["complaintflow"]
    tops = {
        n.split("/", 1)[0]
        for n in wheel.namelist()
        if not n.split("/", 1)[0].endswith(".dist-info")
    }
    assert tops == {"complaintflow"}
    for folder in (*SOURCE_FOLDERS, "tests", "benchmarks", "docs"):
        assert not any(n.startswith(f"{folder}/") for n in wheel.namelist()), folder


@pytest.mark.parametrize(
    "path",
    [
        "complaintflow/__init__.py",
        "complaintflow/py.typed",
        "complaintflow/rules/default.yaml",
        "complaintflow/migrations/env.py",
        "complaintflow/migrations/script.py.mako",
        "complaintflow/migrations/versions/0001_initial_schema.py",
        "complaintflow/states/machine.py",
        "complaintflow/storage/tables.py",
    ],
)
def test_wheel_contains(wheel: zipfile.ZipFile, path: str) -> None:
    assert path in wheel.namelist()


def test_every_source_module_is_shipped(wheel: zipfile.ZipFile) -> None:
    mapping = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["tool"]["setuptools"][
        "package-dir"
    ]
    names = set(wheel.namelist())
    for package, folder in mapping.items():
        for module in (ROOT / folder).glob("*.py"):
            assert f"{package.replace('.', '/')}/{module.name}" in names, module


def test_shipped_default_rules_are_the_source_file(wheel: zipfile.ZipFile) -> None:
    assert (
        wheel.read("complaintflow/rules/default.yaml")
        == (ROOT / "rules" / "default.yaml").read_bytes()
    )


def test_console_scripts_point_into_the_wheel(wheel: zipfile.ZipFile) -> None:
    entry_points = configparser.ConfigParser()
    entry_points.read_string(dist_info(wheel, "entry_points.txt"))
    scripts = (
        dict(entry_points["console_scripts"]) if entry_points.has_section("console_scripts") else {}
    )
    assert "complaintflow" in scripts
    names = set(wheel.namelist())
    for name, target in scripts.items():
        module = target.split(":", 1)[0].replace(".", "/")
        assert f"{module}.py" in names or f"{module}/__init__.py" in names, (name, target)
