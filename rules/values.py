"""Typed values of complaint fields: checking input, and the canonical JSON form.

Python values in memory: str, int, Decimal, date, aware UTC datetime, bool, tuple[str, ...]
for enum lists. JSON form (stored and hashed): decimals and dates as strings, datetimes as
ISO-8601 UTC with ``Z``, enum lists as sorted-free lists in the given order.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import MAX_EMAX, MIN_EMIN, Context, Decimal, InvalidOperation
from typing import Any

from complaintflow.errors import hint
from complaintflow.rules.model import FieldDef

__all__ = ["ValueType", "coerce", "from_json", "text_problem", "to_json", "type_of_field"]

DEFAULT_STRING_MAX = 200
DEFAULT_TEXT_MAX = 20_000
# plain ASCII numbers only: int() and Decimal() would also take '1_000' and other scripts' digits
_INTEGER_TEXT = re.compile(r"[-+]?[0-9]+")
_DECIMAL_RANGE = 100
#: integers have at most as many digits as a decimal's integer part
_INTEGER_LIMIT = 10 ** (_DECIMAL_RANGE + 1)
_DECIMAL_TEXT = re.compile(r"[-+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]+)?")


@dataclass(frozen=True)
class ValueType:
    """The type of a condition subject or operand."""

    kind: str  # string text integer decimal date datetime enum enum_list bool string_list
    values: tuple[str, ...] = ()

    @property
    def numeric(self) -> bool:
        return self.kind in ("integer", "decimal")

    @property
    def ordered(self) -> bool:
        return self.numeric or self.kind in ("date", "datetime")

    @property
    def is_list(self) -> bool:
        return self.kind in ("enum_list", "string_list")

    def element(self) -> ValueType:
        if self.kind == "enum_list":
            return ValueType("enum", self.values)
        if self.kind == "string_list":
            return ValueType("string")
        return self

    def comparable_with(self, other: ValueType) -> bool:
        if self.numeric and other.numeric:
            return True
        stringy = {"string", "text", "enum"}
        if self.kind in stringy and other.kind in stringy:
            return True
        return self.kind == other.kind

    def describe(self) -> str:
        if self.values:
            return f"{self.kind} of {', '.join(self.values)}"
        return self.kind


def type_of_field(field: FieldDef) -> ValueType:
    return ValueType(field.type, tuple(field.values or ()))


class ValueProblem(ValueError):
    pass


def _parse_datetime(raw: Any) -> datetime:
    if isinstance(raw, datetime):
        value = raw
    elif isinstance(raw, str):
        try:
            value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            raise ValueProblem(f"{raw!r} is not an ISO-8601 date-time") from None
    else:
        raise ValueProblem(f"expected a date-time, got {type(raw).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueProblem("a date-time needs a time zone (e.g. +08:00 or Z)")
    return value.astimezone(UTC)


def _parse_date(raw: Any) -> date:
    if isinstance(raw, datetime):
        raise ValueProblem("expected a date, got a date-time")
    if isinstance(raw, date):
        return raw
    if isinstance(raw, str):
        try:
            return date.fromisoformat(raw)
        except ValueError:
            raise ValueProblem(f"{raw!r} is not an ISO-8601 date (YYYY-MM-DD)") from None
    raise ValueProblem(f"expected a date, got {type(raw).__name__}")


def _encodable(text: str) -> bool:
    """Whether ``text`` can be stored as UTF-8 (no lone surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def text_problem(text: str, *, recorded: bool = False) -> str | None:
    """Why ``text`` cannot be stored as text on every backend, if it cannot: a NUL
    character (PostgreSQL refuses it in text columns; SQLite would store it, so it is
    refused on both, before the database is asked), or a lone surrogate (no UTF-8 form).
    ``recorded``: a value already in the history, where NUL passes (releases before this
    check stored it inside the JSON of fields and payloads)."""
    if not recorded and "\x00" in text:
        return "contains a NUL character (\\x00), which text may not hold"
    if not text.isascii() and not _encodable(text):
        return "not valid Unicode text (it holds a lone surrogate)"
    return None


def _parse_decimal(raw: Any) -> Decimal:
    if isinstance(raw, bool):
        raise ValueProblem("expected a number, got a boolean")
    if isinstance(raw, float) and not math.isfinite(raw):
        raise ValueProblem("expected a finite number")
    if isinstance(raw, str) and not _DECIMAL_TEXT.fullmatch(raw.strip()):
        raise ValueProblem(f"{raw!r} is not a number")
    if isinstance(raw, int | float | Decimal | str):
        try:
            value = Decimal(str(raw).strip())
        except InvalidOperation:
            raise ValueProblem(f"{raw!r} is not a number") from None
        except ValueError:  # an int with more digits than str() converts
            raise ValueProblem("too many digits (at most 100 either side of the decimal "
                               "point)") from None
        if not value.is_finite():
            raise ValueProblem("expected a finite number")
        # '1e999999999' is finite, but its plain (to_json) form would be a billion digits
        if not value.is_zero() and not -_DECIMAL_RANGE <= value.adjusted() <= _DECIMAL_RANGE:
            raise ValueProblem(f"out of range (at most {_DECIMAL_RANGE} digits either side of "
                               "the decimal point)")
        return value
    raise ValueProblem(f"expected a number, got {type(raw).__name__}")


def _plain_text(raw: str) -> str:
    """``raw`` as a ``str`` itself: a subclass (a ``StrEnum`` member, a host's own string
    type) would be kept as given, though what is stored and read back is plain text, and an
    old-style ``(str, Enum)`` member even prints as ``Dept.QUALITY`` in an index column."""
    return raw if type(raw) is str else str.__str__(raw)


def coerce(vtype: ValueType, raw: Any, *, max_length: int | None = None,
           recorded: bool = False) -> Any:
    """Check ``raw`` against ``vtype`` and return the Python value; ``ValueError`` if bad.
    ``recorded``: ``raw`` comes from the history (``text_problem``)."""
    kind = vtype.kind
    if kind in ("string", "text"):
        if not isinstance(raw, str):
            raise ValueProblem(f"expected text, got {type(raw).__name__}")
        limit = max_length or (DEFAULT_STRING_MAX if kind == "string" else DEFAULT_TEXT_MAX)
        if len(raw) > limit:
            raise ValueProblem(f"longer than {limit} characters")
        if kind == "string" and ("\n" in raw or "\r" in raw):
            raise ValueProblem("a string field holds one line")
        problem = text_problem(raw, recorded=recorded)
        if problem is not None:
            raise ValueProblem(problem)
        return _plain_text(raw)
    if kind == "integer":
        if isinstance(raw, bool) or not isinstance(raw, int | str):
            raise ValueProblem(f"expected an integer, got {type(raw).__name__}")
        if isinstance(raw, str) and not _INTEGER_TEXT.fullmatch(raw.strip()):
            raise ValueProblem(f"{raw!r} is not an integer")
        try:
            value = int(raw)
        except ValueError:  # more digits than Python converts
            raise ValueProblem("the integer is too long") from None
        if not -_INTEGER_LIMIT < value < _INTEGER_LIMIT:
            raise ValueProblem(f"out of range (at most {_DECIMAL_RANGE + 1} digits)")
        return value
    if kind == "decimal":
        return _parse_decimal(raw)
    if kind == "date":
        return _parse_date(raw)
    if kind == "datetime":
        return _parse_datetime(raw)
    if kind == "bool":
        if not isinstance(raw, bool):
            raise ValueProblem(f"expected true or false, got {type(raw).__name__}")
        return raw
    if kind == "enum":
        if not isinstance(raw, str) or raw not in vtype.values:
            near = hint(raw, vtype.values) if isinstance(raw, str) else ""
            raise ValueProblem(f"{raw!r} is not one of {', '.join(vtype.values)}{near}")
        return _plain_text(raw)
    if kind in ("enum_list", "string_list"):
        if not isinstance(raw, list | tuple):
            raise ValueProblem(f"expected a list, got {type(raw).__name__}")
        items = [coerce(vtype.element(), item, recorded=recorded) for item in raw]
        if len(set(items)) != len(items):
            raise ValueProblem("a list holds each value once")
        return tuple(items)
    raise ValueProblem(f"unknown type {kind}")  # pragma: no cover - closed set


def check_field(field: FieldDef, raw: Any, *, recorded: bool = False) -> Any:
    """Coerce ``raw`` for ``field`` including its declared bounds; ``recorded``: ``raw``
    comes from the history (``text_problem``)."""
    value = coerce(type_of_field(field), raw, max_length=field.max_length, recorded=recorded)
    if field.type in ("integer", "decimal"):
        if field.min is not None and value < field.min:
            raise ValueProblem(f"below the minimum {field.min}")
        if field.max is not None and value > field.max:
            raise ValueProblem(f"above the maximum {field.max}")
    return value


def to_json(value: Any) -> Any:
    """The canonical JSON form of a field value."""
    if isinstance(value, bool) or value is None or isinstance(value, int | str):
        return value
    if isinstance(value, Decimal):
        # normalize() rounds to its context's precision (28 digits by default): give it
        # room for every digit, so the stored text is the value decided on
        context = Context(prec=max(len(value.as_tuple().digits), 1), Emax=MAX_EMAX,
                          Emin=MIN_EMIN)
        text = format(value.normalize(context), "f")
        return "0" if text in ("-0", "") else text
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, tuple | list):
        return [to_json(v) for v in value]
    raise TypeError(f"no JSON form for {type(value).__name__}")


def from_json(vtype: ValueType, raw: Any) -> Any:
    """Inverse of ``to_json`` for values already checked once. Values whose JSON form is
    their Python value pass on a type check (every fire and replay step decodes every
    field); any other value, or one failing that check, goes through ``coerce``."""
    if raw is None:
        return None
    kind = vtype.kind
    cls = type(raw)
    if cls is str:
        if (kind == "text" or (kind == "enum" and raw in vtype.values) or (
            kind == "string" and "\n" not in raw and "\r" not in raw
        )) and (raw.isascii() or _encodable(raw)):
            return raw
    elif cls is int:
        if kind == "integer" and -_INTEGER_LIMIT < raw < _INTEGER_LIMIT:
            return raw
    elif cls is bool and kind == "bool":
        return raw
    return coerce(vtype, raw, max_length=10**9, recorded=True)
