"""Reading a JSON request body within limits: size, nesting depth. Pure code.

The body is parsed by orjson when it can give exactly what the standard library gives, else by ``json``:
orjson refuses what ``json`` accepts or reports in its own words (``NaN``, ``1e999``, a lone surrogate,
UTF-16, malformed text), and reads an integer beyond 64 bits as a float, so a body with a run of 19 or
more digits, or one orjson refuses, goes to ``json.loads``, whose values and error messages are the
service's. Numbers are read the same either way: integers as ``int``, decimals as the nearest ``float``.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

from cds.errors import LimitExceeded, MalformedJSON

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_SQUARE = bytes.maketrans(b"{}", b"[]")
#: an integer orjson would read as a float (beyond 64 bits); also matches long digit runs in strings,
#: which then merely take the standard library's path
_LONG_DIGITS = re.compile(rb"\d{19}")


def _too_deep(raw: bytes, limit: int) -> bool:
    """Whether JSON text nests containers deeper than ``limit``, found before parsing it: strings removed,
    only brackets kept, then the innermost pairs peeled off one level at a time (C-speed passes)."""
    brackets = _STRING.sub(b"", raw).translate(_SQUARE, _NOT_BRACKETS)
    depth = 0
    while b"[]" in brackets:
        depth += 1
        if depth > limit:
            return True
        brackets = brackets.replace(b"[]", b"")
    return False


def loads(raw: bytes) -> Any:
    """``json.loads(raw)``, faster: the same value, or the same exception."""
    if _LONG_DIGITS.search(raw) is None:
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass  # json.loads below accepts it, or says why not in the service's own words
    return json.loads(raw)


def parse_json(raw: bytes, *, max_bytes: int, max_depth: int) -> Any:
    if len(raw) > max_bytes:
        raise LimitExceeded(f"request body is {len(raw)} bytes, more than the limit of {max_bytes}",
                            field="(body)")
    if not raw.strip():
        raise MalformedJSON("the request body is empty; a JSON object is required", field="(body)")
    if _too_deep(raw, max_depth):
        raise MalformedJSON(f"JSON nested deeper than {max_depth} levels", field="(body)")
    try:
        value = loads(raw)
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
