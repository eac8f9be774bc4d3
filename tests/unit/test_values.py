"""Field values: what each type accepts, what it refuses, and the canonical JSON form."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from complaintflow.rules.model import FieldDef, Label
from complaintflow.rules.values import (
    DEFAULT_STRING_MAX,
    DEFAULT_TEXT_MAX,
    ValueType,
    check_field,
    coerce,
    from_json,
    to_json,
)
from complaintflow.views import mask_value

SHANGHAI = timezone(timedelta(hours=8))
COLOURS = ValueType("enum", ("red", "green", "blue"))
COLOUR_LIST = ValueType("enum_list", ("red", "green", "blue"))


def field(**kw: Any) -> FieldDef:
    return FieldDef(id="f", label=Label(zh="字段", en="Field"), **kw)


# -- string and text -----------------------------------------------------------------------


def test_string_accepts_one_line() -> None:
    assert coerce(ValueType("string"), "华东机电") == "华东机电"


@pytest.mark.parametrize("raw", [5, 1.5, True, None, ["a"]])
def test_string_refuses_non_text(raw: Any) -> None:
    with pytest.raises(ValueError, match="expected text"):
        coerce(ValueType("string"), raw)


def test_string_refuses_line_breaks_text_keeps_them() -> None:
    with pytest.raises(ValueError, match="one line"):
        coerce(ValueType("string"), "a\nb")
    with pytest.raises(ValueError, match="one line"):
        coerce(ValueType("string"), "a\rb")
    assert coerce(ValueType("text"), "第一行\n第二行") == "第一行\n第二行"


def test_default_lengths() -> None:
    assert coerce(ValueType("string"), "x" * DEFAULT_STRING_MAX)
    with pytest.raises(ValueError, match=f"longer than {DEFAULT_STRING_MAX}"):
        coerce(ValueType("string"), "x" * (DEFAULT_STRING_MAX + 1))
    assert coerce(ValueType("text"), "x" * DEFAULT_TEXT_MAX)
    with pytest.raises(ValueError, match=f"longer than {DEFAULT_TEXT_MAX}"):
        coerce(ValueType("text"), "x" * (DEFAULT_TEXT_MAX + 1))


def test_max_length_of_the_field() -> None:
    phone = field(type="string", max_length=5)
    assert check_field(phone, "12345") == "12345"
    with pytest.raises(ValueError, match="longer than 5"):
        check_field(phone, "123456")


# -- numbers -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"), [(0, 0), (-3, -3), ("42", 42), (" 7 ", 7), ("+8", 8), (10**30, 10**30)]
)
def test_integer_accepts(raw: Any, expected: int) -> None:
    value = coerce(ValueType("integer"), raw)
    assert value == expected
    assert type(value) is int


@pytest.mark.parametrize(
    "raw", [True, False, 1.0, 1.5, Decimal("1"), "1.0", "1e3", "1_000", "٣", "", "abc", None, [1]]
)
def test_integer_refuses(raw: Any) -> None:
    with pytest.raises(ValueError):
        coerce(ValueType("integer"), raw)


def test_integer_refuses_absurdly_long_text() -> None:
    with pytest.raises(ValueError, match="too long"):
        coerce(ValueType("integer"), "9" * 5000)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (0, Decimal(0)),
        (12, Decimal(12)),
        (0.1, Decimal("0.1")),
        ("2000", Decimal(2000)),
        (" 2.50 ", Decimal("2.50")),
        ("-1.5", Decimal("-1.5")),
        (".5", Decimal("0.5")),
        ("1e3", Decimal(1000)),
        (Decimal("3.14"), Decimal("3.14")),
    ],
)
def test_decimal_accepts(raw: Any, expected: Decimal) -> None:
    value = coerce(ValueType("decimal"), raw)
    assert value == expected
    assert isinstance(value, Decimal)


@pytest.mark.parametrize(
    "raw",
    [
        True,
        "abc",
        "",
        "1_000",
        "NaN",
        "Infinity",
        float("nan"),
        float("inf"),
        Decimal("NaN"),
        Decimal("-Infinity"),
        None,
        "1e999999999",
        1e300,
        "1e-200",
        [1],
    ],
)
def test_decimal_refuses(raw: Any) -> None:
    with pytest.raises(ValueError):
        coerce(ValueType("decimal"), raw)


def test_bounds_of_the_field() -> None:
    score = field(type="integer", min=Decimal(0), max=Decimal(100))
    assert check_field(score, 0) == 0
    assert check_field(score, "100") == 100
    with pytest.raises(ValueError, match="below the minimum 0"):
        check_field(score, -1)
    with pytest.raises(ValueError, match="above the maximum 100"):
        check_field(score, 101)
    amount = field(type="decimal", min=Decimal("0.01"))
    assert check_field(amount, "0.01") == Decimal("0.01")
    with pytest.raises(ValueError, match="below the minimum"):
        check_field(amount, "0.001")


# -- dates and times -----------------------------------------------------------------------


def test_date_accepts_iso_text_and_dates() -> None:
    assert coerce(ValueType("date"), "2026-02-11") == date(2026, 2, 11)
    assert coerce(ValueType("date"), date(2026, 2, 11)) == date(2026, 2, 11)


@pytest.mark.parametrize(
    "raw",
    ["2026-02-30", "11/02/2026", "yesterday", 20260211, datetime(2026, 2, 11, tzinfo=UTC), None],
)
def test_date_refuses(raw: Any) -> None:
    with pytest.raises(ValueError):
        coerce(ValueType("date"), raw)


def test_datetime_is_converted_to_utc() -> None:
    value = coerce(ValueType("datetime"), "2026-02-11T09:30:00+08:00")
    assert value == datetime(2026, 2, 11, 1, 30, tzinfo=UTC)
    assert value.utcoffset() == timedelta(0)
    assert coerce(ValueType("datetime"), "2026-02-11T01:30:00Z") == value
    aware = datetime(2026, 2, 11, 9, 30, tzinfo=SHANGHAI)
    assert coerce(ValueType("datetime"), aware) == value
    assert coerce(ValueType("datetime"), aware).tzinfo == UTC


@pytest.mark.parametrize("raw", ["2026-02-11T09:30:00", datetime(2026, 2, 11, 9, 30)])
def test_naive_datetime_is_refused(raw: Any) -> None:
    with pytest.raises(ValueError, match="time zone"):
        coerce(ValueType("datetime"), raw)


@pytest.mark.parametrize("raw", ["not a time", 1700000000, date(2026, 2, 11), None])
def test_datetime_refuses(raw: Any) -> None:
    with pytest.raises(ValueError):
        coerce(ValueType("datetime"), raw)


# -- enums and booleans --------------------------------------------------------------------


def test_enum_accepts_declared_values_only() -> None:
    assert coerce(COLOURS, "red") == "red"
    for raw in ("Red", "purple", "", 1, None, True):
        with pytest.raises(ValueError, match="is not one of red, green, blue"):
            coerce(COLOURS, raw)


def test_an_unknown_enum_value_is_given_the_closest_declared_one() -> None:
    with pytest.raises(ValueError) as info:
        coerce(COLOURS, "gren")
    assert str(info.value) == "'gren' is not one of red, green, blue; did you mean 'green'?"
    with pytest.raises(ValueError) as info:
        coerce(COLOUR_LIST, ["red", "bleu"])
    assert str(info.value).endswith("; did you mean 'blue'?")
    for raw in ("zzzz", 7):
        with pytest.raises(ValueError) as info:
            coerce(COLOURS, raw)
        assert "did you mean" not in str(info.value)


def test_enum_list_keeps_the_given_order() -> None:
    assert coerce(COLOUR_LIST, ["blue", "red"]) == ("blue", "red")
    assert coerce(COLOUR_LIST, ("green",)) == ("green",)
    assert coerce(COLOUR_LIST, []) == ()


def test_enum_list_refuses_duplicates_unknown_values_and_non_lists() -> None:
    with pytest.raises(ValueError, match="each value once"):
        coerce(COLOUR_LIST, ["red", "red"])
    with pytest.raises(ValueError, match="is not one of"):
        coerce(COLOUR_LIST, ["red", "pink"])
    for raw in ("red", {"red": 1}, None, 3):
        with pytest.raises(ValueError, match="expected a list"):
            coerce(COLOUR_LIST, raw)


def test_bool_accepts_true_and_false_only() -> None:
    assert coerce(ValueType("bool"), True) is True
    assert coerce(ValueType("bool"), False) is False
    for raw in (0, 1, "true", "yes", "on", None):
        with pytest.raises(ValueError, match="expected true or false"):
            coerce(ValueType("bool"), raw)


# -- the canonical JSON form ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (Decimal("2000"), "2000"),
        (Decimal("2.50"), "2.5"),
        (Decimal("1E+3"), "1000"),
        (Decimal("0.000"), "0"),
        (Decimal("-0"), "0"),
        (Decimal("-1.10"), "-1.1"),
        (date(2026, 2, 11), "2026-02-11"),
        (datetime(2026, 2, 11, 1, 30, tzinfo=UTC), "2026-02-11T01:30:00Z"),
        (datetime(2026, 2, 11, 9, 30, tzinfo=SHANGHAI), "2026-02-11T01:30:00Z"),
        (("blue", "red"), ["blue", "red"]),
        (True, True),
        (7, 7),
        ("文本", "文本"),
        (None, None),
    ],
)
def test_to_json(value: Any, expected: Any) -> None:
    assert to_json(value) == expected


def test_to_json_refuses_what_has_no_canonical_form() -> None:
    with pytest.raises(TypeError):
        to_json(1.5)
    with pytest.raises(TypeError):
        to_json({"a": 1})


@pytest.mark.parametrize(
    ("vtype", "raw"),
    [
        (ValueType("string"), "李娜"),
        (ValueType("text"), "多行\n文本"),
        (ValueType("integer"), 85),
        (ValueType("decimal"), "12.30"),
        (ValueType("date"), "2026-02-11"),
        (ValueType("datetime"), "2026-02-11T09:30:00.250+08:00"),
        (COLOURS, "green"),
        (COLOUR_LIST, ["green", "red"]),
        (ValueType("bool"), False),
    ],
)
def test_json_round_trip(vtype: ValueType, raw: Any) -> None:
    value = coerce(vtype, raw)
    stored = to_json(value)
    assert from_json(vtype, stored) == value
    assert to_json(from_json(vtype, stored)) == stored


_STORED = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    | st.sampled_from(["red", "green", "x", "a\nb", "2026-02-11", "12.30",
                       "2026-02-11T09:30:00Z", "1e5", "a\udc80b", "客户\ud800",
                       10**101 - 1, 10**101, -(10**101)]) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3), max_leaves=6)
_KINDS = st.sampled_from([ValueType(kind) for kind in (
    "string", "text", "integer", "decimal", "date", "datetime", "bool", "string_list")]
    + [COLOURS, COLOUR_LIST])


@given(_KINDS, _STORED)
def test_from_json_takes_and_refuses_exactly_what_coerce_does(vtype: ValueType,
                                                              raw: Any) -> None:
    """The quick path for values whose JSON form is their Python value changes nothing:
    the same value (and type) back, or the same refusal."""
    try:
        expected = coerce(vtype, raw, max_length=10**9) if raw is not None else None
    except ValueError as exc:
        with pytest.raises(ValueError) as refused:
            from_json(vtype, raw)
        assert str(refused.value) == str(exc)
    else:
        got = from_json(vtype, raw)
        assert got == expected and type(got) is type(expected)


def test_from_json_of_null_is_none() -> None:
    assert from_json(ValueType("integer"), None) is None


def test_value_type_helpers() -> None:
    assert ValueType("integer").ordered and ValueType("datetime").ordered
    assert not ValueType("enum", ("a",)).ordered
    assert COLOUR_LIST.is_list and COLOUR_LIST.element() == COLOURS
    assert ValueType("string_list").element() == ValueType("string")
    assert ValueType("integer").comparable_with(ValueType("decimal"))
    assert ValueType("enum", ("a",)).comparable_with(ValueType("string"))
    assert not ValueType("decimal").comparable_with(ValueType("string"))
    assert not ValueType("date").comparable_with(ValueType("datetime"))


def test_raise_level_only_ever_raises() -> None:
    from complaintflow.rules.ruleset import raise_level

    levels = ("general", "major")
    assert raise_level(levels, None, "general") == "general"
    assert raise_level(levels, "general", "major") == "major"
    assert raise_level(levels, "major", "general") == "major"
    assert raise_level(levels, "forged", "general") == "general"  # unknown counts lowest
    assert raise_level(levels, "major", "forged") == "major"  # an unknown level: no change


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("13812345678", "138****5678"),
        ("+86 139 1234 5678", "+86****5678"),
        # a landline without its area code showed every digit ('623****4567')
        ("6234567", "6****7"),
        ("62345678", "62****78"),
        ("(021)62345678", "(02****5678"),
        ("张伟", "张***"),
        ("zhang.wei@example.cn", "z***@example.cn"),
        ("", "***"),
    ],
)
def test_masked_personal_data_hides_most_of_a_number(value: str, shown: str) -> None:
    assert mask_value(value) == shown
    digits = [c for c in value if c.isdigit()]
    if len(digits) >= 7:
        assert sum(c.isdigit() for c in shown) <= len(digits) - 4
