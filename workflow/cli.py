"""The ``complaintflow`` command line: people get tables, ``--json`` gets one JSON document.

Tables and results go to stdout, progress and errors to stderr. Every ``ComplaintflowError``
is caught here, at the boundary, and shown as a message (or a JSON ``error`` object) with
exit code 1; click's usage errors keep exit code 2.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, is_dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import click
import sqlalchemy as sa
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from complaintflow.actor import Actor
from complaintflow.demo import REFUSAL_KINDS, is_demo_database, open_demo_engine, run_demo
from complaintflow.engine import Engine
from complaintflow.errors import ComplaintflowError, InvalidInput, MissingFields, RuleError
from complaintflow.rules.check import did_you_mean
from complaintflow.rules.loader import default_rules_text, json_schema, load_rules
from complaintflow.rules.ruleset import RuleSet
from complaintflow.rules.values import to_json
from complaintflow.states.machine import TriggerOption
from complaintflow.storage import db
from complaintflow.views import Complaint, HistoryEvent

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


class CommandFailed(Exception):
    """A problem the CLI itself finds (a file that exists, a database URL it cannot use)."""


# -- the error boundary ---------------------------------------------------------------------


def error_text(exc: BaseException) -> str:
    """One line, or a head line and one indented line per problem."""
    if isinstance(exc, RuleError):
        return str(exc)
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


class _Group(click.Group):
    """The root group: turns expected errors into ``Reported``."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (ComplaintflowError, CommandFailed) as exc:
            settings = ctx.obj if isinstance(ctx.obj, Settings) else None
            raise Reported(exc, settings.json if settings else False) from None


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


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


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


@contextlib.contextmanager
def open_engine(settings: Settings) -> Iterator[Engine]:
    try:
        sa.make_url(settings.db)
    except (sa.exc.ArgumentError, ValueError) as exc:
        raise CommandFailed(f"cannot use database {settings.db!r}: {exc}") from None
    try:
        engine = Engine.open(settings.db, rules=settings.rules, loaded_by="complaintflow cli")
    except (sa.exc.ArgumentError, ImportError) as exc:  # no such dialect or driver
        raise CommandFailed(f"cannot use database {_shown_url(settings.db)!r}: {exc}") from None
    try:
        yield engine
    finally:
        engine.close()


def _check_choice(ctx: click.Context, option: str, value: str, known: Sequence[str]) -> None:
    if value not in known:
        hint = did_you_mean(value, known)
        message = f"{value!r} is not one of {', '.join(known)}"
        if hint:
            message += f"; did you mean {hint!r}?"
        raise click.BadParameter(message, ctx=ctx, param_hint=option)


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
@click.version_option(package_name="complaintflow", prog_name="complaintflow")
@click.pass_context
def main(ctx: click.Context, db: str, rules: Path | None, as_json: bool) -> None:
    """Customer complaints as state machines guarded by a YAML rule file."""
    ctx.obj = Settings(database_url(db), rules, as_json)


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
    with open_engine(settings) as engine:
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
    with open_engine(settings) as engine:
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
    with open_engine(settings) as engine:
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
        table = Table(title="fields", title_justify="left")
        table.add_column("field")
        table.add_column("label")
        table.add_column("value", overflow="fold")
        order = [f.id for f in rules.definition.fields]
        names = [n for n in order if n in complaint.fields] + [
            n for n in complaint.fields if n not in order
        ]
        for name in names:
            field = rules.fields.get(name)
            shown = Text(_display(complaint.fields[name]))
            if name in complaint.masked:
                shown.append("  (masked)", style="dim")
            table.add_row(Text(name), Text(field.label.zh if field else ""), shown)
        out.print(table)
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
    with open_engine(settings) as engine:
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
                Text(f"{_state(rules, e.from_state)} → {_state(rules, e.to_state)}"),
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
@click.option("--offset", type=click.IntRange(min=0), default=0, show_default=True)
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
    with open_engine(settings) as engine:
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
    """Check rule files, print their JSON Schema."""


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


