"""The ``complaintflow`` command line: people get tables, ``--json`` gets one JSON document.

Tables and results go to stdout, progress and errors to stderr. Every ``ComplaintflowError``
is caught here, at the boundary, and shown as a message (or a JSON ``error`` object) with
exit code 1; click's usage errors keep exit code 2.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import os
import shlex
import signal
import sys
import threading
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, is_dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any, TextIO, TypeVar
from zoneinfo import ZoneInfo

import click
import sqlalchemy as sa
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from complaintflow import arguments, audit, migrate
from complaintflow.actor import Actor
from complaintflow.clock import SimulatedClock
from complaintflow.demo import (
    DOWNTIME,
    REFUSAL_KINDS,
    SCHEDULER_POLL,
    DemoSummary,
    is_demo_database,
    open_demo_engine,
    run_demo,
)
from complaintflow.engine import Engine
from complaintflow.errors import ComplaintflowError, InvalidInput, MissingFields, RuleError, hint
from complaintflow.export import check_export, export_events, open_destination
from complaintflow.migrate import MigrationItem, MigrationRefused
from complaintflow.outbox import Notification
from complaintflow.replay import MALFORMED, Replayed, ReplayedTimer, malformed_history
from complaintflow.rules.loader import default_rules_text, json_schema, load_rules
from complaintflow.rules.model import MAX_DURATION
from complaintflow.rules.ruleset import RuleSet
from complaintflow.rules.values import to_json
from complaintflow.scheduler import DEFAULT_BATCH_SIZE, DEFAULT_THREADS, Scheduler, TickReport
from complaintflow.states.machine import TriggerOption
from complaintflow.storage import db
from complaintflow.timeline import render_timeline
from complaintflow.timers import Consent
from complaintflow.verify import Finding
from complaintflow.views import Complaint, HistoryEvent, TimerView

__all__ = ["main"]

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_DB = "sqlite:///complaints.db"
DEFAULT_RULES_OUT = "complaintflow-rules.yaml"
DEFAULT_DEMO_DB = "complaintflow-demo.db"
#: Field types whose values are text: ``--field phone=13812345678`` stays a string.
TEXTUAL = frozenset({"string", "text", "enum", "date", "datetime"})
#: Attributes of errors copied into the JSON ``error`` object when present.
ERROR_FACTS = (
    "check",
    "reason",
    "number",
    "trigger",
    "state",
    "kind",
    "key",
    "context",
    "expected_version",
    "actual_version",
    "seq",
)


@dataclass
class Settings:
    """The group's options, shared by every command through ``ctx.obj``."""

    db: str
    rules: Path | None
    json: bool
    #: ``--now``: the fixed instant every command runs at (naive: the rules' time zone),
    #: or ``None`` for the system clock.
    now: datetime | None = None


class CommandFailed(Exception):
    """A problem the CLI itself finds (a file that exists, a database URL it cannot use)."""


# -- the error boundary ---------------------------------------------------------------------


def error_text(exc: BaseException) -> str:
    """One line, or a head line and one indented line per problem."""
    if isinstance(exc, RuleError):
        return str(exc)
    if isinstance(exc, MigrationRefused):
        count = len(exc.items)
        head = (
            f"migration refused, nothing changed: {count} "
            f"complaint{'s' if count != 1 else ''} cannot move:"
        )
        return head + "\n" + "\n".join(f"  {i.number}: {'; '.join(i.problems)}" for i in exc.items)
    if isinstance(exc, InvalidInput) and exc.problems:
        return f"invalid {exc.context}:\n" + "\n".join(f"  {p}" for p in exc.problems)
    if isinstance(exc, MissingFields) and exc.problems:
        head = f"{exc.number}: {exc.trigger!r} refused in state {exc.state!r} [{exc.check}]:"
        return head + "\n" + "\n".join(f"  {p}" for p in exc.problems)
    return str(exc)


def error_json(exc: BaseException) -> dict[str, Any]:
    """The ``error`` object of ``--json`` output: type, message and the error's facts."""
    doc: dict[str, Any] = {"type": type(exc).__name__, "message": str(exc)}
    for name in ERROR_FACTS:
        value = getattr(exc, name, None)
        if isinstance(value, str | int) or (value is None and hasattr(exc, name)):
            doc[name] = value
    problems = getattr(exc, "problems", None)
    if problems:
        doc["problems"] = [
            asdict(p) if is_dataclass(p) and not isinstance(p, type) else str(p) for p in problems
        ]
    return doc


class Reported(click.ClickException):
    """An expected error, shown without a traceback; exit code 1."""

    exit_code = 1

    def __init__(self, error: BaseException, as_json: bool) -> None:
        super().__init__(str(error))
        self.error = error
        self.as_json = as_json

    def show(self, file: Any = None) -> None:
        if self.as_json:
            click.echo(_dumps({"error": error_json(self.error)}))
        else:
            click.echo(f"error: {error_text(self.error)}", err=True)


class _JsonUsageError(click.UsageError):
    """A usage error under ``--json``: the same exit code (2), the message as a JSON
    ``error`` document on stdout (``type`` ``UsageError``, ``message``, ``command``)."""

    def __init__(self, error: click.UsageError) -> None:
        super().__init__(error.format_message(), error.ctx)
        self.error = error

    def show(self, file: Any = None) -> None:
        command = self.ctx.command_path if self.ctx is not None else None
        click.echo(_dumps({"error": {"type": "UsageError", "message": self.format_message(),
                                     "command": command}}))


class _Group(click.Group):
    """The root group: turns expected errors into ``Reported``, and usage errors into JSON
    under ``--json``."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (ComplaintflowError, CommandFailed) as exc:
            settings = ctx.obj if isinstance(ctx.obj, Settings) else None
            raise Reported(exc, settings.json if settings else False) from None
        except click.UsageError as exc:
            settings = ctx.obj if isinstance(ctx.obj, Settings) else None
            if settings is not None and settings.json and not isinstance(exc, _JsonUsageError):
                raise _JsonUsageError(exc) from None
            raise


# -- output helpers -------------------------------------------------------------------------


def _dumps(doc: Any) -> str:
    return json.dumps(doc, ensure_ascii=False, indent=2)


def _out() -> Console:
    console = Console(file=sys.stdout, highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = 160  # piped into a file or grep: do not fold tables at 80 columns
    return console


def _err() -> Console:
    return Console(file=sys.stderr, highlight=False)


def _settings(ctx: click.Context) -> Settings:
    settings = ctx.find_object(Settings)
    assert settings is not None, "the root group sets Settings"
    return settings


def _emit(settings: Settings, doc: Any, human: Callable[[Console], None]) -> None:
    if settings.json:
        click.echo(_dumps(doc))
    else:
        human(_out())


def _local(moment: datetime | None, zone: ZoneInfo) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(zone).isoformat(timespec="seconds")


def _zone(engine: Engine) -> ZoneInfo:
    return ZoneInfo(engine.rules.definition.timezone)


def _display(value: Any, limit: int | None = None) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        text = ", ".join(_display(v) for v in value)
    elif isinstance(value, str):
        text = value
    else:
        try:
            canonical = to_json(value)  # Decimal 2000 -> "2000", dates as ISO text
        except TypeError:
            canonical = value
        text = (
            canonical
            if isinstance(canonical, str)
            else json.dumps(canonical, ensure_ascii=False, default=str)
        )
    if limit is not None and len(text) > limit:
        return text[: limit - 1] + "…"
    return text


def _state(rules: RuleSet, state: str | None) -> str:
    if state is None:
        return "-"
    return f"{state} {rules.label(state)}"


def _complaint_json(complaint: Complaint, engine: Engine) -> dict[str, Any]:
    doc = complaint.to_json()
    zone = _zone(engine)
    doc["received_at"] = _local(complaint.received_at, zone)
    doc["updated_at"] = _local(complaint.updated_at, zone)
    doc["state_label"] = engine.rules.label(complaint.state)
    return doc


def _event_json(event: HistoryEvent, zone: ZoneInfo) -> dict[str, Any]:
    doc = event.to_json()
    doc["occurred_at"] = _local(event.occurred_at, zone)
    return doc


def _option_json(option: TriggerOption) -> dict[str, Any]:
    return {
        "trigger": option.trigger,
        "label": option.label,
        "to": option.to_state,
        "allowed": option.allowed,
        "check": option.check,
        "reason": option.reason,
        "needs_fields": list(option.needs_fields),
    }


def _progress(console: Console, *, size: bool = False) -> Progress:
    """Bars counting items, or (``size``) bytes."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn() if size else MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


@contextlib.contextmanager
def _phases(labels: Mapping[str, str]) -> Iterator[Callable[[str, int, int], None]]:
    """A ``(phase, done, total)`` callback showing each phase as a bar of its own on stderr;
    nothing is drawn before the first call (an error before any work prints only itself)."""
    bar = _progress(_err())
    tasks: dict[str, Any] = {}

    def progress(phase: str, done: int, total: int) -> None:
        if not tasks:
            bar.start()
        if phase not in tasks:
            tasks[phase] = bar.add_task(labels.get(phase, phase), total=total)
        bar.update(tasks[phase], completed=done, total=total)

    try:
        yield progress
    finally:
        if tasks:
            bar.stop()


def _advancing(stream: TextIO, bar: Progress, task: Any) -> Iterator[str]:
    """The lines of ``stream``, advancing ``task`` to the bytes read so far every 1,000 lines
    and at the end: the file's position (a file's size is its total), or on a pipe the
    lines' size in UTF-8."""
    binary: Any = getattr(stream, "buffer", None)
    seekable = binary is not None and binary.seekable()
    done = 0
    for n, line in enumerate(stream, 1):
        if not seekable:
            done += len(line.encode("utf-8"))
        if n % 1000 == 0:
            bar.update(task, completed=binary.tell() if seekable else done)
        yield line
    bar.update(task, completed=binary.tell() if seekable else done)


def _short(moment: datetime | None, zone: ZoneInfo) -> str:
    """A compact local time for tables: ``2026-03-02 09:00``."""
    if moment is None:
        return ""
    return moment.astimezone(zone).strftime("%Y-%m-%d %H:%M")


def _span(delta: timedelta | None, working: bool = False) -> str:
    """``3h 20m`` (working time: hours only, a working day is not 24 hours), ``2d 3h 20m``
    (elapsed time), ``overdue 1h 05m`` when negative."""
    if delta is None:
        return ""
    seconds = int(delta.total_seconds())
    prefix = "overdue " if seconds < 0 else ""
    minutes = abs(seconds) // 60
    hours, minutes = divmod(minutes, 60)
    if working:
        return f"{prefix}{hours}h {minutes:02d}m working"
    if hours == 0:
        return f"{prefix}{minutes}m"
    if hours < 24:
        return f"{prefix}{hours}h {minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{prefix}{days}d {hours}h {minutes:02d}m"


