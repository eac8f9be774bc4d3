"""Shared helpers for the benchmark scripts: the machine description and the marked
sections of docs/benchmarks.md that ``--write`` replaces."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import os
import platform
import re
import sqlite3
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"
DEFAULT_PG_URL = os.environ.get(
    "COMPLAINTFLOW_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)

_SKELETON = """# Benchmarks

<!-- BEGIN environment -->
<!-- END environment -->

<!-- BEGIN machine -->
<!-- END machine -->

<!-- BEGIN fire -->
<!-- END fire -->
"""


def load_average() -> str:
    """The 1/5/15-minute load averages: other work on the machine skews every number."""
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "unknown"
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


def today() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _run(*cmd: str) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=False).stdout
    except OSError:
        return ""


def cpu_model() -> str:
    for line in _run("lscpu").splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def memory_total() -> str:
    with contextlib.suppress(OSError), open("/proc/meminfo", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                kib = int(line.split()[1])
                return f"{kib / 1024 / 1024:.1f} GiB"
    return "unknown"


def disk_of(path: Path) -> str:
    """The block device holding ``path``, its file system and what the kernel says of it."""
    out = _run("findmnt", "-no", "SOURCE,FSTYPE", "--target", str(path)).split()
    if not out:
        return "unknown"
    source, fstype = out[0], (out[1] if len(out) > 1 else "?")
    name = Path(source).name
    sys_block = Path("/sys/block") / name
    details = []
    rota = sys_block / "queue" / "rotational"
    if rota.exists():
        details.append(f"rotational flag {rota.read_text().strip()}")
    model = sys_block / "device" / "model"
    if model.exists() and model.read_text().strip():
        details.append(f"model {model.read_text().strip()}")
    if name.startswith("vd"):
        details.append("virtio disk: the host's media is not visible from the guest")
    return f"{source} ({fstype}; {', '.join(details) or 'no details'})"


def pg_facts(url: str) -> dict[str, str]:
    """Server version and the durability settings that bound commit rates."""
    import sqlalchemy as sa

    try:
        engine = sa.create_engine(url, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            facts = {
                name: str(conn.exec_driver_sql(f"SHOW {name}").scalar_one())
                for name in (
                    "server_version",
                    "fsync",
                    "synchronous_commit",
                    "wal_sync_method",
                    "shared_buffers",
                )
            }
        engine.dispose()
        return facts
    except Exception as exc:  # the environment table must not fail on a missing server
        return {"server_version": f"not reachable ({type(exc).__name__})"}


def code_identity() -> str:
    """Which code was measured: the commit, whether the tree had local changes, and a digest
    of the library's sources and rule files as they were."""
    head = _run("git", "-C", str(ROOT), "rev-parse", "--short", "HEAD").strip() or "unknown"
    changed = [
        line
        for line in _run("git", "-C", str(ROOT), "status", "--porcelain").splitlines()
        if line.strip() and not line[3:].startswith(("benchmarks/", "docs/benchmarks.md"))
    ]
    digest = hashlib.sha256()
    for folder in ("workflow", "states", "storage", "rules", "migrations"):
        for path in sorted((ROOT / folder).rglob("*")):
            if path.suffix in (".py", ".yaml") and "__pycache__" not in path.parts:
                digest.update(str(path.relative_to(ROOT)).encode())
                digest.update(path.read_bytes())
    state = f"{len(changed)} other files changed or new" if changed else "clean tree"
    return f"commit {head} ({state}); source digest {digest.hexdigest()[:12]}"


def environment(pg_url: str = DEFAULT_PG_URL, db_dir: Path | None = None) -> dict[str, str]:
    import psycopg
    import sqlalchemy
    import transitions

    from complaintflow.storage.db import SQLITE_SYNCHRONOUS

    pg = pg_facts(pg_url)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "CPUs (nproc)": str(cpus),
        "CPU model (lscpu)": cpu_model(),
        "Memory": memory_total(),
        "Disk (benchmark files)": disk_of(db_dir or Path("/tmp")),
        "OS": f"{platform.system()} {platform.release()}",
        "Python": platform.python_version(),
        "SQLite (library)": sqlite3.sqlite_version,
        "SQLite durability": f"journal_mode=WAL, synchronous={SQLITE_SYNCHRONOUS}",
        "PostgreSQL server": pg.get("server_version", "?"),
        "PostgreSQL durability": (
            f"fsync={pg.get('fsync', '?')}, synchronous_commit="
            f"{pg.get('synchronous_commit', '?')}, wal_sync_method="
            f"{pg.get('wal_sync_method', '?')}, shared_buffers={pg.get('shared_buffers', '?')}"
        ),
        "Code measured": code_identity(),
        "Libraries": (
            f"SQLAlchemy {sqlalchemy.__version__}, psycopg {psycopg.__version__}, "
            f"transitions {transitions.__version__}"
        ),
    }


def environment_markdown(env: dict[str, str]) -> str:
    lines = [f"Last updated {today()} by a benchmark run with `--write`.", "", "| | |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in env.items()]
    return "\n".join(lines)


def write_section(name: str, body: str, doc: Path = DOC) -> None:
    """Replace the text between ``<!-- BEGIN name -->`` and ``<!-- END name -->``."""
    text = doc.read_text(encoding="utf-8") if doc.exists() else _SKELETON
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    if begin not in text or end not in text:
        text = text.rstrip("\n") + f"\n\n{begin}\n{end}\n"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
    text = pattern.sub(lambda _m: f"{begin}\n{body.strip()}\n{end}", text, count=1)
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text, encoding="utf-8")
