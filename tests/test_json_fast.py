"""orjson where it gives exactly what the standard library gives: the body reader (cds/web/jsonbody.py) and
content digests (cds/fhir/digest.py)."""

from __future__ import annotations

import json
import math
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cds.errors import MalformedJSON
from cds.fhir.digest import digest, json_bytes
from cds.web.jsonbody import loads, parse_json

SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**30), 10**30), st.floats(allow_nan=True, allow_infinity=True),
    st.text(), st.sampled_from(["null", "NaN", "\ud800", "9" * 25]),
)
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=20)


def _outcome(func, raw: bytes):
    try:
        return "value", repr(func(raw))
    except Exception as exc:  # noqa: BLE001 - the comparison is of the exception itself
        return type(exc).__name__, str(exc)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=VALUES, cut=st.integers(0, 60), junk=st.sampled_from([b"", b",", b"\xff", b"\x01", b"]", b" 1"]))
def test_loads_gives_what_json_loads_gives_value_or_error(value, cut, junk):
    text = json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")
    for raw in (text, json.dumps(value).encode(), text[:cut] + junk + text[cut:]):
        assert _outcome(loads, raw) == _outcome(json.loads, raw)


@pytest.mark.parametrize("raw", [
    b"123456789012345678901234567890",  # orjson would read a float; json an exact int
    b'{"value": -12345678901234567890.5}', b"1e999", b"[NaN]", b"-Infinity", b'"\\ud800"',
    b"\xef\xbb\xbf{}", b'"\xff"', b"0.1", b"-0", b"-0.0", b"1.10", b"2.2250738585072011e-308",
])
def test_loads_edge_cases(raw):
    assert _outcome(loads, raw) == _outcome(json.loads, raw)


def test_integers_keep_every_digit_and_decimals_stay_numbers():
    body = b'{"a": 123456789012345678901234567890, "b": 12.30, "c": "12.30"}'
    value = parse_json(body, max_bytes=1000, max_depth=10)
    assert value["a"] == 123456789012345678901234567890 and isinstance(value["a"], int)
    assert value["b"] == 12.3 and isinstance(value["b"], float) and value["c"] == "12.30"


def test_body_errors_are_the_services_own_words():
    try:  # the words of this Python's json module (3.13 names a trailing comma, 3.11 expects a value)
        json.loads("[1,]")
    except json.JSONDecodeError as exc:
        words = f"line {exc.lineno} column {exc.colno}: {exc.msg}"
    with pytest.raises(MalformedJSON, match=re.escape(words)):
        parse_json(b"[1,]", max_bytes=1000, max_depth=10)
    with pytest.raises(MalformedJSON, match="not UTF-8"):
        parse_json(b'"\xff"', max_bytes=1000, max_depth=10)


@settings(max_examples=300, deadline=None)
@given(a=VALUES, b=VALUES)
def test_different_values_never_share_a_digest(a, b):
    da, db = digest(a), digest(b)
    if da is not None and db is not None and da == db:
        assert json_bytes(a) == json_bytes(b)
        assert repr(json.loads(json_bytes(a).decode("utf-8", "surrogatepass"))) == \
            repr(json.loads(json_bytes(b).decode("utf-8", "surrogatepass")))


@pytest.mark.parametrize("a, b", [
    (None, float("nan")), ([None], [math.inf]), ({"v": None}, {"v": -math.inf}), (1, 1.0), (1, True),
    (0.0, -0.0), ("null", None), (10**20, 1e20), ("\ud800", "\ufffd"), ([1, 2], [[1], 2]),
])
def test_values_that_a_fast_writer_could_confuse_are_kept_apart(a, b):
    assert digest(a) != digest(b)


def test_non_finite_numbers_have_no_digest_and_the_rest_are_stable():
    assert digest({"value": float("nan")}) is None and digest([math.inf]) is None
    assert digest({"a": [1, "x", None]}) == digest({"a": [1, "x", None]})
    assert digest("a", "b") != digest("ab") != digest("a", "b", "")


#: the string pattern of JSON (an escape is a backslash and any one character): the reference the one-pass
#: removal is held to; it backtracks on unclosed strings, so the service does not run it
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
QUOTES_AND_SLASHES = st.text(alphabet=st.sampled_from(['"', "\\", "[", "]", "{", "}", "a", " ", "é", "\n"]),
                             max_size=12)


@settings(max_examples=1000, deadline=None)
@given(value=st.recursive(st.one_of(SCALARS, QUOTES_AND_SLASHES), lambda inner: st.lists(inner, max_size=4)
                          | st.dictionaries(QUOTES_AND_SLASHES, inner, max_size=4), max_leaves=12),
       ascii_only=st.booleans())
def test_strings_are_removed_as_the_string_pattern_removes_them(value, ascii_only):
    from cds.web.jsonbody import _outside_strings, _too_deep

    raw = json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    assert _outside_strings(raw) == _STRING.sub(b"", raw)
    for limit in (0, 1, 3):
        assert _too_deep(raw, limit) == _too_deep(raw, limit, _STRING.sub(b"", raw))


@pytest.mark.parametrize("raw, depth", [
    (b'{"a": "[[[["}', 1), (b'{"a\\"[[": 1}', 1), (b'["\\\\", [[1]]]', 3), (b'[[["]"]]]', 3),
    (b'[{"x": "}}}"}, [[]]]', 3),
])
def test_depth_ignores_brackets_in_strings(raw, depth):
    from cds.web.jsonbody import _too_deep

    json.loads(raw)  # each is JSON, of that depth
    assert not _too_deep(raw, depth) and _too_deep(raw, depth - 1)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=st.recursive(
    st.one_of(st.none(), st.integers(-(10**25), 10**25), st.floats(), st.text(alphabet=st.characters()),
              st.sampled_from(["\x00", "a\x00b", "\\u0000", "\ud800", "x\udfffy", "\ud83d\ude00", "é"])),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.one_of(st.text(max_size=4), st.sampled_from(["\x00", "\ud800"])), inner, max_size=3),
    max_leaves=12))
def test_the_one_pass_storable_check_agrees_with_the_walk(value):
    from cds.errors import EnvelopeError
    from cds.hooks import envelope

    walked = envelope._unstorable(value)
    try:
        envelope.check_storable(value)
        refused = None
    except EnvelopeError as exc:
        refused = exc.message
    if walked is None:
        assert refused is None
    else:
        assert refused is not None and walked[1] in refused