def _yes(flag: bool) -> str:
    return "yes" if flag else ""


def _parse_iso(raw: str | None) -> datetime | None:
    """``raw`` as an ISO 8601 instant (a naive one is completed with the rule set's zone by
    ``_aware``), or ``None`` if it is not one."""
    try:
        return datetime.fromisoformat(raw.strip().replace("Z", "+00:00")) if raw else None
    except ValueError:
        return None


def parse_time(raw: str | None, option: str) -> datetime | None:
    """Check an ISO time option before anything else happens; exit 1 with a clear message."""
    if raw is None:
        return None
    moment = _parse_iso(raw)
    if moment is None:
        raise CommandFailed(
            f"{option}: {raw!r} is not an ISO 8601 time; give e.g. 2026-03-03T10:00+08:00, "
            "or 2026-03-03T10:00 or 2026-03-03 in the rule set's time zone"
        )
    # a naive time is read in the rules' zone, at most 14 hours off UTC: checked as UTC
    if not arguments.in_range(moment if moment.tzinfo else moment.replace(tzinfo=UTC)):
        raise CommandFailed(f"{option}: {raw!r} is not {arguments.WITHIN}")
    return moment


def _aware(moment: datetime | None, zone: ZoneInfo) -> datetime | None:
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=zone)


def _local_text(value: Any, zone: ZoneInfo) -> Any:
    """An ISO text (as JSON documents carry instants) in local time; anything else as is."""
    if not isinstance(value, str):
        return value
    moment = _parse_iso(value)
    if moment is None or moment.tzinfo is None:
        return value
    return _local(moment, zone)


def _localise(doc: dict[str, Any], keys: Iterable[str], zone: ZoneInfo) -> dict[str, Any]:
    for key in keys:
        if key in doc:
            doc[key] = _local_text(doc[key], zone)
    return doc


TIMER_TIMES = ("started_at", "due_at", "breached_at", "stopped_at", "paused_since")


def _timer_json(view: TimerView, zone: ZoneInfo, number: str | None = None) -> dict[str, Any]:
    doc = view.to_json()
    _localise(doc, TIMER_TIMES, zone)
    return {"number": number, **doc} if number is not None else doc


def _timer_label(rules: RuleSet, timer: str) -> str:
    found = next((t for t in rules.definition.timers if t.id == timer), None)
    return f"{timer} {found.label.zh}" if found is not None else timer


def _amount(amount: Any, unit: str) -> str:
    """``1 working day``, ``30 minutes``."""
    words = unit.replace("_", " ")
    if str(amount) == "1" and words.endswith("s"):
        words = words[:-1]
    return f"{amount} {words}"


def _budget(view: TimerView) -> str:
    extended = sum(int(e.get("amount", 0)) for e in view.extensions)
    text = _amount(view.budget - extended, view.unit)
    return text + (f" +{extended} extended" if extended else "")


#: the offsets Engine.find and Engine.list_timers accept (below 2**62)
_OFFSET = click.IntRange(0, 2**62 - 1)


def _plural(n: int, word: str, plural: str | None = None) -> str:
    return f"{n} {word if n == 1 else plural or word + 's'}"


# -- inputs ---------------------------------------------------------------------------------


def database_url(value: str) -> str:
    """A SQLAlchemy URL; a bare file path becomes ``sqlite:///PATH``."""
    return value if "://" in value else f"sqlite:///{value}"


def _shown_url(url: str) -> str:
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except (sa.exc.ArgumentError, ValueError):
        return url


def parse_value(rules: RuleSet, key: str, raw: str) -> Any:
    """``raw`` as JSON when it is valid JSON, else the raw string; text-typed fields keep
    digits as text (a phone number), list fields also take ``a,b``."""
    try:
        value: Any = json.loads(raw)
    except ValueError:
        value = raw
    field = rules.fields.get(key)
    kind = field.type if field is not None else None
    if kind in TEXTUAL and value is not None and not isinstance(value, str):
        return raw
    if kind == "enum_list" and isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def parse_assignments(items: Iterable[str], rules: RuleSet, option: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint=option)
        out[key] = parse_value(rules, key, raw)
    return out


def _env_roles() -> tuple[str, ...]:
    return tuple(os.environ.get("COMPLAINTFLOW_ROLES", "").split(","))


def _role_option(help: str) -> Callable[[F], F]:
    # not click's envvar: it splits multiple values on spaces, the variable uses commas
    return click.option(
        "--role",
        "roles",
        multiple=True,
        default=_env_roles,
        metavar="R",
        show_default=False,
        help=help + " [env COMPLAINTFLOW_ROLES: a,b]",
    )


def actor_options(f: F) -> F:
    """``--actor``, ``--role`` (repeatable) and ``--department``."""
    f = click.option(
        "--department", envvar="COMPLAINTFLOW_DEPARTMENT", help="The actor's department."
    )(f)
    f = _role_option("A role of the actor; repeatable, or a,b.")(f)
    f = click.option(
        "--actor",
        "actor_id",
        envvar="COMPLAINTFLOW_ACTOR",
        metavar="ID",
        help="Who is acting [env COMPLAINTFLOW_ACTOR].",
    )(f)
    return f


def make_actor(
    actor_id: str | None, roles: Sequence[str], department: str | None, *, required: bool
) -> Actor | None:
    names = [part.strip() for role in roles for part in role.split(",") if part.strip()]
    if not actor_id:
        if required:
            raise click.UsageError("--actor is required (or set COMPLAINTFLOW_ACTOR)")
        if names:
            raise click.UsageError("--role needs --actor")
        return None
    return Actor(actor_id, names, department)


#: ``loaded_by`` of a rule set the CLI stores when nobody is named as the actor.
CLI_LOADED_BY = "complaintflow cli"


def _loaded_by(actor: Actor | None) -> str:
    """Who loads a rule file: the acting person, else ``COMPLAINTFLOW_ACTOR`` (commands
    without ``--actor``), else the CLI itself."""
    if actor is not None:
        return actor.id
    return os.environ.get("COMPLAINTFLOW_ACTOR", "").strip() or CLI_LOADED_BY


@contextlib.contextmanager
def open_engine(settings: Settings, actor: Actor | None = None) -> Iterator[Engine]:
    """The engine on ``--db`` with ``--rules``, on a clock fixed at ``--now`` if given; a
    rule file it stores for the first time is recorded as loaded by ``actor``."""
    try:
        sa.make_url(settings.db)
    except (sa.exc.ArgumentError, ValueError) as exc:
        raise CommandFailed(f"cannot use database {settings.db!r}: {exc}") from None
    rules: RuleSet | Path | None = settings.rules
    clock: SimulatedClock | None = None
    if settings.now is not None:
        moment = settings.now
        if moment.tzinfo is None:  # needs the rules' zone: load them once, here
            ruleset = load_rules(settings.rules)
            rules, moment = ruleset, moment.replace(tzinfo=ZoneInfo(ruleset.definition.timezone))
        clock = SimulatedClock(moment)
    try:
        engine = Engine.open(settings.db, rules=rules, clock=clock, loaded_by=_loaded_by(actor))
    except (sa.exc.ArgumentError, ImportError) as exc:  # no such dialect or driver
        raise CommandFailed(f"cannot use database {_shown_url(settings.db)!r}: {exc}") from None
    try:
        yield engine
    finally:
        engine.close()


def _worker_name(value: str | None) -> str | None:
    """``--worker``: empty means the default (host:pid); at most 200 characters."""
    if value is not None and len(value) > 200:
        raise click.BadParameter("at most 200 characters", param_hint="--worker")
    return value or None


def _check_choice(ctx: click.Context, option: str, value: str, known: Sequence[str]) -> None:
    if value not in known:
        raise click.BadParameter(f"{value!r} is not one of {', '.join(known)}"
                                 + hint(value, known), ctx=ctx, param_hint=option)


# -- the group ------------------------------------------------------------------------------


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--db",
    default=DEFAULT_DB,
    envvar="COMPLAINTFLOW_DB",
    show_default=True,
    metavar="URL",
    help="Database URL, or a SQLite file path [env COMPLAINTFLOW_DB].",
)
@click.option(
    "--rules",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="COMPLAINTFLOW_RULES",
    metavar="FILE",
    help="Rule file (default: the shipped rules) [env COMPLAINTFLOW_RULES].",
)
@click.option(
    "--json", "as_json", is_flag=True, help="Machine output: one JSON document on stdout."
)
@click.option(
    "--now",
    "now_text",
    envvar="COMPLAINTFLOW_NOW",
    metavar="ISO",
    help="Run on a clock stopped at this instant instead of the system clock, e.g. where "
    "the demo stopped (naive: the rules' time zone) [env COMPLAINTFLOW_NOW].",
)
@click.version_option(package_name="complaintflow", prog_name="complaintflow")
@click.pass_context
def main(
    ctx: click.Context, db: str, rules: Path | None, as_json: bool, now_text: str | None
) -> None:
    """Customer complaints as state machines guarded by a YAML rule file."""
    ctx.obj = Settings(database_url(db), rules, as_json)
    ctx.obj.now = parse_time(now_text or None, "--now")


# -- init, db -------------------------------------------------------------------------------


