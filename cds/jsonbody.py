"""Reading a JSON request body within limits: size, nesting depth. Pure code."""

from __future__ import annotations

import json
from typing import Any

from .errors import LimitExceeded, MalformedJSON


def _too_deep(value: Any, limit: int) -> bool:
    """Whether ``value`` nests containers deeper than ``limit`` (only containers are visited)."""
    level = [value] if isinstance(value, dict | list) else []
    depth = 0
    while level:
        depth += 1
        if depth > limit:
            return True
        nxt = []
        for item in level:
            children = item.values() if isinstance(item, dict) else item
            nxt.extend(c for c in children if isinstance(c, dict | list))
        level = nxt
    return False


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
    if _too_deep(value, max_depth):
        raise MalformedJSON(f"JSON nested deeper than {max_depth} levels", field="(body)")
    return value
