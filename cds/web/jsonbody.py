"""Reading a JSON request body within limits: size, nesting depth. Pure code.

The body is parsed by orjson when it can give exactly what the standard library gives, else by ``json``:
orjson refuses what ``json`` accepts or reports in its own words (``NaN``, ``1e999``, a lone surrogate,
UTF-16, malformed text), and reads an integer beyond 64 bits as a float, so a body with a run of 19
or more digits outside its strings, or one orjson refuses, goes to ``json.loads``, whose values and error
messages are the service's. Numbers are read the same either way: integers as ``int``, decimals as the
nearest ``float``.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

from cds.errors import LimitExceeded, MalformedJSON

_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_SQUARE = bytes.maketrans(b"{}", b"[]")
#: digits to "0", everything else to " ": a run of 19 zeros is an integer orjson would read as a float
#: (beyond 64 bits), or a long decimal, which then merely takes the standard library's path
_DIGITS = bytes(ord("0") if chr(b).isdigit() and b < 128 else ord(" ") for b in range(256))
_LONG_RUN = b"0" * 19


def _outside_strings(raw: bytes) -> bytes:
    """JSON text with its strings removed, in C-speed passes: linear in the text, whatever it holds.

    In JSON a backslash stands only inside a string, where it escapes the one character after it. Removing
    the escaped backslashes (left to right, as a reader pairs them) and then the escaped quotes leaves only
    the quotes that open and close strings, so the parts between every second quote are what lies outside
    the strings. Text that is not JSON gets some answer, and the parser then refuses it in its own words."""
    if b"\\" in raw:
        raw = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    return b"".join(raw.split(b'"')[::2])


def _too_deep(raw: bytes, limit: int, outside: bytes | None = None) -> bool:
    """Whether JSON text nests containers deeper than ``limit``, found before parsing it: strings removed,
    only brackets kept, then the innermost pairs peeled off one level at a time (C-speed passes)."""
    text = _outside_strings(raw) if outside is None else outside
    brackets = text.translate(_SQUARE, _NOT_BRACKETS)
    depth = 0
    while b"[]" in brackets:
        depth += 1
        if depth > limit:
            return True
        brackets = brackets.replace(b"[]", b"")
    return False


def loads(raw: bytes, outside: bytes | None = None) -> Any:
    """``json.loads(raw)``, faster: the same value, or the same exception (``outside``: ``raw`` without
    its strings, when the caller has it)."""
    text = _outside_strings(raw) if outside is None else outside
    if _LONG_RUN not in text.translate(_DIGITS):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass  # json.loads below accepts it, or says why not in the service's own words
    return json.loads(raw)


def dumps(value: Any) -> bytes:
    """A response body: the JSON that Flask's ``jsonify`` writes (keys sorted, compact), by orjson where it
    can (non-ASCII characters as UTF-8 rather than ``\\u`` escapes: the same JSON), else by ``json``."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except (orjson.JSONEncodeError, TypeError):  # an integer beyond 64 bits, a non-string key
        return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def parse_json(raw: bytes, *, max_bytes: int, max_depth: int) -> Any:
    if len(raw) > max_bytes:
        raise LimitExceeded(f"request body is {len(raw)} bytes, more than the limit of {max_bytes}",
                            field="(body)")
    if not raw.strip():
        raise MalformedJSON("the request body is empty; a JSON object is required", field="(body)")
    outside = _outside_strings(raw)
    if _too_deep(raw, max_depth, outside):
        raise MalformedJSON(f"JSON nested deeper than {max_depth} levels", field="(body)")
    try:
        value = loads(raw, outside)
    except UnicodeDecodeError as exc:
        raise MalformedJSON("the request body is not UTF-8 text", field="(body)") from exc
    except json.JSONDecodeError as exc:
        raise MalformedJSON(f"malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}",
                            field="(body)") from exc
    except RecursionError as exc:
        raise MalformedJSON(f"JSON nested deeper than {max_depth} levels", field="(body)") from exc
    except ValueError as exc:  # e.g. an integer longer than Python's digit limit
        raise MalformedJSON(f"malformed JSON: {exc}", field="(body)") from exc
    return value
