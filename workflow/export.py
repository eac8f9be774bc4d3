"""Exports auditors can hand on: one row per event, streamed, with the chain hashes.

An export made by an actor allowed to read personal data can be re-verified on its own
(``check_export``: every hash recomputed, every link followed). With personal data masked,
the links (``prev_hash`` → ``hash``) still check, but the payload hashes cannot.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
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

__all__ = ["COLUMNS", "ExportCheck", "check_export", "export_events", "open_destination"]

COLUMNS = ("number", "seq", "type", "trigger", "from_state", "to_state", "actor_id",
           "actor_roles", "actor_department", "occurred_at", "occurred_local", "payload",
           "ruleset", "schema_version", "prev_hash", "hash", "masked")


def open_destination(path: str | Path) -> TextIO:
    """Open an export file for writing, or raise ``InvalidInput`` saying why not."""
    target = Path(path)
    try:
        return target.open("w", encoding="utf-8", newline="")
    except OSError as exc:
        raise InvalidInput([FieldProblem("output", f"cannot write {target}: {exc.strerror}")],
                           context="export") from None


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


def export_events(engine: Engine, out: TextIO, fmt: str = "jsonl", *,
                  number: str | None = None, since: datetime | None = None,
                  until: datetime | None = None, actor: Actor | None = None) -> int:
    """Write events (one per line / row) to ``out``; returns how many."""
    if fmt not in ("jsonl", "csv"):
        raise InvalidInput([FieldProblem("format", "jsonl or csv")], context="export")
    for name, moment in (("since", since), ("until", until)):
        if moment is not None and moment.tzinfo is None:
            raise InvalidInput([FieldProblem(name, "an aware datetime")], context="export")
    count = 0
    writer = csv.DictWriter(out, fieldnames=COLUMNS) if fmt == "csv" else None
    if writer is not None:
        writer.writeheader()
    for row in _rows(engine, number=number, since=since, until=until, actor=actor):
        if writer is not None:
            writer.writerow(row)
        else:
            out.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
        count += 1
    return count


@dataclass
class ExportCheck:
    rows: int = 0
    complaints: int = 0
    recomputed: int = 0
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


def check_export(lines: Iterable[str], fmt: str = "jsonl") -> ExportCheck:
    """Re-verify an export on its own: links always, hashes where nothing was masked.
    Only complete complaint histories (starting at seq 1) are checked for links."""
    report = ExportCheck()
    prev: dict[str, tuple[int, str]] = {}
    for row in _read(lines, fmt):
        report.rows += 1
        number = str(row["number"])
        seq = int(row["seq"])
        masked = str(row.get("masked")).lower() == "true"
        last = prev.get(number)
        if last is None:
            report.complaints += 1
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
    return report