# -- audit ----------------------------------------------------------------------------------


@main.group("audit")
def audit_group() -> None:
    """Check the stored history."""


@audit_group.command("verify")
@click.pass_context
def audit_verify(ctx: click.Context) -> None:
    """Recompute every hash chain and compare each complaint with its history
    (exit 1 on any finding)."""
    settings = _settings(ctx)
    with open_engine(settings) as engine:
        total = engine.find(limit=1).total
        with _progress(_err()) as bar:
            task = bar.add_task("verifying", total=total)
            report = engine.verify(progress=lambda n: bar.advance(task, n))

    def human(out: Console) -> None:
        count = len(report.findings)
        found = f"{count} finding{'s' if count != 1 else ''}"
        if report.findings:
            table = Table(title=found, title_justify="left")
            for name in ("number", "seq", "kind", "detail"):
                table.add_column(name, overflow="fold")
            for f in report.findings:
                table.add_row(
                    Text(f.number or ""),
                    Text("" if f.seq is None else str(f.seq)),
                    Text(f.kind, style="red"),
                    Text(f.detail),
                )
            out.print(table)
        verdict = "ok" if report.ok else found
        out.print(
            Text(f"verified {report.complaints} complaints, {report.events} events: {verdict}")
        )

    _emit(settings, report.to_json(), human)
    if not report.ok:
        ctx.exit(1)


# -- demo -----------------------------------------------------------------------------------

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
    """Run generated complaints through the default procedure on a fresh SQLite file,
    with refusals, approvals, disputes and reopens, then verify the history.

    Always uses the shipped rules and its own database (not the global --db/--rules)."""
    settings = _settings(ctx)
    settings.json = settings.json or as_json
    if "://" in str(db_path):
        raise click.BadParameter("a file path, not a URL", param_hint="--db")
    if not force and not is_demo_database(db_path):
        raise CommandFailed(
            f"{db_path} is not a demo database; choose another --db or pass --force to replace it"
        )
    engine, clock = open_demo_engine(db_path)
    labels = {"simulating": "simulating (hours)", "verifying": "verifying (complaints)"}
    try:
        with _progress(_err()) as bar:
            tasks: dict[str, Any] = {}

            def progress(phase: str, done: int, total: int) -> None:
                if phase not in tasks:
                    tasks[phase] = bar.add_task(labels.get(phase, phase), total=total)
                bar.update(tasks[phase], completed=done, total=total)

            summary = run_demo(engine, count, seed, progress, clock=clock)
        rules = engine.rules
    finally:
        engine.close()
    where = str(db_path.resolve())
    doc = {**summary.to_json(), "database": where}

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
        for what, n in (
            ("transitions fired", summary.transitions),
            ("plans approved by the GM", summary.approvals),
            ("replies signed by top management", summary.signed_replies),
            ("disputes", summary.disputes),
            ("reopens", summary.reopens),
            ("closed", summary.closed),
            ("rejected", summary.rejected),
            ("still in progress", summary.in_progress),
        ):
            activity.add_row(what, str(n))
        out.print(activity)
        zone = ZoneInfo(rules.definition.timezone)
        days = summary.span.total_seconds() / 86400
        out.print(
            Text(
                f"simulated {_local(summary.started_at, zone)} → "
                f"{_local(summary.ended_at, zone)} ({days:.1f} days)"
            )
        )
        verdict = "ok" if summary.verified_ok else f"{summary.findings} FINDINGS"
        out.print(
            Text(
                f"verification: {verdict} ({summary.verified_complaints} complaints, "
                f"{summary.verified_events} events)",
                style="green" if summary.verified_ok else "bold red",
            )
        )
        out.print(Text(f"database: {where}  (try: complaintflow --db {db_path} list)"))

    _emit(settings, doc, human)
    if not summary.verified_ok:
        ctx.exit(1)
