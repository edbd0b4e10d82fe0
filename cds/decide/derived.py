"""What a call's record yields before any card is written, and a per-process cache of it. Pure code.

    Case --Evaluator.derive--> Derived (facts, rule firings, scope) --Evaluator.render--> Evaluation

A warm patient's calls (order-select firing again and again before order-sign) send the same resources;
their facts and firings are the same, so they are kept by a digest of everything they are made from:
the rule pack's content hash (which covers the site configuration), the service, the evaluation date
(the only part of the evaluation time facts read), the patient id, the selections, every prefetch key's
data and provenance, and the draft orders. Any change in any of these is another key: a miss, never a
stale hit. Cards are rendered afresh on every call (their uuids and links are the call's own).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cds.fhir.cache import LRU, PER_MEMBER_PLAIN, json_size
from cds.fhir.digest import digest, json_bytes
from cds.rules.engine import Firing


@dataclass(frozen=True)
class Derived:
    """Facts (gaps included), the rules that fired over them, and whether the patient is out of scope.
    Shared between the calls that hit the cache: read, never changed."""

    facts: list[dict[str, Any]]
    firings: list[Firing]
    out_of_scope: dict[str, Any] | None = None
    ignored: dict[str, int] = field(default_factory=dict)
    series: list[dict[str, Any]] = field(default_factory=list)


def derived_key(*, pack_hash: str, service_id: str, now: dt.datetime, patient_id: str | None,
                selections: frozenset[str], data: Mapping[str, Any], provenance: Mapping[str, str],
                draft_orders: Any) -> bytes | None:
    """The cache key of one call's ``Derived``, or None when its content has no exact digest."""
    return digest(pack_hash, service_id, now.date().isoformat(), patient_id, sorted(selections),
                  [[key, provenance.get(key), value] for key, value in data.items()],
                  sorted(provenance.items()), draft_orders)


def derived_size(derived: Derived) -> int:
    """The approximate memory of a ``Derived`` (``cds.fhir.cache.json_size`` of its facts, series, scope and
    firings), for the cache's bound in bytes."""
    text = json_bytes([derived.facts, derived.series, derived.out_of_scope, derived.ignored,
                       [[f.rule_id, f.matched, f.derived] for f in derived.firings]])
    if text is None:
        text = repr(derived).encode()
    return json_size(text, PER_MEMBER_PLAIN)


class DerivedCache(LRU[bytes, Derived]):
    """``Derived`` by ``derived_key``: bounded in entries and in bytes (least recently used out first), per
    process, thread-safe."""

    def __init__(self, max_entries: int, max_bytes: int = 64 << 20):
        super().__init__(max_entries, max_bytes)
