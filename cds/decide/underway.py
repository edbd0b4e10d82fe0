"""What the patient already has ordered, and which suggested orders it makes redundant. Pure code.

One mechanism for every rule that suggests an order: a suggestion is left out when the patient already has
what it would create, of the same ingredient or drug class, as an order under way (a MedicationRequest of
the record whose status is one of ``under_way_statuses`` in valuesets.yaml, or any draft order of the hook
call), and the card says what it left out and why. The suggested resource is classified by the same code as
the record (``cds.fhir.relevance.classify_medication`` for MedicationRequests, the ``orders`` value sets for
ServiceRequests), so the guarantee does not depend on a rule naming what it suggests: no suggestion orders
what is already active (same ingredient or class), in active orders or draft orders.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cds.fhir.relevance import classify_medication


@dataclass(frozen=True)
class Holding:
    """An order under way: its kind (a drug class or an order kind), ingredient, reference and state."""

    kind: str
    ingredient: str | None
    ref: str
    draft: bool
    status: str
    started: str | None = None

    def said(self) -> str:
        what = self.ingredient or self.kind.replace("_", " ")
        if self.draft:
            return f"{what} is already among the orders being placed ({self.ref})"
        since = f" since {self.started}" if self.started else ""
        return f"{what} is already ordered ({self.ref}, {self.status}{since})"


def _codings(concept: Any) -> list[tuple[str, str]]:
    if not isinstance(concept, Mapping):
        return []
    return [(str(c.get("system") or ""), str(c.get("code"))) for c in concept.get("coding") or []
            if isinstance(c, Mapping) and c.get("code")]


def _texts(concept: Any) -> list[str]:
    if not isinstance(concept, Mapping):
        return []
    displays = [c.get("display") for c in concept.get("coding") or [] if isinstance(c, Mapping)]
    return [t for t in [concept.get("text"), *displays] if isinstance(t, str) and t]


def suggested_kinds(resource: Mapping[str, Any], valuesets: Mapping[str, Any]) -> set[str]:
    """The drug classes (MedicationRequest) or order kinds (ServiceRequest) a suggested resource orders."""
    kind = resource.get("resourceType")
    if kind == "MedicationRequest":
        concept = resource.get("medicationCodeableConcept")
        codings, texts = _codings(concept), _texts(concept)
        reference = (resource.get("medicationReference") or {}).get("reference")
        for med in resource.get("contained") or []:
            if isinstance(med, Mapping) and reference == f"#{med.get('id')}":
                codings += _codings(med.get("code"))
                texts += _texts(med.get("code"))
        return {found[0] for found in classify_medication(codings, " | ".join(texts), dict(valuesets))}
    if kind == "ServiceRequest":
        systems = valuesets.get("systems", {})
        codes = set(_codings(resource.get("code")))
        return {name for name, spec in (valuesets.get("orders") or {}).items()
                if any((systems.get(key), code) in codes for key, wanted in spec.items() for code in wanted)}
    return set()


class Underway:
    """The orders under way in one call's facts, by kind."""

    def __init__(self, facts: Iterable[Mapping[str, Any]], valuesets: Mapping[str, Any]):
        self.valuesets = valuesets
        statuses = set(valuesets.get("under_way_statuses") or ())
        self.by_kind: dict[str, list[Holding]] = {}
        for fact in facts:
            if fact.get("t") == "medication" and (fact.get("draft") or fact.get("status") in statuses):
                self._add(Holding(fact["drug_class"], fact.get("ingredient"), str(fact.get("ref")),
                                  bool(fact.get("draft")), str(fact.get("status")), fact.get("started")))
            elif fact.get("t") == "order" and not any(
                    h.ref == fact.get("ref") for h in self.by_kind.get(str(fact.get("kind")), [])):
                self._add(Holding(str(fact["kind"]), None, str(fact.get("ref")), True, "draft"))

    def _add(self, holding: Holding) -> None:
        self.by_kind.setdefault(holding.kind, []).append(holding)

    @property
    def kinds(self) -> frozenset[str]:
        return frozenset(self.by_kind)

    def blocking(self, resource: Mapping[str, Any], declared: str | None = None) -> Holding | None:
        """The order under way that makes ``resource`` redundant (same drug class or order kind), if any;
        ``declared`` is a rule's own ``unless_ordered`` kind, taken as one more kind of the resource."""
        kinds = suggested_kinds(resource, self.valuesets) | ({declared} if declared else set())
        for kind in sorted(kinds):
            if self.by_kind.get(kind):
                return self.by_kind[kind][0]
        return None
