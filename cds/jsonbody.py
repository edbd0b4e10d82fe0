"""Reading a JSON request body within limits: size, nesting depth. Pure code."""

from __future__ import annotations

import json
from typing import Any

from .errors import LimitExceeded, MalformedJSON


def _depth(value: Any, limit: int) -> int:
    stack = [(value, 1)]
    deepest = 0
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > limit:
            return deepest
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return deepest


def parse_json(raw: bytes, *, max_bytes: int, max_depth: int) -> Any:
    if len(raw) > max_bytes:
        raise LimitExceeded(f"request body is {len(raw)} bytes, more than the limit of {max_bytes}",
                            field="(body)")
    if not raw.strip():
        raise MalformedJSON("the request body is empty; a JSON object is required", field="(body)")
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
    if _depth(value, max_depth) > max_depth:
        raise MalformedJSON(f"JSON nested deeper than {max_depth} levels", field="(body)")
    return value