def _revision(engine: Engine) -> tuple[str | None, str | None]:
    """The database's Alembic revision and the newest one this release knows."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    with db.read(engine.database) as conn:
        current = MigrationContext.configure(conn).get_current_revision()
    head = ScriptDirectory.from_config(db.alembic_config()).get_current_head()
    return current, head


@main.command()
@click.option(
    "--rules-out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=DEFAULT_RULES_OUT,
    show_default=True,
    help="Where to write a copy of the default rule file.",
)
@click.option("--force", is_flag=True, help="Overwrite an existing rule file.")
@click.pass_context
def init(ctx: click.Context, rules_out: Path, force: bool) -> None:
    """Create or upgrade the database and write an editable copy of the default rules."""
    settings = _settings(ctx)
    if rules_out.exists() and not force:
        raise CommandFailed(f"{rules_out} exists; pass --force to overwrite it")
    with open_engine(settings) as engine:
        revision, _ = _revision(engine)
    try:
        rules_out.write_text(default_rules_text(), encoding="utf-8")
    except OSError as exc:
        raise CommandFailed(f"cannot write {rules_out}: {exc.strerror}") from None
    url = _shown_url(settings.db)

    def human(out: Console) -> None:
        out.print(Text(f"database {url} at revision {revision}"))
        out.print(
            Text(
                f"wrote {rules_out}: edit it, check it with "
                f"`complaintflow rules check {rules_out}`, use it with "
                f"`--rules {rules_out}`"
            )
        )

    _emit(settings, {"database": url, "revision": revision, "rules": str(rules_out)}, human)


@main.group("db")
def db_group() -> None:
    """The database schema."""


@db_group.command("upgrade")
@click.pass_context
def db_upgrade(ctx: click.Context) -> None:
    """Create or upgrade the schema to the newest revision."""
    settings = _settings(ctx)
    with open_engine(settings) as engine:
        revision, head = _revision(engine)
    url = _shown_url(settings.db)
    _emit(
        settings,
        {"database": url, "revision": revision, "head": head},
        lambda out: out.print(
            Text(f"database {url} at revision {revision}" + (" (head)" if revision == head else ""))
        ),
    )


# -- submit, fire ---------------------------------------------------------------------------


def _print_complaint_line(out: Console, engine: Engine, complaint: Complaint) -> None:
    out.print(
        Text(
            f"{complaint.number}  {_state(engine.rules, complaint.state)}  "
            f"severity {complaint.severity}  version {complaint.version}"
        )
    )


@main.command()
@click.option(
    "--field",
    "fields",
    multiple=True,
    metavar="KEY=VALUE",
    help="A field; VALUE is read as JSON when it is valid JSON. Repeatable.",
)
@click.option(
    "--file",
    "data_file",
    type=click.File("r", encoding="utf-8"),
    metavar="DATA.json",
    help="A JSON object of fields (--field adds or overrides).",
)
@click.option("--idempotency-key", metavar="K", help="Makes a retried submission safe.")
@actor_options
@click.pass_context
def submit(
    ctx: click.Context,
    fields: tuple[str, ...],
    data_file: Any,
    idempotency_key: str | None,
    actor_id: str | None,
    roles: tuple[str, ...],
    department: str | None,
) -> None:
    """Register a new complaint; prints its number, state and severity."""
    settings = _settings(ctx)
    actor = make_actor(actor_id, roles, department, required=True)
    assert actor is not None
    data: dict[str, Any] = {}
    if data_file is not None:
        try:
            loaded = json.load(data_file)
        except ValueError as exc:
            raise click.BadParameter(f"not JSON: {exc}", param_hint="--file") from None
        if not isinstance(loaded, dict):
            raise click.BadParameter("expected a JSON object of fields", param_hint="--file")
        data.update(loaded)
    if not fields and data_file is None:
        raise click.UsageError("give the complaint with --field KEY=VALUE or --file DATA.json")
    with open_engine(settings, actor) as engine:
        data.update(parse_assignments(fields, engine.rules, "--field"))
        complaint = engine.submit(data, actor, idempotency_key=idempotency_key)
        _emit(
            settings,
            _complaint_json(complaint, engine),
            lambda out: _print_complaint_line(out, engine, complaint),
        )


@main.command()
@click.argument("number")
@click.argument("trigger")
@click.option(
    "--set",
    "values",
    multiple=True,
    metavar="KEY=VALUE",
    help="A field to set; VALUE is read as JSON when it is valid JSON. Repeatable.",
)
@click.option(
    "--expected-version",
    type=int,
    metavar="N",
    help="Refuse if the complaint is no longer at version N.",
)
@click.option("--idempotency-key", metavar="K", help="Makes a retried call safe.")
@click.option("--comment", metavar="TEXT", help="A note stored with the event.")
@actor_options
@click.pass_context
def fire(
    ctx: click.Context,
    number: str,
    trigger: str,
    values: tuple[str, ...],
    expected_version: int | None,
    idempotency_key: str | None,
    comment: str | None,
    actor_id: str | None,
    roles: tuple[str, ...],
    department: str | None,
) -> None:
    """Fire TRIGGER on complaint NUMBER."""
    settings = _settings(ctx)
    actor = make_actor(actor_id, roles, department, required=True)
    assert actor is not None
    with open_engine(settings, actor) as engine:
        data = parse_assignments(values, engine.rules, "--set")
        complaint = engine.fire(
            number,
            trigger,
            actor,
            data,
            expected_version,
            idempotency_key=idempotency_key,
            comment=comment,
        )
        _emit(
            settings,
            _complaint_json(complaint, engine),
            lambda out: _print_complaint_line(out, engine, complaint),
        )


# -- show, history, list --------------------------------------------------------------------


def _option_status(option: TriggerOption) -> Text:
    if option.allowed:
        text = Text("allowed", style="green")
        if option.needs_fields:
            text.append(f", needs {', '.join(option.needs_fields)}", style="yellow")
        return text
    return Text(f"refused [{option.check}]: {option.reason}", style="red")


@main.command()
@click.argument("number")
@actor_options
@click.pass_context
def show(
    ctx: click.Context,
    number: str,
    actor_id: str | None,
    roles: tuple[str, ...],
    department: str | None,
) -> None:
    """One complaint as the actor may see it, and what the actor may do next."""
    settings = _settings(ctx)
    actor = make_actor(actor_id, roles, department, required=False)
    with open_engine(settings, actor) as engine:
        complaint = engine.get(number, actor)
        options = engine.available_triggers(number, actor) if actor is not None else None
        rules = engine.rules
        zone = _zone(engine)
    doc = {
        "complaint": _complaint_json(complaint, engine),
        "triggers": [_option_json(o) for o in options] if options is not None else None,
    }

    def human(out: Console) -> None:
        head = Table.grid(padding=(0, 2))
        head.add_column(style="bold")
        head.add_column()
        for key, value in (
            ("number", complaint.number),
            ("state", _state(rules, complaint.state)),
            ("severity", complaint.severity),
            ("version", str(complaint.version)),
            ("department", complaint.department or ""),
            ("handler", complaint.handler or ""),
            ("received", _local(complaint.received_at, zone) or ""),
            ("updated", _local(complaint.updated_at, zone) or ""),
        ):
            head.add_row(key, Text(value))
        out.print(head)
        out.print(_fields_table(rules, complaint.fields, complaint.masked))
        if options is None:
            out.print(
                Text(
                    "personal data masked; give --actor and --role to see it and "
                    "what you may do next",
                    style="dim",
                )
            )
            return
        assert actor is not None
        moves = Table(
            title=f"what {actor.id} ({', '.join(actor.roles) or 'no roles'}) may do",
            title_justify="left",
        )
        moves.add_column("trigger")
        moves.add_column("label")
        moves.add_column("to")
        moves.add_column("status", overflow="fold")
        for option in options:
            moves.add_row(
                Text(option.trigger),
                Text(option.label or ""),
                Text(_state(rules, option.to_state)),
                _option_status(option),
            )
        out.print(moves)

    _emit(settings, doc, human)


def _fields_set(event: HistoryEvent) -> str:
    payload = event.payload
    values = payload.get("fields") if event.type == "submitted" else payload.get("set")
    parts = [f"{k}={_display(v, 40)}" for k, v in (values or {}).items()]
    if payload.get("comment"):
        parts.append(f"comment: {_display(payload['comment'], 80)}")
    return "; ".join(parts)


@main.command()
@click.argument("number")
@actor_options
@click.pass_context
def history(
    ctx: click.Context,
    number: str,
    actor_id: str | None,
    roles: tuple[str, ...],
    department: str | None,
) -> None:
    """The timeline of a complaint (personal data masked unless the actor may read it)."""
    settings = _settings(ctx)
    actor = make_actor(actor_id, roles, department, required=False)
    with open_engine(settings, actor) as engine:
        events = engine.history(number, actor)
        rules = engine.rules
        zone = _zone(engine)
    doc = {"number": number, "events": [_event_json(e, zone) for e in events]}

    def human(out: Console) -> None:
        table = Table(title=f"history of {number}", title_justify="left")
        for name in ("seq", "time", "actor", "trigger", "from → to", "fields set", "hash"):
            table.add_column(name, overflow="fold")
        for e in events:
            who = f"{e.actor_id} ({', '.join(e.actor_roles)})"
            if e.actor_department:
                who += f" @{e.actor_department}"
            table.add_row(
                str(e.seq),
                Text(_local(e.occurred_at, zone) or ""),
                Text(who),
                Text(e.trigger or e.type),
                Text(
                    f"{_state(rules, e.from_state)} → {_state(rules, e.to_state)}"
                    if e.from_state != e.to_state
                    else _state(rules, e.to_state)
                ),
                Text(_fields_set(e)),
                Text(e.hash[:12]),
            )
        out.print(table)

    _emit(settings, doc, human)


@main.command("list")
@click.option("--state", "states", multiple=True, metavar="S", help="Repeatable.")
@click.option("--severity", metavar="S")
@click.option("--department", "department_filter", metavar="D", help="The responsible department.")
@click.option("--handler", metavar="H")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
@click.option("--offset", type=_OFFSET, default=0, show_default=True)
@click.option(
    "--actor",
    "actor_id",
    envvar="COMPLAINTFLOW_ACTOR",
    metavar="ID",
    help="Who is reading [env COMPLAINTFLOW_ACTOR].",
)
@_role_option("A role of the reader; repeatable.")
@click.pass_context
def list_(
    ctx: click.Context,
    states: tuple[str, ...],
    severity: str | None,
    department_filter: str | None,
    handler: str | None,
    limit: int,
    offset: int,
    actor_id: str | None,
    roles: tuple[str, ...],
) -> None:
    """One page of complaints matching every filter, oldest first, with the total."""
    settings = _settings(ctx)
    actor = make_actor(actor_id, roles, None, required=False)
    with open_engine(settings, actor) as engine:
        rules = engine.rules
        for state in states:
            _check_choice(ctx, "--state", state, tuple(rules.states))
        if severity is not None:
            _check_choice(ctx, "--severity", severity, rules.severity_levels)
        page = engine.find(
            state=list(states) or None,
            severity=severity,
            department=department_filter,
            handler=handler,
            limit=limit,
            offset=offset,
            actor=actor,
        )
        zone = _zone(engine)
        doc = {
            "total": page.total,
            "limit": page.limit,
            "offset": page.offset,
            "next_offset": page.next_offset,
            "items": [_complaint_json(c, engine) for c in page.items],
        }

    def human(out: Console) -> None:
        table = Table()
        for name in (
            "number",
            "state",
            "severity",
            "department",
            "handler",
            "customer",
            "received",
        ):
            table.add_column(name, overflow="fold")
        for c in page.items:
            table.add_row(
                Text(c.number),
                Text(_state(rules, c.state)),
                Text(c.severity),
                Text(c.department or ""),
                Text(c.handler or ""),
                Text(_display(c.fields.get("customer_name"), 30)),
                Text(_local(c.received_at, zone) or ""),
            )
        out.print(table)
        if page.items:
            line = f"{page.offset + 1}-{page.offset + len(page.items)} of {page.total}"
        else:
            line = f"none of {page.total}"
        if page.next_offset is not None:
            line += f"; next page: --offset {page.next_offset}"
        out.print(Text(line))

    _emit(settings, doc, human)


# -- rules ----------------------------------------------------------------------------------


@main.group("rules")
def rules_group() -> None:
    """Check rule files; list, show, compare and migrate to stored rule-set versions."""


@rules_group.command("check")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.pass_context
def rules_check(ctx: click.Context, files: tuple[Path, ...]) -> None:
    """Check rule files; print every problem (exit 1) or a summary per file (exit 0)."""
    settings = _settings(ctx)
    results: list[dict[str, Any]] = []
    for file in files:
        try:
            ruleset = load_rules(file)
        except RuleError as exc:
            results.append(
                {
                    "file": str(file),
                    "ok": False,
                    "problems": [asdict(p) for p in exc.problems],
                    "_text": [str(p) for p in exc.problems],
                }
            )
            continue
        results.append(
            {
                "file": str(file),
                "ok": True,
                "name": ruleset.name,
                "states": len(ruleset.states),
                "transitions": len(ruleset.transitions),
                "version": ruleset.version,
                "problems": [],
            }
        )
    ok = all(r["ok"] for r in results)
    if settings.json:
        click.echo(
            _dumps(
                {"ok": ok, "files": [{k: v for k, v in r.items() if k != "_text"} for r in results]}
            )
        )
    else:
        for r in results:
            if r["ok"]:
                click.echo(
                    f"{r['file']}: ok: {r['name']}, {r['states']} states, "
                    f"{r['transitions']} transitions, version {r['version'][:12]}"
                )
            else:
                for line in r["_text"]:
                    click.echo(line)
                count = len(r["_text"])
                click.echo(f"{r['file']}: {count} problem{'s' if count != 1 else ''}", err=True)
    if not ok:
        ctx.exit(1)


@rules_group.command("schema")
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE",
    help="Write the schema to FILE instead of stdout.",
)
@click.pass_context
def rules_schema(ctx: click.Context, output: Path | None) -> None:
    """The JSON Schema of rule files (for editors)."""
    settings = _settings(ctx)
    text = _dumps(json_schema())
    if output is None:
        click.echo(text)
        return
    try:
        output.write_text(text + "\n", encoding="utf-8")
    except OSError as exc:
        raise CommandFailed(f"cannot write {output}: {exc.strerror}") from None
    if settings.json:
        click.echo(_dumps({"output": str(output)}))
    else:
        click.echo(f"wrote {output}", err=True)


@rules_group.command("list")
@click.pass_context
def rules_list(ctx: click.Context) -> None:
    """Every rule-set version stored in the database, with how many complaints use it."""
    settings = _settings(ctx)
    with open_engine(settings) as engine:
        infos = audit.rulesets(engine)
        current = engine.rules.version
        zone = _zone(engine)
    doc = {
        "current": current,
        "rulesets": [
            {**_localise(info.to_json(), ("loaded_at",), zone), "current": info.hash == current}
            for info in infos
        ],
    }

    def human(out: Console) -> None:
        table = Table(title=f"rule sets (times in {zone})", title_justify="left")
        for name in ("hash", "", "name", "source", "loaded", "loaded by", "complaints"):
            table.add_column(
                name, overflow="fold", justify="right" if name == "complaints" else "left"
            )
        for info in infos:
            table.add_row(
                Text(info.hash[:12]),
                Text("current" if info.hash == current else "", style="green"),
                Text(info.name),
                Text(info.source),
                Text(_short(info.loaded_at, zone)),
                Text(info.loaded_by or ""),
                str(info.complaints),
            )
        out.print(table)

    _emit(settings, doc, human)


@rules_group.command("show")
@click.argument("hash_prefix", metavar="HASH")
@click.pass_context
def rules_show(ctx: click.Context, hash_prefix: str) -> None:
    """Print the stored text of a rule-set version (HASH: at least 6 characters); who loaded
    it and when goes to stderr, so that stdout is the file as it was loaded."""
    settings = _settings(ctx)
    with open_engine(settings) as engine:
        full, text = audit.ruleset_text(engine, hash_prefix)
        info = next(i for i in audit.rulesets(engine) if i.hash == full)
        zone = _zone(engine)
    if settings.json:
        click.echo(_dumps({**_localise(info.to_json(), ("loaded_at",), zone), "text": text}))
    else:
        click.echo(
            f"rule set {full[:12]} ({info.name}, {info.source}): loaded "
            f"{_local(info.loaded_at, zone)} by {info.loaded_by or 'unknown'}",
            err=True,
        )
        click.echo(text, nl=not text.endswith("\n"))


@rules_group.command("diff")
@click.argument("first", metavar="HASH")
@click.argument("second", metavar="HASH")
@click.pass_context
def rules_diff(ctx: click.Context, first: str, second: str) -> None:
    """A unified diff of two stored rule-set versions."""
    settings = _settings(ctx)
    with open_engine(settings) as engine:
        a, _ = audit.ruleset_text(engine, first)
        b, _ = audit.ruleset_text(engine, second)
        diff = audit.ruleset_diff(engine, a, b)
    if settings.json:
        click.echo(_dumps({"a": a, "b": b, "diff": diff}))
    elif diff:
        click.echo(diff, nl=not diff.endswith("\n"))
    else:
        click.echo(f"{a[:12]} and {b[:12]}: no differences", err=True)


def _state_map(items: Iterable[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        old, sep, new = (part.strip() for part in item.partition("="))
        if not sep or not old or not new:
            raise click.BadParameter(f"{item!r} is not OLD=NEW", param_hint="--map")
        out[old] = new
    return out


def _migration_table(items: Sequence[MigrationItem], title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for name in (
        "number",
        "state → target",
        "ok",
        "newly required",
        "dropped fields",
        "timers added",
        "removed",
        "re-derived",
    ):
        table.add_column(name, overflow="fold")
    for item in items:
        table.add_row(
            Text(item.number),
            Text(f"{item.state} → {item.target_state}"),
            Text("ok", style="green") if item.ok else Text("; ".join(item.problems), style="red"),
            Text(", ".join(item.newly_required)),
            Text(", ".join(item.dropped_fields)),
            Text(", ".join(item.timers_added)),
            Text(", ".join(item.timers_removed)),
            Text(", ".join(item.timers_rederived)),
        )
    return table


@rules_group.command("migrate")
@click.option(
    "--to", "target", required=True, metavar="HASH", help="The rule-set version to move to."
)
@click.option("--dry-run", is_flag=True, help="Only report what would change (exit 1 if refused).")
@click.option(
    "--state", "states", multiple=True, metavar="S", help="Only complaints in S; repeatable."
)
@click.option(
    "--number", "numbers", multiple=True, metavar="N", help="Only complaint N; repeatable."
)
@click.option(
    "--where",
    "conditions",
    multiple=True,
    metavar="KEY=VALUE",
    help="Only complaints with KEY=VALUE; KEY is one of "
    + ", ".join(migrate.WHERE_KEYS)
    + " (received_*: ISO times, naive in the rules' time zone). Repeatable: values of one "
    "key are alternatives, different keys must all hold.",
)
@click.option(
    "--map",
    "mappings",
    multiple=True,
    metavar="OLD=NEW",
    help="Move complaints in state OLD to state NEW of the target; repeatable.",
)
@actor_options
@click.pass_context
def rules_migrate(
    ctx: click.Context,
    target: str,
    dry_run: bool,
    states: tuple[str, ...],
    numbers: tuple[str, ...],
    conditions: tuple[str, ...],
    mappings: tuple[str, ...],
    actor_id: str | None,
    roles: tuple[str, ...],
    department: str | None,
) -> None:
    """Move open complaints to another stored rule-set version, all or nothing: one
    history event per complaint; refused (exit 1, nothing changed) if any complaint cannot
    move safely."""
    settings = _settings(ctx)
    state_map = _state_map(mappings)
    where = migrate.parse_where(conditions)
    actor = make_actor(actor_id, roles, department, required=not dry_run)
    with open_engine(settings, actor) as engine:
        full, _ = audit.ruleset_text(engine, target)
        selection: dict[str, Any] = {
            "states": list(states) or None,
            "numbers": list(numbers) or None,
            "state_map": state_map,
            "where": where,
        }
        with _phases({"checking": "checking (complaints)",
                      "moving": "moving (complaints)"}) as progress:
            if dry_run:
                items = migrate.plan(engine, full, **selection, progress=progress)
            else:
                assert actor is not None
                items = migrate.apply(engine, full, actor, **selection, progress=progress)
    ok = all(item.ok for item in items)
    doc = {"to": full, "dry_run": dry_run, "ok": ok, "items": [i.to_json() for i in items]}

    def human(out: Console) -> None:
        if not items:
            out.print(Text(f"no open complaint to move to {full[:12]}"))
            return
        verb = "would move" if dry_run else "moved"
        out.print(_migration_table(items, f"{verb} to {full[:12]}"))
        refused = [i.number for i in items if not i.ok]
        if refused:
            out.print(
                Text(
                    f"refused: {len(refused)} of {_plural(len(items), 'complaint')} cannot move "
                    "(map their states with --map OLD=NEW or leave them out)",
                    style="bold red",
                )
            )
        else:
            out.print(Text(f"{len(items)} complaint{'s' if len(items) != 1 else ''} {verb}"))

    _emit(settings, doc, human)
    if not ok:
        ctx.exit(1)


# -- audit ----------------------------------------------------------------------------------


@main.group("audit")
def audit_group() -> None:
    """Verify, replay and export the stored history."""


@audit_group.command("verify")
@click.option(
    "--deep",
    is_flag=True,
    help="Also re-check every step under its rule version, and the clocks.",
)
@click.option(
    "--since",
    metavar="ISO",
    help="With --deep: only complaints changed since then, or with a warning or breach due "
    "since then (naive: the rules' time zone). The chains and rows of all complaints are "
    "still checked; 'changed' is read from the rows' updated_at, which no hash covers, so "
    "run a full --deep now and then.",
)
@click.option(
    "--jobs",
    type=click.IntRange(1, 256),
    default=1,
    show_default=True,
    help="Verify ranges of complaints in this many processes at once (same report).",
)
@click.pass_context
def audit_verify(ctx: click.Context, deep: bool, since: str | None, jobs: int) -> None:
    """Recompute every hash chain and compare each complaint with its history; with --deep
    re-run every transition through the guards of its rule version and check warnings and
    breaches against the clocks (exit 1 on any finding)."""
    settings = _settings(ctx)
    moment = parse_time(since, "--since")
    if moment is not None and not deep:
        raise click.BadParameter("--since limits the deep checks; add --deep", param_hint="--since")
    with open_engine(settings) as engine:
        total = engine.find(limit=1).total if moment is None else None
        with _progress(_err()) as bar:
            task = bar.add_task("verifying deeply" if deep else "verifying", total=total)
            if jobs == 1:
                report = engine.verify(
                    deep=deep,
                    since=_aware(moment, _zone(engine)),
                    progress=lambda n: bar.advance(task, n),
                )
            else:
                from complaintflow.verify import verify_parallel

                report = verify_parallel(
                    engine,
                    jobs,
                    deep=deep,
                    since=_aware(moment, _zone(engine)),
                    progress=lambda n: bar.advance(task, n),
                )
    doc = {**report.to_json(), "deep": deep}

    def human(out: Console) -> None:
        found = _print_findings(out, report.findings)
        verdict = "ok" if report.ok else found
        how = " (deep)" if deep else ""
        out.print(
            Text(f"verified {report.complaints} complaints, {report.events} events{how}: {verdict}")
        )

    _emit(settings, doc, human)
    if not report.ok:
        ctx.exit(1)


def _approval_triggers(rules: RuleSet) -> frozenset[str]:
    """Triggers other transitions wait for (the GM's approval, top management's signature)."""
    return frozenset(t.approval.by for t in rules.transitions if t.approval is not None)


def _timer_names(items: Iterable[Mapping[str, Any]]) -> str:
    return ", ".join(str(item.get("timer")) for item in items)


def _clock_text(event: HistoryEvent, zone: ZoneInfo) -> str:
    """What an event did to the clocks, in one line."""
    p = event.payload
    parts: list[str] = []
    for kind, items in (p.get("timers") or {}).items():
        if kind in ("started", "rederived", "resumed"):
            shown = ", ".join(
                f"{i.get('timer')} (due {_short(_parse_iso(i.get('due_at')), zone) or '-'})"
                for i in items
            )
        else:
            shown = _timer_names(items)
        parts.append(f"{kind} {shown}")
    due = _short(_parse_iso(p.get("due_at")), zone)
    if event.type in ("timer_warning", "timer_breached"):
        late = timedelta(seconds=float(p.get("lateness_seconds") or 0))
        what = "warning" if event.type == "timer_warning" else "BREACH"
        text = f"{what} {p.get('timer')} (due {due}"
        text += f", fired {_span(late)} late)" if late >= timedelta(minutes=1) else ")"
        actions = p.get("actions") or {}
        if actions.get("raise_severity"):
            text += f"; severity raised to {actions['raise_severity']}"
        if actions.get("reassign"):
            text += f"; reassigned to {actions['reassign']}"
        if actions.get("notify"):
            text += f"; notified {', '.join(actions['notify'])}"
        parts.append(text)
    elif event.type == "timer_extended":
        parts.append(
            f"extended {p.get('timer')} by {_amount(p.get('amount'), str(p.get('unit')))}: "
            f"due {due}"
            f" ({p.get('reason')})"
        )
    elif event.type == "customer_consent":
        consent = p.get("consent") or {}
        parts.append(
            f"customer consent to extend {p.get('timer')}: {consent.get('given_by')} via "
            f"{consent.get('channel')} at {_short(_parse_iso(consent.get('given_at')), zone)}"
        )
    elif event.type == "deadline_recomputed":
        before = _short(_parse_iso(p.get("previous_due_at")), zone)
        parts.append(f"recomputed {p.get('timer')}: due {before} → {due}")
    elif event.type == "ruleset_migrated":
        parts.append(f"migrated {str(p.get('from'))[:8]} → {str(p.get('to'))[:8]}")
    elif event.type == "timer_action_refused":
        parts.append(f"breach action {p.get('trigger')} refused [{p.get('check')}]")
    return "; ".join(parts)


def _timeline_table(
    events: Sequence[HistoryEvent],
    rules_of: Callable[[str], RuleSet],
    zone: ZoneInfo,
    title: str,
) -> Table:
    table = Table(title=title, title_justify="left")
    for name in (
        "#",
        "time",
        "actor (roles)",
        "action",
        "from → to",
        "fields changed",
        "clocks",
        "rules",
    ):
        table.add_column(name, overflow="fold")
    for e in events:
        rules = rules_of(e.ruleset)
        who = f"{e.actor_id} ({', '.join(e.actor_roles) or 'system'})"
        if e.actor_department:
            who += f" @{e.actor_department}"
        action = Text(e.trigger or e.type)
        if e.trigger is not None and e.trigger in _approval_triggers(rules):
            action.append(" ✔ approval", style="green")
        if e.type == "timer_breached":
            action.stylize("bold red")
        elif e.type == "timer_warning":
            action.stylize("yellow")
        moved = (
            f"{_state(rules, e.from_state)} → {_state(rules, e.to_state)}"
            if e.from_state != e.to_state
            else _state(rules, e.to_state)
        )
        table.add_row(
            str(e.seq),
            Text(_short(e.occurred_at, zone)),
            Text(who),
            action,
            Text(moved),
            Text(_fields_set(e)),
            Text(_clock_text(e, zone)),
            Text(e.ruleset[:8]),
        )
    return table


def _replayed_timer_json(timer: ReplayedTimer, zone: ZoneInfo) -> dict[str, Any]:
    doc = _localise(timer.to_json(), TIMER_TIMES, zone)
    doc["warnings"] = [_localise(dict(w), ("due_at", "fired_at"), zone) for w in timer.warnings]
    return doc


def _replayed_json(replayed: Replayed, rules: RuleSet, zone: ZoneInfo) -> dict[str, Any]:
    doc = replayed.to_json()
    _localise(doc, ("at", "received_at"), zone)
    doc["state_label"] = rules.label(replayed.state)
    doc["timers"] = [_replayed_timer_json(t, zone) for t in replayed.timers.values()]
    doc["events"] = [_event_json(e, zone) for e in replayed.events]
    return doc


@audit_group.command("replay")
@click.argument("number")
@click.option(
    "--at",
    "at_text",
    metavar="ISO",
    help="The instant (default: after the last event); naive: the rules' time zone.",
)
@actor_options
@click.pass_context
def audit_replay(
    ctx: click.Context,
    number: str,
    at_text: str | None,
    actor_id: str | None,
    roles: tuple[str, ...],
    department: str | None,
) -> None:
    """A complaint rebuilt from its history alone as of an instant: the timeline up to then,
    and the state, fields (personal data masked unless the actor may read it) and clocks."""
    settings = _settings(ctx)
    moment = parse_time(at_text, "--at")
    actor = make_actor(actor_id, roles, department, required=False)
    with open_engine(settings, actor) as engine:
        zone = _zone(engine)
        replayed = engine.replay(number, _aware(moment, zone), actor)
        # shown below are payload parts the replay itself does not read
        malformed = malformed_history(number, replayed.events, None)
        if malformed is not None:
            raise malformed
        with db.read(engine.database) as conn:
            versions = {e.ruleset for e in replayed.events} | {replayed.ruleset}
            by_version = {v: engine.compiled(conn, v).rules for v in versions}
    rules = by_version[replayed.ruleset]
    doc = _replayed_json(replayed, rules, zone)
    may_read = actor is not None and rules.may_read_personal(actor.roles)

    def human(out: Console) -> None:
        as_of = _local(replayed.at, zone) if replayed.at else "now (after the last event)"
        out.print(
            _timeline_table(
                replayed.events,
                by_version.__getitem__,
                zone,
                f"{number} as of {as_of} (times in {zone})",
            )
        )
        head = Table.grid(padding=(0, 2))
        head.add_column(style="bold")
        head.add_column()
        for key, value in (
            ("state", _state(rules, replayed.state)),
            ("severity", replayed.severity or ""),
            ("severity floor", replayed.severity_floor or ""),
            ("version", str(replayed.version)),
            ("received", _short(replayed.received_at, zone)),
            ("escalated to", replayed.escalated_to or ""),
            ("rule set", replayed.ruleset[:12]),
        ):
            head.add_row(key, Text(value))
        out.print(head)
        masked = () if may_read else rules.personal_fields
        out.print(_fields_table(rules, replayed.fields, masked))
        out.print(_replayed_timers_table(replayed, rules, zone))

    _emit(settings, doc, human)


def _fields_table(rules: RuleSet, fields: Mapping[str, Any], masked: Collection[str]) -> Table:
    """A complaint's fields in the rule file's order (then any others), with their Chinese
    labels; the names in ``masked`` are marked as masked."""
    table = Table(title="fields", title_justify="left")
    table.add_column("field")
    table.add_column("label")
    table.add_column("value", overflow="fold")
    order = [f.id for f in rules.definition.fields]
    names = [n for n in order if n in fields] + [n for n in fields if n not in order]
    for name in names:
        field = rules.fields.get(name)
        shown = Text(_display(fields[name]))
        if name in masked:
            shown.append("  (masked)", style="dim")
        table.add_row(Text(name), Text(field.label.zh if field else ""), shown)
    return table


def _replayed_timers_table(replayed: Replayed, rules: RuleSet, zone: ZoneInfo) -> Table:
    table = Table(title="clocks", title_justify="left")
    for name in (
        "clock",
        "run",
        "status",
        "started",
        "due",
        "remaining",
        "warned",
        "breached",
        "extensions",
    ):
        table.add_column(name, overflow="fold")
    for t in replayed.timers.values():
        working = str(t.budget.get("unit", "")).startswith("working")
        due = _short(t.due_at, zone) + (" (provisional)" if t.provisional else "")
        table.add_row(
            Text(_timer_label(rules, t.timer)),
            str(t.run),
            Text(t.status),
            Text(_short(t.started_at, zone)),
            Text(due),
            Text(_span(t.remaining, working)),
            str(len(t.warnings)) if t.warnings else "",
            Text(_short(t.breached_at, zone), style="bold red"),
            str(len(t.extensions)) if t.extensions else "",
        )
    return table


def _export_format(fmt: str | None, path: str) -> str:
    if fmt is not None:
        return fmt
    return "csv" if path.lower().endswith(".csv") else "jsonl"


@audit_group.command("export")
@click.option("--number", metavar="N", help="Only this complaint.")
@click.option("--since", metavar="ISO", help="Events at or after (naive: the rules' time zone).")
@click.option("--until", metavar="ISO", help="Events before (naive: the rules' time zone).")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["jsonl", "csv"]),
    help="Default: csv for an --output ending in .csv, else jsonl.",
)
@click.option(
    "--output",
    required=True,
    metavar="FILE",
    help="Where to write; - for stdout.",
)
@actor_options
@click.pass_context
def audit_export(
    ctx: click.Context,
    number: str | None,
    since: str | None,
    until: str | None,
    fmt: str | None,
    output: str,
    actor_id: str | None,
    roles: tuple[str, ...],
    department: str | None,
) -> None:
    """Stream events (one per line or row, with their chain hashes) to FILE. Personal data is
    masked unless the actor may read it; an unmasked export can be re-verified on its own
    with `audit check-export`."""
    settings = _settings(ctx)
    start = parse_time(since, "--since")
    end = parse_time(until, "--until")
    actor = make_actor(actor_id, roles, department, required=False)
    fmt = _export_format(fmt, output)
    to_stdout = output == "-"
    with open_engine(settings, actor) as engine:
        zone = _zone(engine)
        first, last = _aware(start, zone), _aware(end, zone)
        if first is not None and last is not None and first > last:
            raise click.BadParameter(f"{since!r} is later than --until {until!r}: the "
                                     "export would select nothing", param_hint="--since")
        if number is not None:
            engine.get(number)  # no complaint: an error before any file is created
        # a file is replaced only by a complete export (an error leaves an existing one)
        destination = contextlib.nullcontext(sys.stdout) if to_stdout \
            else open_destination(output)
        with destination as out, _progress(_err()) as bar:
            task = bar.add_task("exporting (events)", total=None)
            result = export_events(engine, out, fmt, number=number, since=first, until=last,
                                   actor=actor, progress=lambda: bar.advance(task))
        if to_stdout:
            out.flush()
    summary = {"events": result.events, "complaints": result.complaints, "output": output,
               "format": fmt, "digest": result.digest}
    message = (f"exported {_plural(result.events, 'event')} of "
               f"{_plural(result.complaints, 'complaint')} to {output} ({fmt}); "
               f"digest {result.digest}")
    if settings.json and not to_stdout:
        click.echo(_dumps(summary))
    else:
        click.echo(message, err=True)


@audit_group.command("check-export")
@click.argument("file", metavar="FILE")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["jsonl", "csv"]),
    help="Default: csv for a FILE ending in .csv, else jsonl.",
)
@click.option(
    "--no-end-record",
    "no_end",
    is_flag=True,
    help="Accept a file without an end record (written by a release before them); rows "
    "missing at either end then go unnoticed.",
)
@click.pass_context
def audit_check_export(ctx: click.Context, file: str, fmt: str | None, no_end: bool) -> None:
    """Re-verify an export on its own, without the database: every link followed, every
    hash recomputed where nothing was masked, the end record's count and digest (exit 1 on
    any finding). FILE may be -."""
    settings = _settings(ctx)
    fmt = _export_format(fmt, file)
    try:
        stream: TextIO = (
            sys.stdin if file == "-" else open(file, encoding="utf-8", newline="")  # noqa: SIM115
        )
    except OSError as exc:
        raise CommandFailed(f"cannot read {file}: {exc.strerror}") from None
    try:
        with _progress(_err(), size=True) as bar:
            size = None if stream is sys.stdin else os.fstat(stream.fileno()).st_size
            task = bar.add_task("checking", total=size)
            report = check_export(_advancing(stream, bar, task), fmt, require_end=not no_end)
    except (ValueError, KeyError, TypeError, csv.Error) as exc:
        raise CommandFailed(f"{file} is not a {fmt} export of complaintflow: {exc}") from None
    finally:
        if stream is not sys.stdin:
            stream.close()
    masked = report.rows - report.recomputed
    doc = {
        "ok": report.ok,
        "rows": report.rows,
        "complaints": report.complaints,
        "recomputed": report.recomputed,
        "masked": masked,
        "digest": report.digest,
        "selection": None if report.end is None else report.end["selection"],
        "findings": [f.to_json() for f in report.findings],
    }

    def human(out: Console) -> None:
        found = _print_findings(out, report.findings)
        line = (
            f"checked {_plural(report.rows, 'event')} of "
            f"{_plural(report.complaints, 'complaint')}, "
            f"{_plural(report.recomputed, 'hash', 'hashes')} recomputed"
        )
        if masked:
            line += f", {masked} masked (links checked only)"
        out.print(Text(f"{line}: {'ok' if report.ok else found}"))
        out.print(Text(f"digest {report.digest} (compare it with the one quoted by whoever "
                       "made the export)"))

    _emit(settings, doc, human)
    if not report.ok:
        ctx.exit(1)


@audit_group.command("timeline")
@click.argument("number")
@click.option("--at", "at_text", metavar="ISO", help="As of this instant (default: now).")
@click.option(
    "--output",
    required=True,
    metavar="FILE.html",
    help="Where to write the page; - for stdout.",
)
@actor_options
@click.pass_context
def audit_timeline(
    ctx: click.Context,
    number: str,
    at_text: str | None,
    output: str,
    actor_id: str | None,
    roles: tuple[str, ...],
    department: str | None,
) -> None:
    """A printable, self-contained HTML page of one complaint: states over time, every
    clock with its warnings and breaches, the full history."""
    settings = _settings(ctx)
    moment = parse_time(at_text, "--at")
    actor = make_actor(actor_id, roles, department, required=False)
    with open_engine(settings, actor) as engine:
        try:
            page = render_timeline(engine, number, actor, _aware(moment, _zone(engine)))
        except MALFORMED as exc:
            found = audit.malformed(engine, number)
            if found is None:
                raise  # nothing stored is malformed: a fault of the page itself
            raise found from exc
    if output == "-":
        click.echo(page, nl=False)
        return
    try:
        Path(output).write_text(page, encoding="utf-8")
    except OSError as exc:
        raise CommandFailed(f"cannot write {output}: {exc.strerror}") from None
    if settings.json:
        click.echo(_dumps({"number": number, "output": output, "bytes": len(page.encode())}))
    else:
        click.echo(f"wrote {output}", err=True)


# -- timers ---------------------------------------------------------------------------------


def _timers_table(
    rows: Sequence[tuple[str | None, TimerView]], rules: RuleSet, zone: ZoneInfo, title: str
) -> Table:
    table = Table(title=title, title_justify="left")
    columns = ["number"] if any(n is not None for n, _ in rows) else []
    columns += [
        "clock",
        "run",
        "status",
        "started",
        "due",
        "remaining",
        "warned",
        "breached",
        "provisional",
        "budget",
    ]
    for name in columns:
        table.add_column(name, overflow="fold")
    for number, t in rows:
        cells: list[Any] = [Text(number or "")] if columns[0] == "number" else []
        cells += [
            Text(_timer_label(rules, t.timer)),
            str(t.run),
            Text(t.status, style="dim" if t.status == "stopped" else ""),
            Text(_short(t.started_at, zone)),
            Text(_short(t.due_at, zone)),
            Text(_span(t.remaining, t.unit.startswith("working"))),
            str(t.warned) if t.warned else "",
            Text(_short(t.breached_at, zone), style="bold red"),
            _yes(t.provisional),
            Text(_budget(t)),
        ]
        table.add_row(*cells)
    return table


@main.group("timers")
def timers_group() -> None:
    """The SLA clocks: list, show, extend with the customer's consent, recompute."""


