"""The hash chain over audit records. Pure code.

Each record carries ``prev_hash`` (the hash of the record before it; 64 zeros for the first) and
``hash = sha256(prev_hash + canonical JSON of the record's content)``. Editing a record changes its hash;
deleting or reordering records breaks the next record's ``prev_hash`` or the sequence numbers.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

GENESIS = "0" * 64
_SURROGATE = re.compile("[\ud800-\udfff]")


def _dumps(content: Any) -> str:
    return json.dumps(
        content, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=str
    )


def _escape_surrogate(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def canonical(content: Any) -> str:
    """The one JSON text a record's content hashes as: sorted keys, no spaces, UTF-8, no NaN.

    A lone surrogate (``"\\ud800"``: valid in a Python string and in JSON escapes, not in UTF-8) is
    written as its ``\\uXXXX`` escape, so the text always encodes and always stores; the text is the
    fixed point (decoding and writing it again gives the same text), so ``verify`` can recompute it.
    """
    text = _dumps(content)
    if _SURROGATE.search(text) is None:
        return text
    # Decoding joins escaped surrogate pairs into one character: write the decoded value once more.
    return _SURROGATE.sub(_escape_surrogate, _dumps(json.loads(_SURROGATE.sub(_escape_surrogate, text))))


def link_hash(prev_hash: str, content_json: str) -> str:
    """sha256(prev_hash + "\\n" + content); content as UTF-8 (a surrogate left in it still encodes)."""
    data = prev_hash.encode("ascii") + b"\n" + content_json.encode("utf-8", "surrogatepass")
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Link:
    seq: int
    id: str
    content: str  # canonical JSON as stored
    prev_hash: str
    hash: str


@dataclass(frozen=True)
class Broken:
    seq: int
    id: str
    reason: str


def verify(
    links: Iterable[Link], check: Callable[[Link], str | None] | None = None
) -> tuple[int, Broken | None]:
    """Walk the chain in ``seq`` order; return (records checked, the first broken link or None).

    ``check(link)`` may add a test of its own (e.g. that indexed columns agree with the content).
    """
    expected_prev, expected_seq, count = GENESIS, 1, 0
    for link in links:
        count += 1
        if link.seq != expected_seq:
            what = "a record is missing before it" if link.seq > expected_seq else "sequence out of order"
            return count, Broken(link.seq, link.id, f"expected seq {expected_seq}: {what}")
        if link.prev_hash != expected_prev:
            return count, Broken(
                link.seq,
                link.id,
                "prev_hash does not match the previous record's hash "
                "(a record before it was edited, deleted or reordered)",
            )
        try:
            recanonical = canonical(json.loads(link.content))
        except ValueError:
            return count, Broken(link.seq, link.id, "content is not valid JSON")
        if recanonical != link.content or link_hash(link.prev_hash, link.content) != link.hash:
            return count, Broken(link.seq, link.id, "content does not match its hash (the record was edited)")
        try:
            if json.loads(link.content).get("id") != link.id:
                return count, Broken(link.seq, link.id, "record id does not match its content")
        except AttributeError:
            return count, Broken(link.seq, link.id, "content is not a JSON object")
        problem = check(link) if check else None
        if problem:
            return count, Broken(link.seq, link.id, problem)
        expected_prev, expected_seq = link.hash, expected_seq + 1
    return count, None
