"""What a hook call's prefetch gathering produced, as plain data the decision core reads, and two readers of
FHIR search Bundles. Gathering itself (the client's data or the FHIR server's) is the call layer's:
``cds/call/prefetch.py``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Gathered:
    data: dict[str, Any] = field(default_factory=dict)  # key -> Bundle/resource dict (or None)
    provenance: dict[str, str] = field(default_factory=dict)  # key -> client | fetched | empty | failed



def is_operation_outcome(value: Any) -> bool:
    return isinstance(value, dict) and value.get("resourceType") == "OperationOutcome"


def next_link(bundle: Any) -> str | None:
    """The ``next`` link of a Bundle, if any."""
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        return None
    for link in bundle.get("link") or []:
        if isinstance(link, dict) and link.get("relation") == "next" and isinstance(link.get("url"), str):
            return link["url"]
    return None