@timers_group.command("list")
@click.option("--status", type=click.Choice(["running", "paused", "stopped"]))
@click.option(
    "--breached/--not-breached",
    default=None,
    help="Only breached (or only not breached) clocks.",
)
@click.option("--limit", type=click.IntRange(1, 10_000), default=100, show_default=True)
@click.option("--offset", type=_OFFSET, default=0, show_default=True)
@click.pass_context
def timers_list(
    ctx: click.Context, status: str | None, breached: bool | None, limit: int, offset: int
) -> None:
    """Clock runs across complaints (default: all not stopped), soonest due first."""
    settings = _settings(ctx)
    with open_engine(settings) as engine:
        rows = engine.list_timers(status=status, breached=breached, limit=limit, offset=offset)
        rules = engine.rules
        zone = _zone(engine)
    doc = {
        "limit": limit,
        "offset": offset,
        "items": [_timer_json(view, zone, number) for number, view in rows],
    }

    def human(out: Console) -> None:
        shown: list[tuple[str | None, TimerView]] = list(rows)
        out.print(_timers_table(shown, rules, zone, f"clocks (times in {zone})"))
        line = f"{len(rows)} clock run{'s' if len(rows) != 1 else ''}"
        if len(rows) == limit:
            line += f"; next page: --offset {offset + limit}"
        out.print(Text(line))

    _emit(settings, doc, human)


