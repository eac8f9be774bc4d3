"""Per-transition cost of the shared state machine, against one machine per complaint.

Measures, each as the median of ``--runs`` runs:

* ``ComplaintMachine.step``: the shared ``transitions`` machine of the default rules with the
  full guard pipeline, ``record`` from ``received`` with an empty ``Facts()`` and the fields
  of a realistic submission (hot loop of ``--steps`` steps);
* the same trigger on a bare shared ``transitions.Machine`` (one always-true condition), to
  separate the library's share from the guard pipeline's;
* building one ``transitions.Machine(model=obj, ...)`` per complaint for the default rule
  set, and ``add_model`` on one shared machine (fresh, and with ``--preloaded`` entries
  already in its model list), with tracemalloc bytes per instance;
* building the shared ``ComplaintMachine`` once (paid once per rule-set version).

Times are reported as process CPU time (what the code costs, robust against other work on a
shared machine) and as wall time (what a caller waits, inflated when the CPUs are busy).

Run: ``python benchmarks/bench_machine.py [--write]``.
"""

from __future__ import annotations

import argparse
import gc
import inspect
import shutil
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from transitions import Machine  # noqa: E402

from benchmarks._common import (  # noqa: E402
    code_identity,
    environment,
    environment_markdown,
    load_average,
    today,
    write_section,
)
from complaintflow.rules.loader import load_rules  # noqa: E402
from complaintflow.rules.ruleset import RuleSet  # noqa: E402
from complaintflow.rules.values import check_field  # noqa: E402
from complaintflow.states.conditions import Facts  # noqa: E402
from complaintflow.states.machine import ComplaintMachine  # noqa: E402
from tests.support import CS, complaint_fields  # noqa: E402

NUMBER = "TS-2026-000001"


class _Subject:
    __slots__ = ("state",)

    def __init__(self, state: str) -> None:
        self.state = state


class _Model:
    """A plain object standing in for a complaint given its own machine or ``add_model``."""


@dataclass(frozen=True)
class Timing:
    """Microseconds of wall time and of process CPU time."""

    wall: float
    cpu: float

    def __truediv__(self, n: float) -> Timing:
        return Timing(self.wall / n, self.cpu / n)


@dataclass
class Result:
    name: str
    unit: str
    runs: list[float]  # CPU µs for timings, bytes for memory
    note: str
    wall: list[float] | None = None

    @property
    def median(self) -> float:
        return statistics.median(self.runs)

    @property
    def wall_median(self) -> float | None:
        return statistics.median(self.wall) if self.wall else None


def machine_states_and_transitions(rules: RuleSet) -> tuple[list[str], list[dict[str, Any]]]:
    states = list(rules.states)
    transitions = [
        {"trigger": t.trigger, "source": list(t.source), "dest": t.to} for t in rules.transitions
    ]
    return states, transitions


def realistic_fields(rules: RuleSet) -> dict[str, Any]:
    """The stored values of a submission, as the engine decodes them before a step."""
    return {name: check_field(rules.fields[name], raw) for name, raw in complaint_fields().items()}


def _timed(fn: Callable[[], None]) -> Timing:
    gc.collect()
    cpu = time.process_time_ns()
    start = time.perf_counter_ns()
    fn()
    wall = time.perf_counter_ns() - start
    return Timing(wall / 1000, (time.process_time_ns() - cpu) / 1000)


