"""Draft orders made valid R4 before they are echoed back in a suggestion. Pure code.

EHR simulators send draft orders that are not valid R4 (the CDS Hooks sandbox: ``category`` as one object
instead of a list, ``coding: [{}]``). The service tolerates them on input, since the elements the rules read
are fine; but an ``update`` suggestion sends the order back, and the EHR must never receive invalid FHIR.
``for_echo`` repairs the two known shapes and returns the resource only when the whole of it then validates
as R4, else None (the caller drops that suggestion rather than send it).
"""

from __future__ import annotations

import copy
from typing import Any

from cds.fhir.parse import validates_fully

#: elements that are lists of CodeableConcepts in the order types a suggestion may echo
CONCEPT_LISTS = ("category", "reasonCode", "bodySite", "orderDetail")


def _codeable(concept: Any) -> Any:
    if isinstance(concept, dict) and isinstance(concept.get("coding"), list):
        concept["coding"] = [c for c in concept["coding"] if c not in ({}, None)]
        if not concept["coding"]:
            del concept["coding"]
    return concept


def _walk(value: Any) -> Any:
    if isinstance(value, dict):
        for key, item in list(value.items()):
            value[key] = _walk(item)
        return _codeable(value)
    if isinstance(value, list):
        return [_walk(v) for v in value]
    return value


def for_echo(resource: dict[str, Any]) -> dict[str, Any] | None:
    """A valid-R4 copy of a draft order (known sloppy shapes repaired), or None when it cannot be made one."""
    fixed = copy.deepcopy(resource)
    for name in CONCEPT_LISTS:
        if isinstance(fixed.get(name), dict):
            fixed[name] = [fixed[name]]
    fixed = _walk(fixed)
    for key in [k for k, v in fixed.items() if v in ({}, [])]:
        del fixed[key]
    return fixed if validates_fully(fixed) else None
