"""Reading a JSON request body within limits: size, nesting depth. Pure code."""

from __future__ import annotations

import json
import re
from typing import Any

from cds.errors import LimitExceeded, MalformedJSON

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_SQUARE = bytes.maketrans(b"{}", b"[]")


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


def parse_json(raw: bytes, *, max_bytes: int, max_depth: int) -> Any:
    if len(raw) > max_bytes:
        raise LimitExceeded(f"request body is {len(raw)} bytes, more than the limit of {max_bytes}",
                            field="(body)")
    if not raw.strip():
        raise MalformedJSON("the request body is empty; a JSON object is required", field="(body)")
    if _too_deep(raw, max_depth):
        raise MalformedJSON(f"JSON nested deeper than {max_depth} levels", field="(body)")
    try:
        value = json.loads(raw)
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