def _allocated(fn: Callable[[], object]) -> tuple[int, object]:
    """Bytes still allocated after ``fn`` (its result kept alive) and the result."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = fn()
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    return after - before, kept


def shared_machine(rules: RuleSet) -> tuple[Callable[[], ComplaintMachine], dict[str, Any]]:
    """How the engine builds the machine (with the rule set's working calendars when the
    engine has them) and the built-in condition subjects of a complaint."""
    received = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)
    try:
        from complaintflow.compiled import Compiled
    except ImportError:  # an engine without per-version compiled bundles
        return lambda: ComplaintMachine(rules), {"number": NUMBER, "received_at": received}
    compiled = Compiled.build(rules)
    calendars = compiled.calendars
    return lambda: ComplaintMachine(rules, calendars), compiled.builtins(NUMBER, received)


def bench_step(rules: RuleSet, steps: int) -> Timing:
    build, builtins = shared_machine(rules)
    machine = build()
    fields = realistic_fields(rules)
    facts = Facts()
    data = {"readback_confirmed": True}
    extra: dict[str, Any] = {}
    if "now" in inspect.signature(machine.step).parameters:
        extra["now"] = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)
    step = machine.step
    result = step(NUMBER, "received", "record", CS, fields, builtins, facts, data, **extra)
    assert result.to_state == "recorded", result

    def loop() -> None:
        for _ in range(steps):
            step(NUMBER, "received", "record", CS, fields, builtins, facts, data, **extra)

    return _timed(loop) / steps


def bench_bare_trigger(rules: RuleSet, steps: int) -> Timing:
    states, transitions = machine_states_and_transitions(rules)
    for t in transitions:
        t["conditions"] = [lambda event: True]
    machine = Machine(
        model=None,
        states=states,
        transitions=transitions,
        initial=rules.initial,
        auto_transitions=False,
        send_event=True,
    )
    event = machine.events["record"]

    def loop() -> None:
        for _ in range(steps):
            event.trigger(_Subject("received"))

    return _timed(loop) / steps


def bench_machine_per_complaint(rules: RuleSet, builds: int) -> tuple[Timing, float]:
    states, transitions = machine_states_and_transitions(rules)

    def build() -> Machine:
        return Machine(
            model=_Model(),
            states=states,
            transitions=transitions,
            initial=rules.initial,
            auto_transitions=False,
        )

    def loop() -> None:
        for _ in range(builds):
            build()

    per_build = _timed(loop) / builds
    size, kept = _allocated(lambda: [build() for _ in range(builds)])
    del kept
    return per_build, size / builds


def bench_add_model(rules: RuleSet, models: int, preloaded: int) -> tuple[Timing, float, Timing]:
    states, transitions = machine_states_and_transitions(rules)

    def shared() -> Machine:
        return Machine(
            model=None,
            states=states,
            transitions=transitions,
            initial=rules.initial,
            auto_transitions=False,
        )

    fresh = shared()
    objects = [_Model() for _ in range(models)]

    def add_all(machine: Machine, items: list[_Model]) -> None:
        for obj in items:
            machine.add_model(obj)

    per_add = _timed(lambda: add_all(fresh, objects)) / models

    mem_machine = shared()
    size, _ = _allocated(lambda: add_all(mem_machine, [_Model() for _ in range(models)]))

    # ``add_model`` first checks ``mod not in self.models`` (a list scan); only the length
    # of that list depends on how many complaints are registered, so it is pre-filled
    # directly instead of paying ``preloaded`` full registrations.
    loaded = shared()
    loaded.models.extend(_Model() for _ in range(preloaded))
    more = [_Model() for _ in range(models)]
    per_add_loaded = _timed(lambda: add_all(loaded, more)) / models
    return per_add, size / models, per_add_loaded


def bench_shared_build(rules: RuleSet, builds: int = 10) -> tuple[Timing, float]:
    build, _ = shared_machine(rules)

    def loop() -> None:
        for _ in range(builds):
            build()

    elapsed = _timed(loop) / builds
    size, kept = _allocated(build)
    del kept
    return elapsed, float(size)


def run(args: argparse.Namespace, console: Console) -> list[Result]:
    rules = load_rules(None)
    args.load_before = load_average()
    collected: dict[str, list[float]] = {}
    walls: dict[str, list[float]] = {}

    def add(key: str, value: float | Timing) -> None:
        if isinstance(value, Timing):
            walls.setdefault(key, []).append(value.wall)
            value = value.cpu
        collected.setdefault(key, []).append(value)

    for i in range(args.runs):
        console.print(f"[dim]run {i + 1}/{args.runs}[/dim]")
        add("step", bench_step(rules, args.steps))
        add("bare", bench_bare_trigger(rules, args.steps))
        per_build, build_bytes = bench_machine_per_complaint(rules, args.builds)
        add("build", per_build)
        add("build_bytes", build_bytes)
        per_add, add_bytes, per_add_loaded = bench_add_model(rules, args.models, args.preloaded)
        add("add", per_add)
        add("add_bytes", add_bytes)
        add("add_loaded", per_add_loaded)
        shared_us, shared_bytes = bench_shared_build(rules)
        add("shared", shared_us)
        add("shared_bytes", shared_bytes)
    args.load_after = load_average()

    n_states, n_trans = len(rules.states), len(rules.transitions)
    return [
        Result(
            "ComplaintMachine.step (shared machine + guard pipeline)",
            "µs/step",
            collected["step"],
            f"{args.steps:,} steps of record from received",
            wall=walls.get("step"),
        ),
        Result(
            "bare shared transitions.Machine trigger (no guards)",
            "µs/step",
            collected["bare"],
            "same trigger, one always-true condition",
            wall=walls.get("bare"),
        ),
        Result(
            "transitions.Machine built per complaint",
            "µs/instance",
            collected["build"],
            f"{n_states} states, {n_trans} transitions, no conditions; {args.builds} builds",
            wall=walls.get("build"),
        ),
        Result(
            "  memory per per-complaint Machine",
            "bytes/instance",
            collected["build_bytes"],
            "tracemalloc, instances kept alive",
            wall=walls.get("build_bytes"),
        ),
        Result(
            "add_model on a shared machine (fresh)",
            "µs/model",
            collected["add"],
            f"first {args.models:,} models",
            wall=walls.get("add"),
        ),
        Result(
            "  memory per add_model",
            "bytes/model",
            collected["add_bytes"],
            "tracemalloc, models kept alive",
            wall=walls.get("add_bytes"),
        ),
        Result(
            f"add_model with {args.preloaded:,} models already on the machine",
            "µs/model",
            collected["add_loaded"],
            "add_model scans machine.models (a list); pre-filled for this row",
            wall=walls.get("add_loaded"),
        ),
        Result(
            "shared ComplaintMachine built once per rule set",
            "µs",
            collected["shared"],
            "paid once per rule-set version (calendars built beforehand, as the engine does)",
            wall=walls.get("shared"),
        ),
        Result(
            "  memory of the shared ComplaintMachine",
            "bytes",
            collected["shared_bytes"],
            "tracemalloc",
            wall=walls.get("shared_bytes"),
        ),
    ]


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "–"
    if unit.startswith("bytes"):
        return f"{value:,.0f}"
    return f"{value:,.1f}" if value >= 10 else f"{value:,.2f}"


def table(results: list[Result]) -> Table:
    out = Table(title="State machine cost (median of runs)")
    for i, name in enumerate(HEADERS):
        out.add_column(name, justify="right" if 0 < i < 4 else "left")
    for r in results:
        out.add_row(*_cells(r))
    return out


HEADERS = ("Measurement", "Median (CPU)", "Min – max (CPU)", "Median (wall)", "Unit", "Note")


def _cells(r: Result) -> list[str]:
    return [
        r.name.strip(),
        fmt(r.median, r.unit),
        f"{fmt(min(r.runs), r.unit)} – {fmt(max(r.runs), r.unit)}",
        fmt(r.wall_median, r.unit),
        r.unit,
        r.note,
    ]


def markdown(results: list[Result], args: argparse.Namespace) -> str:
    lines = [
        f"Measured {today()} with `python benchmarks/bench_machine.py --write` "
        f"(median of {args.runs} runs). Load average (1/5/15 min) {args.load_before} before, "
        f"{args.load_after} after. Code: {code_identity()}.",
        "",
        "| " + " | ".join(HEADERS) + " |",
        "|---|--:|--:|--:|---|---|",
    ]
    lines += ["| " + " | ".join(_cells(r)) + " |" for r in results]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50_000, help="steps per hot loop")
    parser.add_argument("--runs", type=int, default=5, help="runs; the median is reported")
    parser.add_argument(
        "--builds", type=int, default=300, help="per-complaint machines built per run"
    )
    parser.add_argument("--models", type=int, default=1_000, help="add_model calls per run")
    parser.add_argument(
        "--preloaded",
        type=int,
        default=50_000,
        help="models already on the shared machine for the scaling row",
    )
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    args = parser.parse_args(argv)
    console = Console(width=max(140, shutil.get_terminal_size().columns))
    results = run(args, console)
    console.print(table(results))
    console.print(f"load average before {args.load_before}, after {args.load_after}")
    if args.write:
        write_section("environment", environment_markdown(environment()))
        write_section("machine", markdown(results, args))
        console.print("[green]docs/benchmarks.md updated (machine, environment)[/green]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
