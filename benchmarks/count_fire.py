"""Instructions per ``Engine.fire`` on SQLite, counted by valgrind's callgrind.

Wall and CPU times on a shared two-core VM move by 10-50 % between runs, which hides a change
of a few per cent. The number of instructions a fire executes does not: two runs of the same
code agree to about 0.02 %. This script runs the plan of ``bench_fire.py`` (9 fires per
complaint) in a child process under ``valgrind --tool=callgrind``, with instrumentation
switched on only around the fires (setup, imports and submissions are not counted), and
prints the instructions per fire. It counts work in the process only: time in the kernel
(``fsync``, writing the WAL) and waiting are not in it, so it measures the engine's CPU work,
not its throughput.

Run: ``python benchmarks/count_fire.py [--complaints 60] [--tree PATH]`` (``--tree``: the
checkout whose ``complaintflow`` is counted, default this one; its ``.venv`` is used). Needs
``valgrind`` (Debian package ``valgrind``); about 20 s for 540 fires.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def child(tree: Path, complaints: int, signals: Path) -> None:
    """Under valgrind: set up, say so, wait to be counted, fire, say so, wait."""
    sys.path.insert(0, str(tree))
    sys.path.insert(0, str(tree / "benchmarks"))
    import bench_fire as bf

    from complaintflow import Engine, SimulatedClock

    with tempfile.TemporaryDirectory() as tmp:
        clock = SimulatedClock(bf.START)
        engine = Engine.open(f"sqlite:///{tmp}/count.db", clock=clock)
        numbers = bf.submit_many(engine, complaints)
        bf.fire_plan(engine, clock, bf.submit_many(engine, 10), None)  # warm every path
        (signals / "ready").touch()
        while not (signals / "go").exists():
            time.sleep(0.05)
        fired = bf.fire_plan(engine, clock, numbers, None)
        (signals / "done").write_text(str(fired))
        while not (signals / "stop").exists():
            time.sleep(0.05)
        engine.close()


def _wait_for(path: Path, process: subprocess.Popen[bytes]) -> None:
    while not path.exists():
        if process.poll() is not None:
            raise SystemExit(f"the counted process ended early (status {process.returncode})")
        time.sleep(0.2)


def count(tree: Path, complaints: int) -> tuple[int, int]:
    """(fires, instructions counted over them)."""
    for tool in ("valgrind", "callgrind_control"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found (Debian: apt-get install valgrind)")
    python = tree / ".venv" / "bin" / "python"
    with tempfile.TemporaryDirectory() as tmp:
        signals, out = Path(tmp), Path(tmp) / "callgrind.out"
        process = subprocess.Popen(
            ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--cache-sim=no",
             f"--callgrind-out-file={out}", str(python), __file__, "--child",
             "--tree", str(tree), "--complaints", str(complaints), "--signals", str(signals)],
            env={**os.environ, "PYTHONHASHSEED": "0"}, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        try:
            _wait_for(signals / "ready", process)
            pid = str(process.pid)  # valgrind runs the program in its own process
            subprocess.run(["callgrind_control", "-i", "on", pid], check=True,
                           capture_output=True)
            subprocess.run(["callgrind_control", "-z", pid], check=True, capture_output=True)
            (signals / "go").touch()
            _wait_for(signals / "done", process)
            subprocess.run(["callgrind_control", "-i", "off", pid], check=True,
                           capture_output=True)
            fired = int((signals / "done").read_text())
            (signals / "stop").touch()
            process.wait(timeout=120)
        finally:
            if process.poll() is None:
                process.kill()
        found = re.search(r"^totals: (\d+)", out.read_text(), re.MULTILINE)
        if found is None:
            raise SystemExit("callgrind wrote no totals")
        return fired, int(found.group(1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--complaints", type=int, default=60)
    parser.add_argument("--tree", type=Path, default=ROOT)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--signals", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    tree = args.tree.resolve()
    if args.child:
        child(tree, args.complaints, args.signals)
        return 0
    fired, instructions = count(tree, args.complaints)
    print(f"{tree}: {fired} fires, {instructions // fired:,} instructions per fire")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
