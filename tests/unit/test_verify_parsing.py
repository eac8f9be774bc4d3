"""verify.parse_payload: orjson's speed, the standard parser's result, always."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from complaintflow.storage.hashing import canonical
from complaintflow.verify import parse_payload

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
    assert same(parse_payload(text), json.loads(text))


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
    assert same(parse_payload(text), json.loads(text))


@pytest.mark.parametrize("text", ['{"a":1}x', "", "{", '{"a":"\x01"}', "\ufeff{}"])
def test_invalid_text_raises_as_json_loads_does(text: str) -> None:
    with pytest.raises(ValueError):
        json.loads(text)
    with pytest.raises(ValueError):
        parse_payload(text)


def test_non_text_is_json_loads_business() -> None:
    with pytest.raises(TypeError):
        parse_payload(None)
    assert parse_payload(b'{"a":1}') == {"a": 1}
