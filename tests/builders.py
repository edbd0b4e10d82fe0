"""Small builders for FHIR R4 resources and hook requests used across the tests."""

from __future__ import annotations

import functools
import itertools
import uuid
from typing import Any

from cds.hooks.services import prefetch_templates
from cds.rules.pack import load

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
_ids = itertools.count(1)


@functools.cache
def prefetch_keys() -> tuple[str, ...]:
    """Every prefetch key the services declare in discovery, in template order (the rule pack's own)."""
    return tuple(prefetch_templates(load()))


def complete_prefetch(**given: Any) -> dict[str, Any]:
    """A prefetch that answers every declared key: ``given`` as sent, every other key ``None`` (the client
    searched and found nothing). A request built by hand stays complete when the pack declares a new key;
    a test about an absent key leaves that key out of the result itself."""
    unknown = set(given) - set(prefetch_keys())
    if unknown:
        raise KeyError(f"not a declared prefetch key: {sorted(unknown)}")
    return {key: given.get(key) for key in prefetch_keys()}


def patient(pid: str = "p1", gender: str | None = "male", birth: str | None = "1960-05-01") -> dict[str, Any]:
    r: dict[str, Any] = {"resourceType": "Patient", "id": pid}
    if gender:
        r["gender"] = gender
    if birth:
        r["birthDate"] = birth
    return r


def med(code: str = "84857", display: str = "anastrozole", *, status: str = "active", pid: str = "p1",
        mid: str | None = None, timing: dict | None = None) -> dict[str, Any]:
    r: dict[str, Any] = {
        "resourceType": "MedicationRequest",
        "id": mid or f"mr{next(_ids)}",
        "status": status,
        "intent": "order",
        "subject": {"reference": f"Patient/{pid}"},
        "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": code, "display": display}]},
    }
    if timing is not None:
        r["dosageInstruction"] = [{"text": "as directed", "timing": {"repeat": timing}}]
    return r


def obs(
    code: str,
    value: float | None,
    unit: str | None,
    date: str,
    *,
    status: str = "final",
    pid: str = "p1",
    oid: str | None = None,
) -> dict[str, Any]:
    r: dict[str, Any] = {
        "resourceType": "Observation", "id": oid or f"o{next(_ids)}", "status": status,
        "code": {"coding": [{"system": LOINC, "code": code}]}, "subject": {"reference": f"Patient/{pid}"},
        "effectiveDateTime": date,
    }
    if value is not None:
        q: dict[str, Any] = {"value": value}
        if unit is not None:
            q.update(unit=unit, system=UCUM, code=unit)
        r["valueQuantity"] = q
    return r


def searchset(resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in resources]}


def hook_body(
    hook: str,
    *,
    pid: str = "p1",
    record: list[dict[str, Any]] = (),
    drafts: list[dict[str, Any]] = (),
    selections: list[str] | None = None,
    patient_id: str | None = None,
) -> dict[str, Any]:
    """A hook request whose prefetch answers every key from ``record`` (Patient alone under ``patient``)."""
    record = list(record)
    pat = next((r for r in record if r["resourceType"] == "Patient"), None)
    rest = [r for r in record if r["resourceType"] != "Patient"]
    obs_ = [r for r in rest if r["resourceType"] == "Observation"]
    meds = [r for r in rest if r["resourceType"] != "Observation"]
    context: dict[str, Any] = {"userId": "Practitioner/doc", "patientId": patient_id or pid}
    if hook != "patient-view":
        context["draftOrders"] = {"resourceType": "Bundle", "type": "collection",
                                  "entry": [{"resource": d} for d in drafts]}
    if hook == "order-select":
        context["selections"] = selections if selections is not None else \
            [f"{d['resourceType']}/{d['id']}" for d in list(drafts)[:1]]
    return {"hook": hook, "hookInstance": str(uuid.uuid4()), "context": context,
            "prefetch": {**{key: searchset([]) for key in prefetch_keys()},
                         "patient": pat, "estradiol": searchset(obs_), "medications": searchset(meds)}}
