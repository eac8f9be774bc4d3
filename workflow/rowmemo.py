"""What the engine last wrote to each complaint row, so that the next transition of the same
complaint need not parse and decode the row's ``fields`` and ``facts`` texts again.

An entry is only ever used for the exact texts it was made from (they are compared in full),
so it cannot go stale: a row changed by another process or a hand edit simply has other
texts, and is then parsed as usual. Parsing and decoding a row cost about 5 % of a fire's
CPU time (``docs/benchmarks.md``)."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from complaintflow.states.conditions import Facts

__all__ = ["RememberedRow", "RowMemo"]


@dataclass(frozen=True, slots=True)
class RememberedRow:
    """A complaint row's texts as written, with what reading them gives:
    ``raw == parse_canonical(fields_text)`` and ``decoded == codec.decode(raw)`` (the same
    keys in the same order, equal values), ``facts == Facts.from_text(facts_text)``."""

    ruleset: str
    fields_text: str
    raw: dict[str, Any]
    decoded: dict[str, Any]
    facts_text: str
    facts: Facts


class RowMemo:
    """The rows of the ``size`` complaints written most recently by this engine, as long as
    their texts come to at most ``chars`` characters together (the decoded values take
    about as much again); a row whose texts alone exceed a 64th of that is not kept."""

    def __init__(self, size: int = 1024, chars: int = 4_000_000) -> None:
        self._size = size
        self._chars = chars
        self._held = 0
        self._rows: dict[int, RememberedRow] = {}
        self._lock = threading.Lock()

    def fields(self, complaint_id: int, ruleset: str, text: str
               ) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """``(raw, decoded)`` of a ``fields`` text this engine wrote, else None. The decoded
        values are a copy the caller may change; ``raw`` is shared and only to be read."""
        found = self._rows.get(complaint_id)
        if found is None or found.fields_text != text or found.ruleset != ruleset:
            return None
        return found.raw, dict(found.decoded)

    def facts(self, complaint_id: int, text: str | None) -> Facts | None:
        """A copy of the facts of a ``facts`` text this engine wrote, else None."""
        found = self._rows.get(complaint_id)
        if found is None or text is None or found.facts_text != text:
            return None
        return found.facts.copy()

    def remember(self, complaint_id: int, row: RememberedRow) -> None:
        size = _chars(row)
        with self._lock:
            rows = self._rows
            old = rows.pop(complaint_id, None)  # to the end: the most recent
            if old is not None:
                self._held -= _chars(old)
            if self._size <= 0 or size * 64 > self._chars:
                return
            rows[complaint_id] = row
            self._held += size
            while len(rows) > self._size or self._held > self._chars:
                self._held -= _chars(rows.pop(next(iter(rows))))

    def clear(self) -> None:
        with self._lock:
            self._rows.clear()
            self._held = 0


def _chars(row: RememberedRow) -> int:
    return len(row.fields_text) + len(row.facts_text)