@timers_group.command("show")
@click.argument("number")
@click.pass_context
def timers_show(ctx: click.Context, number: str) -> None:
    """Every clock run of one complaint: its ledger and what is derived from it."""
    settings = _settings(ctx)
    with open_engine(settings) as engine:
        views = engine.timers(number)
        rules = engine.rules
        zone = _zone(engine)
    doc = {"number": number, "timers": [_timer_json(v, zone) for v in views]}

    def human(out: Console) -> None:
        rows: list[tuple[str | None, TimerView]] = [(None, v) for v in views]
        out.print(_timers_table(rows, rules, zone, f"clocks of {number} (times in {zone})"))
        for v in views:
            for e in v.extensions:
                out.print(
                    Text(
                        f"{v.timer} #{v.run} extended by "
                        f"{_amount(e.get('amount'), str(e.get('unit', '')))} by {e.get('by')}: "
                        f"{e.get('reason')}"
                    )
                )

    _emit(settings, doc, human)


@timers_group.command("recompute")
@actor_options
@click.pass_context
def timers_recompute(
    ctx: click.Context, actor_id: str | None, roles: tuple[str, ...], department: str | None
) -> None:
    """Re-derive every open clock with the current calendars (after calendar data changed);
    prints one row per recomputed clock: its deadline moved, or it moved to the new calendar
    version with its deadline unchanged (a later pause or extension counts on the new one)."""
    settings = _settings(ctx)
    actor = make_actor(actor_id, roles, department, required=False)
    with open_engine(settings, actor) as engine:
        changes = engine.recompute_timers(actor)
        zone = _zone(engine)
    doc = {
        "changed": [
            _localise(dict(c), ("previous_due_at", "due_at"), zone)
            | {"warnings": [_local_text(w, zone) for w in c.get("warnings", [])]}
            for c in changes
        ]
    }

    def human(out: Console) -> None:
        if not changes:
            out.print(Text("no clock recomputed"))
            return
        table = Table(title=f"recomputed clocks (times in {zone})", title_justify="left")
        for name in ("number", "clock", "run", "was due", "now due", "provisional"):
            table.add_column(name, overflow="fold")
        for c in changes:
            table.add_row(
                Text(str(c["number"])),
                Text(str(c["timer"])),
                str(c["run"]),
                Text(_short(_parse_iso(c.get("previous_due_at")), zone)),
                Text(_short(_parse_iso(c.get("due_at")), zone)),
                _yes(bool(c.get("provisional"))),
            )
        out.print(table)

    _emit(settings, doc, human)


