"""Exports auditors can hand on: one row per event, streamed, with the chain hashes.

An export made by an actor allowed to read personal data can be re-verified on its own
(``check_export``: every hash recomputed, every link followed). With personal data masked,
the links (``prev_hash`` → ``hash``) still check, but the payload hashes cannot.

The last line (JSON Lines: ``{"export_end": {...}}``; CSV: a row whose ``type`` is
``export_end`` and whose ``payload`` holds the same object) closes the export: how many
events of how many complaints, the selection they were taken with, and the **digest**, the
SHA-256 of every exported event hash in order, one per line. A file cut short has no end
record; a row removed anywhere (also a complaint's first or last event) changes the count
and the digest; and in an export not limited by ``since``, a complaint's first row must be
its first event. The chain has no secret, so someone who rewrites a whole export can also
rewrite its end record: quote the digest ``audit export`` prints when handing the file on,
and ``audit check-export`` prints the one it recomputes.

Export findings (besides ``edited`` and ``reordered`` per event): ``truncated`` (no end
record, or a complaint's events before the first exported one are missing),
``count_mismatch`` / ``digest_mismatch`` (rows removed or added since the end record was
written), ``after_end`` (rows after the end record), ``bad_end`` (an end record that does
not parse).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import secrets
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from complaintflow.actor import Actor
from complaintflow.audit import stream_events
from complaintflow.errors import FieldProblem, InvalidInput
from complaintflow.storage import db
from complaintflow.storage.hashing import GENESIS, canonical, event_hash
from complaintflow.verify import Finding

if TYPE_CHECKING:
    from complaintflow.engine import Engine

__all__ = ["COLUMNS", "END_TYPE", "ExportCheck", "ExportResult", "check_export", "export_events",
           "open_destination"]

#: The ``type`` of the CSV row (and the key of the JSON Lines object) that ends an export.
END_TYPE = "export_end"
#: The layout of the end record; a reader refuses one it does not know.
END_VERSION = 1

COLUMNS = ("number", "seq", "type", "trigger", "from_state", "to_state", "actor_id",
           "actor_roles", "actor_department", "occurred_at", "occurred_local", "payload",
           "ruleset", "schema_version", "prev_hash", "hash", "masked")


@contextlib.contextmanager
def open_destination(path: str | Path) -> Iterator[TextIO]:
    """An export file written whole or not at all: the block writes a new file beside
    ``path``, which replaces ``path`` (keeping an existing file's permissions) only when the
    block ends without an error; otherwise the new file is removed and an existing one stays
    as it was. A place that cannot be written raises ``InvalidInput`` before the block runs."""
    target = Path(path)

    def unwritable(why: str) -> InvalidInput:
        return InvalidInput([FieldProblem("output", f"cannot write {target}: {why}")],
                            context="export")

    if target.is_dir():
        raise unwritable("it is a directory")
    partial = target.with_name(f".{target.name}.{secrets.token_hex(4)}.partial")
    try:  # created with the process's umask, as open() would
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as exc:
        raise unwritable(exc.strerror or str(exc)) from None
    try:
        with open(fd, "w", encoding="utf-8", newline="") as out:
            yield out
        with contextlib.suppress(FileNotFoundError):
            os.chmod(partial, target.stat().st_mode & 0o7777)
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def _rows(engine: Engine, *, number: str | None, since: datetime | None,
          until: datetime | None, actor: Actor | None) -> Iterator[dict[str, Any]]:
    zone = engine.zone
    with db.read(engine.database) as conn:
        for num, ev in stream_events(engine, conn, number=number, since=since, until=until):
            view = engine.event_view(num, ev, conn)
            shown = engine.mask_event(view, actor)
            masked = shown.payload != view.payload
            yield {
                "number": num, "seq": ev.seq, "type": ev.type, "trigger": ev.trigger,
                "from_state": ev.from_state, "to_state": ev.to_state,
                "actor_id": ev.actor_id, "actor_roles": ev.actor_roles,
                "actor_department": ev.actor_department,
                "occurred_at": ev.occurred_at.isoformat(timespec="microseconds")
                .replace("+00:00", "Z"),
                "occurred_local": ev.occurred_at.astimezone(zone).isoformat(),
                "payload": ev.payload if not masked else canonical(dict(shown.payload)),
                "ruleset": ev.ruleset, "schema_version": ev.schema_version,
                "prev_hash": ev.prev_hash, "hash": ev.hash, "masked": masked,
            }


@dataclass(frozen=True)
class ExportResult:
    """What an export wrote: ``events`` rows of ``complaints`` complaints, and the digest of
    their hashes (the one in the end record)."""

    events: int
    complaints: int
    digest: str


def _instant(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat(timespec="microseconds")


def export_events(engine: Engine, out: TextIO, fmt: str = "jsonl", *,
                  number: str | None = None, since: datetime | None = None,
                  until: datetime | None = None, actor: Actor | None = None,
                  progress: Callable[[], None] | None = None) -> ExportResult:
    """Write events (one per line / row) and the end record to ``out``; events at or after
    ``since`` and before ``until``. ``progress`` is called after each event written (not
    for the header or the end record). Bad arguments are refused before anything is
    written."""
    if fmt not in ("jsonl", "csv"):
        raise InvalidInput([FieldProblem("format", "jsonl or csv")], context="export")
    for name, moment in (("since", since), ("until", until)):
        if moment is not None and moment.tzinfo is None:
            raise InvalidInput([FieldProblem(name, "an aware datetime")], context="export")
    if since is not None and until is not None and since > until:
        raise InvalidInput([FieldProblem("until", f"{_instant(until)} is before since "
                                                  f"({_instant(since)})")], context="export")
    count = 0
    numbers: set[str] = set()
    digest = hashlib.sha256()
    writer = csv.DictWriter(out, fieldnames=COLUMNS) if fmt == "csv" else None
    if writer is not None:
        writer.writeheader()
    for row in _rows(engine, number=number, since=since, until=until, actor=actor):
        if writer is not None:
            writer.writerow(row)
        else:
            out.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
        count += 1
        numbers.add(row["number"])
        digest.update(row["hash"].encode("utf-8") + b"\n")
        if progress is not None:
            progress()
    result = ExportResult(count, len(numbers), digest.hexdigest())
    end = {
        "version": END_VERSION, "events": result.events, "complaints": result.complaints,
        "digest": result.digest,
        "selection": {"number": number, "since": _instant(since), "until": _instant(until)},
        "masked_for": None if actor is None else actor.id,
    }
    if writer is not None:
        writer.writerow({**dict.fromkeys(COLUMNS, ""), "type": END_TYPE, "seq": count,
                         "payload": json.dumps(end, sort_keys=True), "hash": result.digest})
    else:
        out.write(json.dumps({END_TYPE: end}, sort_keys=True) + "\n")
    return result


@dataclass
class ExportCheck:
    """``rows`` events of ``complaints`` complaints read, ``recomputed`` of them re-hashed;
    ``digest`` is the SHA-256 of their hashes, ``end`` the end record (None if missing)."""

    rows: int = 0
    complaints: int = 0
    recomputed: int = 0
    digest: str = ""
    end: dict[str, Any] | None = None
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings


def _read(lines: Iterable[str], fmt: str) -> Iterator[dict[str, Any]]:
    if fmt == "csv":
        yield from csv.DictReader(io.StringIO("".join(lines)))
    else:
        for line in lines:
            if line.strip():
                yield json.loads(line)


def _end_record(row: dict[str, Any], fmt: str) -> dict[str, Any] | None:
    """The end record in ``row``, if it is one (``{}`` for one that does not parse)."""
    if fmt == "csv":
        if row.get("type") != END_TYPE or row.get("number"):
            return None
        try:
            end = json.loads(str(row.get("payload")))
        except ValueError:
            return {}
    elif set(row) == {END_TYPE}:
        end = row[END_TYPE]
    else:
        return None
    fields = {"version": int, "events": int, "complaints": int, "digest": str,
              "selection": dict}
    if not isinstance(end, dict) or any(not isinstance(end.get(k), t) or isinstance(
            end.get(k), bool) for k, t in fields.items()) or end["version"] != END_VERSION:
        return {}
    return end


def check_export(lines: Iterable[str], fmt: str = "jsonl", *,
                 require_end: bool = True) -> ExportCheck:
    """Re-verify an export on its own: links always, hashes where nothing was masked, and
    the end record (count and digest of every row; see the module's docstring). Links are
    checked within each complaint from its first exported row. ``require_end=False``
    accepts a file without an end record (written by a release before them): its rows are
    checked, but nothing can tell whether rows are missing at either end."""
    report = ExportCheck()
    prev: dict[str, tuple[int, str]] = {}
    first_seq: dict[str, int] = {}
    rolling = hashlib.sha256()
    ended = False
    for row in _read(lines, fmt):
        end = _end_record(row, fmt)
        if ended:
            report.findings.append(Finding(None, None, "after_end",
                                           "rows follow the end record"))
            break
        if end is not None:
            ended = True
            if end:
                report.end = end
            else:
                report.findings.append(Finding(None, None, "bad_end",
                                               "the end record does not parse"))
            continue
        report.rows += 1
        rolling.update(str(row["hash"]).encode("utf-8") + b"\n")
        number = str(row["number"])
        seq = int(row["seq"])
        masked = str(row.get("masked")).lower() == "true"
        last = prev.get(number)
        if last is None:
            report.complaints += 1
            first_seq[number] = seq
            if seq == 1 and row["prev_hash"] != GENESIS:
                report.findings.append(Finding(number, seq, "reordered",
                                               "the first event does not start the chain"))
        elif seq != last[0] + 1 or row["prev_hash"] != last[1]:
            report.findings.append(Finding(number, seq, "reordered",
                                           "does not link to the exported event before it"))
        if not masked:
            dept = row.get("actor_department") or None
            trigger = row.get("trigger") or None
            from_state = row.get("from_state") or None
            digest = event_hash(
                number=number, seq=seq, type=str(row["type"]), trigger=trigger,
                from_state=from_state, to_state=str(row["to_state"]),
                actor_id=str(row["actor_id"]), actor_roles=str(row["actor_roles"]),
                actor_department=dept,
                occurred_at=datetime.fromisoformat(str(row["occurred_at"]).replace("Z",
                                                                                   "+00:00")),
                payload=str(row["payload"]), ruleset=str(row["ruleset"]),
                schema_version=int(row["schema_version"]), prev_hash=str(row["prev_hash"]),
            )
            report.recomputed += 1
            if digest != row["hash"]:
                report.findings.append(Finding(number, seq, "edited",
                                               "the exported row does not match its hash"))
        prev[number] = (seq, str(row["hash"]))
    report.digest = rolling.hexdigest()
    _check_end(report, first_seq, ended, require_end)
    return report


def _check_end(report: ExportCheck, first_seq: dict[str, int], ended: bool,
               required: bool) -> None:
    end = report.end
    if not ended and required:
        report.findings.append(Finding(None, None, "truncated",
                                       "no end record: the export was cut short (or written "
                                       "by a release before end records)"))
        return
    if end is None:
        return
    if end["events"] != report.rows or end["complaints"] != report.complaints:
        report.findings.append(Finding(
            None, None, "count_mismatch",
            f"the end record lists {end['events']} events of {end['complaints']} complaints; "
            f"the file holds {report.rows} of {report.complaints}"))
    if end["digest"] != report.digest:
        report.findings.append(Finding(
            None, None, "digest_mismatch",
            f"the end record's digest is {end['digest']}; the rows give {report.digest}"))
    if end["selection"].get("since") is None:
        # everything of each complaint up to ``until`` was selected: it starts at seq 1
        for number, seq in first_seq.items():
            if seq != 1:
                report.findings.append(Finding(
                    number, seq, "truncated",
                    f"the export starts this complaint at event {seq}; events 1 to {seq - 1} "
                    "are missing"))
