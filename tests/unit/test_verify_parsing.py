"""hashing.parse_canonical and canonical: orjson's speed, the standard library's result,
always."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from complaintflow.storage.hashing import canonical, canonical_bytes, parse_canonical

scalars = (st.none() | st.booleans() | st.text() | st.floats(allow_nan=False, allow_infinity=False)
           | st.integers() | st.integers(min_value=-(2**80), max_value=2**80))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=20)


def same(a: Any, b: Any) -> bool:
    """Equal, with the same types throughout (``1 == 1.0`` is not enough)."""
    return repr(a) == repr(b) and type(a) is type(b)


@settings(max_examples=500, deadline=None)
@given(values)
def test_canonical_text_parses_as_json_loads(value: Any) -> None:
    text = canonical(value)
    assert same(parse_canonical(text), json.loads(text))


@pytest.mark.parametrize("text", [
    '{"a":123456789012345678901234567890}',  # orjson would give a float
    '{"a":-9223372036854775809}',
    '{"a":18446744073709551616}',
    '[18446744073709551615, -9223372036854775808]',
    '{"a":NaN,"b":Infinity,"c":-Infinity}',  # orjson refuses these
    '{"a":1e400}',
    '{"a":"\\ud800"}',  # a lone surrogate, escaped
    '{"a":1,"a":2}',  # duplicate keys: the last wins
    '{"a": 1, "b" : [1.5, 2e3, -0]}',  # not canonical
    '{"a":1E5,"b":-0.0,"c":0.1}',
    '{"b":1,"a":2}',  # unsorted
    '"just a string"',
    '[]',
])
def test_what_orjson_parses_differently_goes_to_json_loads(text: str) -> None:
    assert same(parse_canonical(text), json.loads(text))


@pytest.mark.parametrize("text", ['{"a":1}x', "", "{", '{"a":"\x01"}', "\ufeff{}"])
def test_invalid_text_raises_as_json_loads_does(text: str) -> None:
    with pytest.raises(ValueError):
        json.loads(text)
    with pytest.raises(ValueError):
        parse_canonical(text)


def test_non_text_is_json_loads_business() -> None:
    with pytest.raises(TypeError):
        parse_canonical(None)
    assert parse_canonical(b'{"a":1}') == {"a": 1}


def reference(value: Any) -> str:
    """What ``canonical`` has always written: the standard library's serialiser."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)


# keys and text anywhere in Unicode (lone surrogates included), integers across and beyond
# the 64-bit range orjson handles, floats and subclasses that must take the slow path
texts = st.text(alphabet=st.characters(exclude_categories=()), max_size=12)
plain_scalars = (st.none() | st.booleans() | texts | st.integers()
                 | st.integers(min_value=-(2**65), max_value=2**65))
plain = st.recursive(plain_scalars, lambda inner: st.lists(inner, max_size=4)
                     | st.tuples(inner, inner)
                     | st.dictionaries(texts, inner, max_size=5), max_leaves=25)


@settings(max_examples=1000, deadline=None)
@given(plain)
def test_canonical_writes_what_json_dumps_writes(value: Any) -> None:
    assert canonical(value) == reference(value)
    try:
        expected = reference(value).encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate has no UTF-8 form: refused as before
        with pytest.raises(UnicodeEncodeError):
            canonical_bytes(value)
    else:
        assert canonical_bytes(value) == expected


@settings(max_examples=300, deadline=None)
@given(values)
def test_canonical_with_floats_and_other_keys_is_still_json_dumps(value: Any) -> None:
    assert canonical(value) == reference(value)


class Flag(int):
    pass


class Name(str):
    pass


@pytest.mark.parametrize("value", [
    {"a": 1.0, "b": [1e16, 1e-5, 0.1]},  # orjson writes 1e16, json.dumps 1e+16
    {1: "int key", 2: "b"},  # json.dumps turns the keys into text; orjson refuses
    {"big": 2**64, "small": -(2**63) - 1},  # beyond orjson's integers
    {"s": "\ud800"},  # a lone surrogate
    {"flag": Flag(3), "name": Name("x")},  # subclasses
    {"é": 1, "e": 2, "中": 3, "\U0001f600": 4, "ｚ": 5},  # sorted by code point
    ["\x00\x1f\x7f\u2028\u2029\ufeff\"\\/"],  # escapes
])
def test_canonical_edge_cases_are_json_dumps(value: Any) -> None:
    assert canonical(value) == reference(value)


@pytest.mark.parametrize("value", [float("nan"), {"a": float("inf")}, [float("-inf")]])
def test_canonical_refuses_nan_and_infinity(value: Any) -> None:
    with pytest.raises(ValueError):
        canonical(value)
