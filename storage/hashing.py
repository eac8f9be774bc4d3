"""Canonical serialisation and the per-complaint SHA-256 chain."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

__all__ = ["GENESIS", "canonical", "event_hash", "iso"]

GENESIS = "0" * 64


def canonical(value: Any) -> str:
    """One text per value: sorted keys, no spaces, UTF-8 kept as is."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def event_hash(
    *,
    number: str,
    seq: int,
    type: str,
    trigger: str | None,
    from_state: str | None,
    to_state: str,
    actor_id: str,
    actor_roles: str,
    actor_department: str | None,
    occurred_at: datetime,
    payload: str,
    ruleset: str,
    schema_version: int,
    prev_hash: str,
) -> str:
    """The hash of one event: every stored column but the row id and the hash itself."""
    body = canonical([
        number, seq, type, trigger, from_state, to_state, actor_id, actor_roles,
        actor_department, iso(occurred_at), payload, ruleset, schema_version, prev_hash,
    ])
    return hashlib.sha256(body.encode("utf-8")).hexdigest()
