"""A digest of JSON content, for caches keyed by what a resource says. Pure code.

Two values get the same digest only when they are the same JSON: the same keys in the same order, the
same strings, and numbers of the same type and value (``1`` and ``1.0`` differ). orjson writes the text
fast, but writes ``NaN`` and infinities as ``null`` and refuses lone surrogates and integers beyond 64
bits; a text holding ``null`` therefore goes through the standard library as well, which keeps them apart
(``NaN`` has no digest: a value holding it is never cached). Either text reads back as exactly the value,
so different values never share a text.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import orjson

from cds.fhir.cache import json_size


def json_bytes(value: Any) -> bytes | None:
    """The exact JSON text of ``value`` as bytes, or None when it has no JSON text (``NaN``, infinities,
    a value that is not JSON)."""
    try:
        text = orjson.dumps(value)
    except (orjson.JSONEncodeError, TypeError):
        text = None
    if text is not None and b"null" not in text:
        return text
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False).encode("utf-8", "surrogatepass")
    except (TypeError, ValueError, RecursionError):
        return None


def digest(*values: Any) -> bytes | None:
    """A 16-byte BLAKE2b digest of the JSON texts of ``values`` in order, or None (see ``json_bytes``)."""
    found = digest_sized(*values)
    return found[0] if found is not None else None


def digest_sized(*values: Any) -> tuple[bytes, int] | None:
    """``digest(*values)`` and the approximate memory of what is made from them (``cds.fhir.cache.json_size``
    of their JSON texts, for a cache's bound in bytes), from one writing of each text; or None."""
    hasher = hashlib.blake2b(digest_size=16)
    size = 0
    for value in values:
        text = json_bytes(value)
        if text is None:
            return None
        hasher.update(len(text).to_bytes(8, "big"))
        hasher.update(text)
        size += json_size(text)
    return hasher.digest(), size
