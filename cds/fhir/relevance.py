"""Which raw resources the rules can use, decided on the JSON before any validation. Pure code.

Validating a FHIR resource is the costliest step of a call, and the EHR sends much the rules never read
(other labs, other drugs, diet orders). A resource is validated only when this filter says a rule could
use it: a Patient or Medication; an Observation with a LOINC code of a lab analyte or a DXA site; a
MedicationRequest whose codes or text match a medication value set (or that points at a Medication); a
ServiceRequest whose code is an order kind.
"""

from __future__ import annotations

from typing import Any


class Relevance:
    def __init__(self, valuesets: dict[str, Any]):
        self.observation_codes: set[str] = set()
        for spec in valuesets.get("labs", {}).values():
            self.observation_codes.update(spec["loinc"])
        for site in valuesets.get("dxa", {}).values():
            for kind in ("t_score", "z_score", "bmd"):
                self.observation_codes.update(site.get(kind, []))
        self.medication_codes: set[str] = set()
        self.ingredients: set[str] = set()
        for spec in valuesets.get("medications", {}).values():
            for name, codes in spec["ingredients"].items():
                self.ingredients.add(name.lower())
                self.medication_codes.update(codes.get("rxnorm", []))
                self.medication_codes.update(codes.get("atc", []))
        self.order_codes: set[str] = {c for spec in valuesets.get("orders", {}).values()
                                      for codes in spec.values() for c in codes}

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
        blob = " ".join(t for t in texts if isinstance(t, str)).lower()
        return any(name in blob for name in self.ingredients)

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
