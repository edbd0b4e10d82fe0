"""Which raw resources the rules can use, decided on the JSON before any validation. Pure code.

Validating a FHIR resource is the costliest step of a call, and the EHR sends much the rules never read
(other labs, other drugs, diet orders). A resource is validated only when this filter says a rule could
use it: a Patient or Medication; an Observation with a LOINC code of a lab analyte or a DXA site; a
MedicationRequest whose codes or text match a medication value set (or that points at a Medication); a
ServiceRequest whose code is an order kind.

Names are matched as whole words, case-insensitive: an ingredient's own name and its ``names`` in
valuesets.yaml (INN and USAN spellings such as "alendronic acid" / "alendronate", and brand names), so
"Alendronic acid 10 MG Oral Tablet" is alendronate and "methyltestosterone" is not testosterone.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from functools import lru_cache
from typing import Any

from cds.errors import BudgetExceeded


def ingredient_names(ingredient: str, spec: Mapping[str, Any]) -> tuple[str, ...]:
    """An ingredient's names from its value-set entry, lower case, longest first."""
    names = {ingredient.lower(), *(str(n).lower() for n in (spec.get("names") or []))}
    return tuple(sorted(names, key=lambda n: (-len(n), n)))


@lru_cache(maxsize=256)
def _pattern(names: tuple[str, ...]) -> re.Pattern[str]:
    words = "|".join(re.escape(n).replace(r"\ ", r"[\s-]+") for n in names)
    return re.compile(rf"(?<![a-z])({words})(?![a-z])")


def name_in_text(text: str, names: Iterable[str]) -> str | None:
    """The first of ``names`` found in ``text`` as a whole word (any case), or None."""
    found = _pattern(tuple(names)).search(text.lower()) if text else None
    return found.group(1) if found else None


def classify_medication(codings: list[tuple[str, str]], text: str, valuesets: dict[str, Any],
                        sex: str | None = None) -> Iterable[tuple[str, str, str, str]]:
    """Per drug class, the first ingredient whose RxNorm or ATC code is among ``codings`` (``(system,
    code)``), else the first whose name (INN, USAN or brand, see valuesets.yaml) is in ``text`` (``how``
    is then "text:<name>"). Yields ``(drug_class, ingredient, how, code)``. The record's orders and the
    resources a card suggests are classified by this one function (``cds.decide.facts``,
    ``cds.decide.underway``). Given the patient's ``sex``, an ingredient whose ``only_for_sex`` leaves it
    out is not matched (a SERM is no bone-protective therapy for a woman on an aromatase inhibitor)."""
    systems = valuesets.get("systems", {})
    rxnorm, atc = systems.get("rxnorm"), systems.get("atc")
    for drug_class, spec in valuesets.get("medications", {}).items():
        found = None
        ingredients = {name: codes for name, codes in spec["ingredients"].items()
                       if sex is None or sex in codes.get("only_for_sex", [sex])}
        for ingredient, codes in ingredients.items():
            for system, code in codings:
                if (system == rxnorm and code in codes.get("rxnorm", [])) or \
                        (system == atc and code in codes.get("atc", [])):
                    found = (drug_class, ingredient, "rxnorm" if system == rxnorm else "atc", code)
                    break
            if found:
                break
        if not found and text:
            for ingredient, codes in ingredients.items():
                name = name_in_text(text, ingredient_names(ingredient, codes))
                if name:
                    found = (drug_class, ingredient, f"text:{name}", "")
                    break
        if found:
            yield found


class Relevance:
    def __init__(self, valuesets: dict[str, Any]):
        self.observation_codes: set[str] = set()
        for spec in valuesets.get("labs", {}).values():
            self.observation_codes.update(spec["loinc"])
        for site in valuesets.get("dxa", {}).values():
            for kind in ("t_score", "z_score", "bmd"):
                self.observation_codes.update(site.get(kind, []))
        self.medication_codes: set[str] = set()
        names: set[str] = set()
        for spec in valuesets.get("medications", {}).values():
            for name, codes in spec["ingredients"].items():
                names.update(ingredient_names(name, codes))
                self.medication_codes.update(codes.get("rxnorm", []))
                self.medication_codes.update(codes.get("atc", []))
        self.order_codes: set[str] = {c for spec in valuesets.get("orders", {}).values()
                                      for codes in spec.values() for c in codes}
        self.names = tuple(sorted(names, key=lambda n: (-len(n), n)))

    @staticmethod
    def _codes(concept: Any) -> set[str]:
        if not isinstance(concept, dict):
            return set()
        codings = concept.get("coding")
        if not isinstance(codings, list):
            return set()
        return {str(c.get("code")) for c in codings if isinstance(c, dict) and c.get("code") is not None}

    def _text_match(self, concept: Any) -> bool:
        if not isinstance(concept, dict):
            return False
        codings = concept.get("coding")
        codings = codings if isinstance(codings, list) else []  # a malformed coding is for validation
        texts = [concept.get("text")] + [c.get("display") for c in codings if isinstance(c, dict)]
        return name_in_text(" | ".join(t for t in texts if isinstance(t, str)), self.names) is not None

    def __call__(self, resource: Any) -> bool:
        if not isinstance(resource, dict):
            return True  # let validation say what is wrong with it
        kind = resource.get("resourceType")
        if kind in ("Patient", "Medication"):
            return True
        if kind == "Observation":
            return bool(self._codes(resource.get("code")) & self.observation_codes)
        if kind == "MedicationRequest":
            concept = resource.get("medicationCodeableConcept")
            return bool(self._codes(concept) & self.medication_codes) or self._text_match(concept) \
                or "medicationReference" in resource
        if kind == "ServiceRequest":
            return bool(self._codes(resource.get("code")) & self.order_codes)
        return False


class Counted:
    """The relevance filter ``predicate`` under a call's budget (made by ``cds.call.budget.Budget.relevant``):
    each resource asked about costs a time check (past ``deadline`` on ``clock``: ``BudgetExceeded`` with
    ``late``), and each one that would be validated counts (past ``max_resources``: ``too_many``). Plain
    data, so that the parser asking it calls nothing above its own layer."""

    __slots__ = ("predicate", "clock", "deadline", "max_resources", "late", "too_many", "count")

    def __init__(self, predicate: Callable[[Any], bool], *, clock: Callable[[], float],
                 deadline: float | None, max_resources: int | None, late: str, too_many: str):
        self.predicate, self.clock, self.deadline = predicate, clock, deadline
        self.max_resources, self.late, self.too_many = max_resources, late, too_many
        self.count = 0

    def __call__(self, resource: Any) -> bool:
        if self.deadline is not None and self.clock() > self.deadline:
            raise BudgetExceeded(self.late, field="(call)")
        if not self.predicate(resource):
            return False
        self.count += 1
        if self.max_resources is not None and self.max_resources > 0 and self.count > self.max_resources:
            raise BudgetExceeded(self.too_many, field="(call)")
        return True