@timers_group.command("extend")
@click.argument("number")
@click.argument("timer")
@click.option(
    "--amount",
    type=click.IntRange(1, max(MAX_DURATION.values())),
    required=True,
    help="How much longer, in the clock's own unit (e.g. working days).",
)
@click.option("--consent-by", required=True, metavar="NAME", help="Who agreed for the customer.")
@click.option(
    "--consent-at",
    required=True,
    metavar="ISO",
    help="When the customer agreed (naive: the rules' time zone).",
)
@click.option(
    "--consent-channel", required=True, metavar="TEXT", help="How (phone, e-mail, letter ...)."
)
@click.option(
    "--consent-reason",
    metavar="TEXT",
    help="The customer's own words, if different from --reason.",
)
@click.option("--reason", required=True, metavar="TEXT", help="Why the clock is extended.")
@actor_options
@click.pass_context
def timers_extend(
    ctx: click.Context,
    number: str,
    timer: str,
    amount: int,
    consent_by: str,
    consent_at: str,
    consent_channel: str,
    consent_reason: str | None,
    reason: str,
    actor_id: str | None,
    roles: tuple[str, ...],
    department: str | None,
) -> None:
    """Extend a running clock, announced in advance and with the customer's recorded
    consent (refused once it has breached)."""
    settings = _settings(ctx)
    given = parse_time(consent_at, "--consent-at")
    actor = make_actor(actor_id, roles, department, required=True)
    assert actor is not None and given is not None
    with open_engine(settings, actor) as engine:
        zone = _zone(engine)
        consent = Consent(
            consent_by, _aware(given, zone) or given, consent_channel, consent_reason or reason
        )
        views = engine.extend_timer(number, timer, actor, amount, consent, reason=reason)
        rules = engine.rules
    doc = {"number": number, "timer": timer, "timers": [_timer_json(v, zone) for v in views]}
    extended = next((v for v in views if v.timer == timer and v.status != "stopped"), None)

    def human(out: Console) -> None:
        if extended is not None:
            out.print(
                Text(
                    f"{number}: {timer} extended by {_amount(amount, extended.unit)}; "
                    f"due {_local(extended.due_at, zone)}"
                )
            )
        rows: list[tuple[str | None, TimerView]] = [(None, v) for v in views]
        out.print(_timers_table(rows, rules, zone, f"clocks of {number} (times in {zone})"))

    _emit(settings, doc, human)


