"""Synthetic but realistic hook requests for the benchmarks: one patient, N Observations, a few orders."""

from __future__ import annotations

import datetime as dt
import random
import uuid
from typing import Any

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"

# (LOINC, unit, low, high): the analytes and DXA codes the rules read, plus common labs they do not
CODES = [
    ("2243-4", "pg/mL", 8, 40),
    ("14715-7", "pmol/L", 30, 150),
    ("62292-8", "ng/mL", 10, 50),
    ("1989-3", "nmol/L", 25, 125),
    ("38267-1", "1", -3, 1),
    ("80946-7", "1", -3, 1),
    ("24966-4", "g/cm2", 0.7, 1.2),
    ("46278-8", "g/cm2", 0.6, 1.1),
    ("2986-8", "ng/dL", 200, 900),
    ("2345-7", "mg/dL", 70, 140),
    ("718-7", "g/dL", 11, 16),
    ("2160-0", "mg/dL", 0.6, 1.3),
]


def observation(pid: str, index: int, rng: random.Random, today: dt.date) -> dict[str, Any]:
    code, unit, low, high = CODES[index % len(CODES)]
    when = today - dt.timedelta(days=rng.randint(1, 1500))
    return {
        "resourceType": "Observation",
        "id": f"{pid}-obs-{index}",
        "status": "final",
        "meta": {"versionId": "1"},
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "laboratory",
                    }
                ]
            }
        ],
        "code": {"coding": [{"system": LOINC, "code": code}]},
        "subject": {"reference": f"Patient/{pid}"},
        "effectiveDateTime": when.isoformat() + "T09:30:00Z",
        "valueQuantity": {
            "value": round(rng.uniform(low, high), 2),
            "unit": unit,
            "system": UCUM,
            "code": unit,
        },
    }


def medication(pid: str, mid: str, code: str, display: str, status: str = "active") -> dict[str, Any]:
    return {
        "resourceType": "MedicationRequest",
        "id": mid,
        "status": status,
        "intent": "order",
        "subject": {"reference": f"Patient/{pid}"},
        "authoredOn": "2026-01-10",
        "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": code, "display": display}]},
        "dosageInstruction": [
            {
                "text": "0.5 mg twice weekly",
                "timing": {"repeat": {"frequency": 2, "period": 1, "periodUnit": "wk"}},
            }
        ],
    }


def order_sign(pid: str = "bench-1", observations: int = 40, seed: int = 7) -> dict[str, Any]:
    """A typical order-sign request: Patient, ``observations`` Observations, three MedicationRequests and one
    draft aromatase-inhibitor order, all as prefetch."""
    rng = random.Random(seed)
    today = dt.date.today()
    obs = [observation(pid, i, rng, today) for i in range(observations)]
    meds = [medication(pid, f"{pid}-m1", "835840", "testosterone cypionate 200 MG/ML"),
            medication(pid, f"{pid}-m2", "2418", "cholecalciferol"),
            medication(pid, f"{pid}-m3", "197361", "amlodipine 5 MG Oral Tablet")]
    draft = medication(pid, f"{pid}-draft", "199224", "anastrozole 1 MG Oral Tablet", status="draft")

    def bundle(resources: list[dict[str, Any]], kind: str = "searchset") -> dict[str, Any]:
        return {"resourceType": "Bundle", "type": kind, "entry": [{"resource": r} for r in resources]}

    return {
        "hook": "order-sign",
        "hookInstance": str(uuid.uuid4()),
        "context": {
            "userId": "Practitioner/bench",
            "patientId": pid,
            "draftOrders": bundle([draft], "collection"),
        },
        "prefetch": {
            "patient": {
                "resourceType": "Patient",
                "id": pid,
                "gender": "male",
                "birthDate": "1962-03-04",
                "meta": {"versionId": "1"},
            },
            "estradiol": bundle([o for o in obs if o["code"]["coding"][0]["code"] in ("2243-4", "14715-7")]),
            "vitaminD": bundle([o for o in obs if o["code"]["coding"][0]["code"] in ("62292-8", "1989-3")]),
            "dxa": bundle(
                [
                    o
                    for o in obs
                    if o["code"]["coding"][0]["code"] in ("38267-1", "80946-7", "24966-4", "46278-8")
                ]
            ),
            "medications": bundle(meds),
        },
    }


def order_sign_all_in_one(pid: str, observations: int, seed: int = 7) -> dict[str, Any]:
    """The same shape, but every Observation (including the ones no rule reads) in one prefetch key, as an
    EHR that answers a broad query would send it."""
    body = order_sign(pid, observations, seed)
    rng = random.Random(seed)
    today = dt.date.today()
    obs = [observation(pid, i, rng, today) for i in range(observations)]
    body["prefetch"]["estradiol"] = {"resourceType": "Bundle", "type": "searchset",
                                     "entry": [{"resource": o} for o in obs]}
    body["prefetch"]["vitaminD"] = None
    body["prefetch"]["monitoring"] = None
    body["prefetch"]["dxa"] = None
    return body
