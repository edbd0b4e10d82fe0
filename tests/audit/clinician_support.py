"""A hook request shaped as the official CDS Hooks sandbox sends it (see shared notes): a man on a draft
anastrozole order whose draft is sloppy R4 (``category`` as an object, ``coding: [{}]``), the draft Bundle
without ``type``; his estradiol over two years (the latest low, one reported with a comparator) and DXA
scans at two sites (T-score and BMD)."""

from __future__ import annotations

import uuid
from typing import Any

from cds.hooks.services import discovery_document
from cds.rules import pack as rule_pack
from cds.toolkit.request import as_bundle, build_hook_request

PATIENT = "sandbox-patient-7731"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
ESTRADIOL = [("2024-12-02", 31.0, None), ("2025-09-15", 18.0, None), ("2026-10-20", 8.0, "<")]
DXA = {  # site: (T-score LOINC, BMD LOINC), then (date, T-score, BMD)
    "lumbar_spine": (("38267-1", "24966-4"), [("2024-02-01", -0.9, 0.95), ("2026-02-03", -1.5, 0.88)]),
    "hip": (("38264-8", "38261-4"), [("2024-02-01", -1.2, 0.82), ("2026-02-03", -1.7, 0.77)]),
}


def _obs(obs_id: str, code: str, date: str, value: float, unit: str, comparator: str | None = None):
    quantity: dict[str, Any] = {"value": value, "unit": unit, "system": UCUM, "code": unit}
    if comparator:
        quantity["comparator"] = comparator
    return {"resourceType": "Observation", "id": obs_id, "status": "final",
            "code": {"coding": [{"system": LOINC, "code": code}]},
            "subject": {"reference": f"Patient/{PATIENT}"}, "effectiveDateTime": date,
            "valueQuantity": quantity}


def sloppy_draft(**extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "MedicationRequest",
        "id": f"draft-{uuid.uuid4().hex[:6]}",
        "status": "draft",
        "intent": "order",
        "category": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/medicationrequest-category",
                                 "code": "outpatient"}]},
        "subject": {"reference": f"Patient/{PATIENT}"},
        "medicationCodeableConcept": {
            "coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "199224",
                        "display": "anastrozole 1 MG Oral Tablet"}, {}],
            "text": "anastrozole 1 mg tablet",
        },
        "reasonCode": [{"coding": [{}]}],
        "dosageInstruction": [{"text": "1 tablet daily", "timing": {"repeat": {"frequency": 1, "period": 1,
                                                                                "periodUnit": "d"}}}],
        **extra,
    }


def record() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [{"resourceType": "Patient", "id": PATIENT, "gender": "male",
                                  "birthDate": "1958-05-17"}]
    for i, (date, value, comparator) in enumerate(ESTRADIOL):
        out.append(_obs(f"e2-{i}", "2243-4", date, value, "pg/mL", comparator))
    for site, ((t_code, bmd_code), scans) in DXA.items():
        for i, (date, t_score, bmd) in enumerate(scans):
            out.append(_obs(f"{site.replace('_', '-')}-t-{i}", t_code, date, t_score, "{T-score}"))
            out.append(_obs(f"{site.replace('_', '-')}-bmd-{i}", bmd_code, date, bmd, "g/cm2"))
    return out


def sandbox_request(draft: dict[str, Any] | None = None) -> dict[str, Any]:
    pack = rule_pack.load()
    service = next(s for s in discovery_document(pack)["services"] if s["hook"] == "order-select")
    draft = draft or sloppy_draft()
    body = build_hook_request(as_bundle([*record(), draft]), "order-select", service)
    body["context"]["draftOrders"].pop("type")  # the sandbox sends its draft Bundle without a type
    return body