# -- scheduler ------------------------------------------------------------------------------


def _tick_json(report: TickReport, zone: ZoneInfo) -> dict[str, Any]:
    return {
        "fired": report.fired,
        "warnings": report.warnings,
        "breaches": report.breaches,
        "batches": report.batches,
        "max_lateness_seconds": report.max_lateness.total_seconds(),
        "reviews": report.reviews,
        "delivered": report.delivered,
        "next_due": _local(report.next_due, zone),
    }


@main.group("scheduler")
def scheduler_group() -> None:
    """Fire due warnings and breaches exactly once, from any number of processes."""


def _scheduler_options(f: F) -> F:
    f = click.option(
        "--worker", metavar="NAME", type=click.STRING,
        callback=lambda _ctx, _param, value: _worker_name(value),
        help="This process's name in the history [host:pid]."
    )(f)
    f = click.option(
        "--batch-size",
        type=click.IntRange(1, 10_000),
        default=DEFAULT_BATCH_SIZE,
        show_default=True,
        help="Deadlines claimed per transaction.",
    )(f)
    return f


@scheduler_group.command("tick")
@_scheduler_options
@click.pass_context
def scheduler_tick(ctx: click.Context, worker: str | None, batch_size: int) -> None:
    """Fire everything due now, once, and print the report (for cron and tests)."""
    settings = _settings(ctx)
    with open_engine(settings) as engine:
        report = Scheduler(engine, worker=worker, batch_size=batch_size).tick()
        zone = _zone(engine)
    doc = _tick_json(report, zone)

    def human(out: Console) -> None:
        line = (
            f"fired {report.fired} ({report.warnings} warnings, {report.breaches} breaches) "
            f"in {report.batches} batch{'es' if report.batches != 1 else ''}"
        )
        if report.fired:
            line += f", max lateness {_span(report.max_lateness)}"
        line += f"; reviews {report.reviews}; delivered {report.delivered}"
        out.print(Text(line))
        nxt = _local(report.next_due, zone) if report.next_due else "nothing pending"
        out.print(Text(f"next due: {nxt}"))

    _emit(settings, doc, human)


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@contextlib.contextmanager
def _stderr_logging() -> Iterator[logging.Logger]:
    """INFO lines of complaintflow on stderr; APScheduler's per-job chatter kept quiet."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    ours = logging.getLogger("complaintflow")
    aps = logging.getLogger("apscheduler")
    saved = (ours.level, ours.propagate, aps.level)
    ours.addHandler(handler)
    ours.setLevel(logging.INFO)
    ours.propagate = False
    aps.setLevel(logging.WARNING)
    aps.addHandler(handler)
    try:
        yield ours
    finally:
        ours.removeHandler(handler)
        aps.removeHandler(handler)
        ours.setLevel(saved[0])
        ours.propagate = saved[1]
        aps.setLevel(saved[2])


@contextlib.contextmanager
def _stop_on_signals(stop: threading.Event, log: logging.Logger) -> Iterator[None]:
    """SIGTERM and SIGINT set ``stop``; a second SIGINT interrupts at once."""
    previous: dict[int, Any] = {}

    def handler(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s; stopping after the current tick", signal.Signals(signum).name)
        stop.set()
        signal.signal(signum, previous.get(signum, signal.SIG_DFL))

    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, handler)
    try:
        yield
    finally:
        for number, old in previous.items():
            signal.signal(number, old)


@scheduler_group.command("run")
@_scheduler_options
@click.option(
    "--min-interval",
    type=click.FloatRange(min=0.01, max=86_400),
    default=0.2,
    show_default=True,
    metavar="S",
    help="Shortest wait between ticks, seconds (while there is a backlog).",
)
@click.option(
    "--max-interval",
    type=click.FloatRange(min=0.01, max=86_400),
    default=30.0,
    show_default=True,
    metavar="S",
    help="Longest wait between ticks, seconds (nothing due soon).",
)
@click.option(
    "--threads",
    type=click.IntRange(1, 8),
    default=DEFAULT_THREADS,
    show_default=True,
    help="Batches fired at once by this process, each on its own connection "
    "(PostgreSQL; SQLite fires one at a time).",
)
@click.pass_context
def scheduler_run(
    ctx: click.Context,
    worker: str | None,
    batch_size: int,
    min_interval: float,
    max_interval: float,
    threads: int,
) -> None:
    """Run in the foreground until SIGTERM or SIGINT, logging every tick that fired
    something to stderr. Several may run at once, on one host or many: each deadline
    fires once."""
    settings = _settings(ctx)
    if settings.now is not None:
        raise click.UsageError(
            "--now stops the clock, and `scheduler run` waits for time to pass; use "
            "`scheduler tick` to fire what is due at that instant"
        )
    if min_interval > max_interval:
        raise click.BadParameter(
            f"{min_interval} is more than --max-interval {max_interval}",
            param_hint="--min-interval",
        )
    totals = TickReport()
    ticks = 0

    def on_tick(report: TickReport) -> None:
        nonlocal ticks
        ticks += 1
        totals.fired += report.fired
        totals.warnings += report.warnings
        totals.breaches += report.breaches
        totals.reviews += report.reviews
        totals.max_lateness = max(totals.max_lateness, report.max_lateness)

    with open_engine(settings) as engine, _stderr_logging() as log:
        scheduler = Scheduler(
            engine,
            worker=worker,
            batch_size=batch_size,
            threads=threads,
            min_interval=min_interval,
            max_interval=max_interval,
        )
        scheduler.on_tick = on_tick
        stop = threading.Event()
        with _stop_on_signals(stop, log):
            log.info(
                "scheduler %s started on %s (batches of %d on %d threads, every %g-%g s); "
                "SIGTERM or Ctrl-C stops it",
                scheduler.worker,
                _shown_url(settings.db),
                batch_size,
                threads,
                min_interval,
                max_interval,
            )
            scheduler.run(stop)
        log.info(
            "scheduler %s stopped after %d ticks: fired %d (%d warnings, %d breaches), %d reviews",
            scheduler.worker,
            ticks,
            totals.fired,
            totals.warnings,
            totals.breaches,
            totals.reviews,
        )
        name = scheduler.worker
    if settings.json:
        click.echo(
            _dumps(
                {
                    "worker": name,
                    "ticks": ticks,
                    "fired": totals.fired,
                    "warnings": totals.warnings,
                    "breaches": totals.breaches,
                    "reviews": totals.reviews,
                    "max_lateness_seconds": totals.max_lateness.total_seconds(),
                }
            )
        )


# -- outbox ---------------------------------------------------------------------------------


def _note_json(note: Notification, zone: ZoneInfo) -> dict[str, Any]:
    return _localise(note.to_json(), ("created_at",), zone)


def _note_summary(note: Notification, zone: ZoneInfo) -> str:
    p = note.payload
    if note.kind in ("timer_warning", "timer_breached"):
        due = _short(_parse_iso(p.get("due_at")), zone)
        return f"{p.get('timer')} due {due}"
    if note.kind == "review":
        count = p.get("unresolved_count", len(p.get("unresolved") or []))
        return f"{p.get('review')} {p.get('period')}: {count} unresolved"
    return ""


@main.group("outbox")
def outbox_group() -> None:
    """Notifications for other systems: claim a leased batch, ack what was handled."""


@outbox_group.command("claim")
@click.option("--limit", type=click.IntRange(1, 10_000), default=100, show_default=True)
@click.option(
    "--lease-seconds",
    type=click.IntRange(1, 10**8),
    default=300,
    show_default=True,
    metavar="S",
    help="Unacked notifications come back after this long.",
)
@click.pass_context
def outbox_claim(ctx: click.Context, limit: int, lease_seconds: int) -> None:
    """Lease up to --limit undelivered notifications, oldest first (use --json to feed
    another program; ack them with `outbox ack ID...`)."""
    settings = _settings(ctx)
    with open_engine(settings) as engine:
        notes = engine.outbox.claim(limit, timedelta(seconds=lease_seconds))
        zone = _zone(engine)
    doc = {
        "lease_seconds": lease_seconds,
        "notifications": [_note_json(n, zone) for n in notes],
    }

    def human(out: Console) -> None:
        table = Table(title=f"claimed notifications (times in {zone})", title_justify="left")
        for name in ("id", "number", "kind", "recipients", "about", "created", "attempts", "key"):
            table.add_column(name, overflow="fold")
        for n in notes:
            table.add_row(
                str(n.id),
                Text(n.number or ""),
                Text(n.kind),
                Text(", ".join(n.recipients)),
                Text(_note_summary(n, zone)),
                Text(_short(n.created_at, zone)),
                str(n.attempts),
                Text(n.key),
            )
        out.print(table)
        out.print(Text(f"{len(notes)} claimed for {lease_seconds} s"))

    _emit(settings, doc, human)


@outbox_group.command("ack")
@click.argument("ids", nargs=-1, required=True, type=click.IntRange(1, 2**63 - 1),
                metavar="ID...")
@click.pass_context
def outbox_ack(ctx: click.Context, ids: tuple[int, ...]) -> None:
    """Mark notifications delivered."""
    settings = _settings(ctx)
    with open_engine(settings) as engine:
        acked = engine.outbox.ack(ids)
    doc = {"acked": acked, "ids": list(ids)}

    def human(out: Console) -> None:
        line = f"acked {acked} of {len(ids)}"
        if acked < len(ids):
            line += f" ({len(ids) - acked} unknown or already acked)"
        out.print(Text(line))

    _emit(settings, doc, human)


# -- demo -----------------------------------------------------------------------------------


def _demo_clocks(summary: DemoSummary, rules: RuleSet) -> Table:
    table = Table(title="fired by the clocks", title_justify="left")
    table.add_column("clock")
    table.add_column("warnings", justify="right")
    table.add_column("breaches", justify="right")
    for timer, n in summary.clocks.items():
        table.add_row(
            Text(_timer_label(rules, timer)),
            str(n.get("warnings", 0) or ""),
            str(n.get("breaches", 0) or ""),
        )
    table.add_row(Text("total", style="bold"), str(summary.warnings), str(summary.breaches))
    return table


REFUSAL_LABELS = {
    "wrong_role": "wrong role 角色不符",
    "recusal": "recusal 被投诉人回避",
    "four_eyes": "four eyes 提出人自批",
    "missing_fields": "missing fields 缺少必填项",
    "missing_approval": "missing approval 未经总经理批准",
}


@main.command()
@click.option(
    "--db",
    "db_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=DEFAULT_DEMO_DB,
    show_default=True,
    help="The demo's SQLite file, recreated on every run.",
)
@click.option(
    "--count",
    type=click.IntRange(1, 100_000),
    default=300,
    show_default=True,
    help="How many complaints.",
)
@click.option(
    "--seed", type=int, default=7, show_default=True, help="The same seed gives the same run."
)
@click.option("--force", is_flag=True, help="Recreate --db even if it is not a demo database.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.pass_context
def demo(
    ctx: click.Context, db_path: Path, count: int, seed: int, force: bool, as_json: bool
) -> None:
    """Run generated complaints through the default procedure on a fresh SQLite file in
    simulated time, with the scheduler firing warnings and breaches, refusals, approvals,
    disputes, reopens and extensions, then verify the whole history deeply. Ends with the
    instant its clock stopped and the commands that audit the database on that clock
    (global --now).

    Always uses the shipped rules and its own database (not the global --db/--rules)."""
    settings = _settings(ctx)
    settings.json = settings.json or as_json
    if settings.now is not None:
        raise click.UsageError(
            "the demo runs on its own simulated clock; leave out --now (or COMPLAINTFLOW_NOW)"
        )
    if "://" in str(db_path):
        raise click.BadParameter("a file path, not a URL", param_hint="--db")
    if not force and not is_demo_database(db_path):
        raise CommandFailed(
            f"{db_path} is not a demo database; choose another --db or pass --force to replace it"
        )
    engine, clock = open_demo_engine(db_path)
    labels = {"simulating": "simulating (hours)", "verifying": "verifying deeply (complaints)"}
    try:
        with _phases(labels) as progress:
            summary = run_demo(engine, count, seed, progress, clock=clock)
        rules = engine.rules
        first = engine.find(limit=1).items[0]
    finally:
        engine.close()
    where = str(db_path.resolve())
    zone = ZoneInfo(rules.definition.timezone)
    after = _auditor_commands(db_path, summary.ended_at, first, zone)
    doc = {**summary.to_json(), "database": where, "auditor": after}

    def human(out: Console) -> None:
        states = Table(title="complaints by state", title_justify="left")
        states.add_column("state")
        states.add_column("状态")
        states.add_column("count", justify="right")
        for state, n in summary.states.items():
            states.add_row(Text(state), Text(rules.label(state)), str(n))
        out.print(states)
        severities = Table(title="by severity", title_justify="left")
        severities.add_column("severity")
        severities.add_column("count", justify="right")
        for level, n in summary.severities.items():
            severities.add_row(Text(level), str(n))
        out.print(severities)
        refusals = Table(title=f"{summary.refusals} refused attempts", title_justify="left")
        refusals.add_column("attempt")
        refusals.add_column("check")
        refusals.add_column("count", justify="right")
        for kind, n in summary.refusals_by_kind.items():
            refusals.add_row(
                Text(REFUSAL_LABELS.get(kind, kind)), Text(REFUSAL_KINDS[kind]), str(n)
            )
        out.print(refusals)
        activity = Table(title="activity", title_justify="left")
        activity.add_column("what")
        activity.add_column("count", justify="right")
        steps = sum(summary.timing_steps.values())
        for what, n in (
            ("transitions fired", summary.transitions),
            ("  of which timing steps (hand-over, response, contact, ...)", steps),
            ("plans approved by the GM", summary.approvals),
            ("replies signed by top management", summary.signed_replies),
            ("disputes", summary.disputes),
            ("reopens", summary.reopens),
            ("closed", summary.closed),
            ("rejected", summary.rejected),
            ("still in progress", summary.in_progress),
            ("urgent after-hours complaints", summary.urgent_after_hours),
        ):
            activity.add_row(what, str(n))
        out.print(activity)
        out.print(_demo_clocks(summary, rules))
        down_from, down_until = DOWNTIME
        lateness = f"max lateness {_span(summary.max_lateness)}"
        if summary.max_lateness > SCHEDULER_POLL:
            lateness += (
                f" (the scheduler was down {_short(down_from, zone)}"
                f"-{down_until.astimezone(zone):%H:%M} and caught up)"
            )
        reviews = f"{summary.reviews} monthly review{'s' if summary.reviews != 1 else ''}"
        for line in (
            f"clocks: {summary.warnings} warnings and {summary.breaches} breaches fired by "
            f"the scheduler in {summary.ticks} ticks; {lateness}",
            f"breaches raised {summary.severity_raised} complaints to major; "
            f"{summary.escalated} urgent after-hours complaints reassigned to the GM; "
            f"{summary.extensions} clocks extended with the customer's consent",
            f"outbox: {summary.notifications} notifications (incl. {reviews}), "
            "waiting for `complaintflow outbox claim`",
        ):
            out.print(Text(line))
        days = summary.span.total_seconds() / 86400
        out.print(
            Text(
                f"simulated {_local(summary.started_at, zone)} → "
                f"{_local(summary.ended_at, zone)} ({days:.1f} days)"
            )
        )
        verdict = "ok" if summary.verified_ok else f"{summary.findings} FINDINGS"
        how = "deep verification" if summary.verified_deep else "verification"
        out.print(
            Text(
                f"{how}: {verdict} ({summary.verified_complaints} complaints, "
                f"{summary.verified_events} events)",
                style="green" if summary.verified_ok else "bold red",
            )
        )
        out.print(Text(f"database: {where}"))
        out.print(
            Text(
                f"the demo stopped its clock at {after['now']}; on the wall clock every deadline "
                "since then looks missed, so run on the demo's clock:",
                style="bold",
            )
        )
        for command in after["commands"]:
            out.print(Text(f"  {command}"))

    _emit(settings, doc, human)
    if not summary.verified_ok:
        ctx.exit(1)


def _auditor_commands(
    db_path: Path, ended: datetime, sample: Complaint, zone: ZoneInfo
) -> dict[str, Any]:
    """What an auditor runs on a finished demo database: every command on the clock the demo
    stopped at (``--now``), one complaint replayed half way through its life."""
    now = _local(ended, zone)
    midway = sample.received_at + (ended - sample.received_at) / 2
    at = midway.astimezone(zone).replace(second=0, microsecond=0).isoformat(timespec="minutes")
    prefix = f"complaintflow --db {shlex.quote(str(db_path))} --now {now}"
    return {
        "now": now,
        "commands": [
            f"{prefix} audit verify --deep",
            f"{prefix} timers list --breached",
            f"{prefix} audit replay {sample.number} --at {at}",
            f"{prefix} rules list",
        ],
    }


def _print_findings(out: Console, findings: Sequence[Finding]) -> str:
    """Print verification findings as a table; return the "N findings" phrase."""
    count = len(findings)
    found = f"{count} finding{'s' if count != 1 else ''}"
    if findings:
        table = Table(title=found, title_justify="left")
        for name in ("number", "seq", "kind", "detail"):
            table.add_column(name, overflow="fold")
        for f in findings:
            table.add_row(
                Text(f.number or ""),
                Text("" if f.seq is None else str(f.seq)),
                Text(f.kind, style="red"),
                Text(f.detail),
            )
        out.print(table)
    return found
