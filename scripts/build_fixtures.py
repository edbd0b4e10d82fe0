"""Write the boundary fixtures in ``fixtures/<rule-id>/`` (FHIR R4 Bundles and their expected cards).

    .venv/bin/python scripts/build_fixtures.py        # rewrite every generated fixture

Each fixture is one patient's record at the evaluation date (2026-11-22). To keep each fixture about one
rule, the record starts from a *background* that fires nothing: an active anastrozole order, a recent
normal 25-OH vitamin D, a recent normal estradiol (men), a recent normal calcium, a recent normal
testosterone (men on testosterone therapy) and a recent normal lumbar-spine DXA. A fixture
replaces the slots it is about. Fixture files may also be written by hand (see fixtures/README.md); this
script only rewrites the files it generates.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import uuid
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "fixtures"
AT = dt.date(2026, 11, 22)
VS = yaml.safe_load((ROOT / "rules" / "valuesets.yaml").read_text())
RXNORM, ATC, LOINC, SNOMED = (VS["systems"][k] for k in ("rxnorm", "atc", "loinc", "snomed"))
UCUM = "http://unitsofmeasure.org"
PID = "fixture-patient"


def ago(days: int) -> str:
    return (AT - dt.timedelta(days=days)).isoformat()


def born(age: int) -> str:
    """A birth date giving exactly ``age`` years at the evaluation date (birthday 30 days before it)."""
    day = AT - dt.timedelta(days=30)
    return day.replace(year=day.year - age).isoformat()


# -- resources ---------------------------------------------------------------------------------------------


def patient(sex: str | None = "male", age: int | None = 62) -> dict[str, Any]:
    p: dict[str, Any] = {
        "resourceType": "Patient",
        "id": PID,
        "name": [{"family": "Example", "given": ["Fixture"]}],
    }
    if sex:
        p["gender"] = sex
    if age is not None:
        p["birthDate"] = born(age)
    return p


def med_request(
    rid: str,
    *,
    rxnorm: str | None = None,
    atc: str | None = None,
    text: str | None = None,
    status: str = "active",
    display: str | None = None,
    timing: bool = True,
    medication_ref: str | None = None,
    contained: dict | None = None,
) -> dict[str, Any]:
    mr: dict[str, Any] = {
        "resourceType": "MedicationRequest",
        "id": rid,
        "status": status,
        "intent": "order",
        "subject": {"reference": f"Patient/{PID}"},
        "authoredOn": ago(90),
    }
    codings = []
    if rxnorm:
        codings.append({"system": RXNORM, "code": rxnorm, **({"display": display} if display else {})})
    if atc:
        codings.append({"system": ATC, "code": atc})
    if contained is not None:
        mr["contained"] = [contained]
        mr["medicationReference"] = {"reference": f"#{contained['id']}"}
    elif medication_ref:
        mr["medicationReference"] = {"reference": medication_ref}
    else:
        concept: dict[str, Any] = {}
        if codings:
            concept["coding"] = codings
        if text:
            concept["text"] = text
        mr["medicationCodeableConcept"] = concept
    if timing:
        mr["dosageInstruction"] = [
            {
                "text": "1 tablet by mouth twice a week",
                "timing": {"repeat": {"frequency": 1, "period": 3.5, "periodUnit": "d"}},
                "doseAndRate": [{"doseQuantity": {"value": 1, "unit": "tablet"}}],
            }
        ]
    return mr


def anastrozole(status: str = "active", rid: str = "ai-1", started: int = 90) -> dict[str, Any]:
    """An anastrozole order authored ``started`` days ago."""
    order = med_request(rid, rxnorm="199224", display="anastrozole 1 MG Oral Tablet", status=status)
    order["authoredOn"] = ago(started)
    return order


#: an aromatase inhibitor course long past its first estradiol check: the yearly cadence applies
LONG_COURSE = 800


def medication(rid: str, rxnorm: str, display: str) -> dict[str, Any]:
    return {
        "resourceType": "Medication",
        "id": rid,
        "code": {"coding": [{"system": RXNORM, "code": rxnorm, "display": display}], "text": display},
    }


def lab(
    rid: str,
    loinc: str,
    value: float | None,
    unit: str,
    days_ago: int,
    *,
    status: str = "final",
    display: str = "",
    code_unit: str | None = "same",
    subject: str = PID,
    comparator: str | None = None,
    value_string: str | None = None,
    absent: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """A laboratory result in the US Core pattern; the lab-system shapes by keyword.

    ``comparator``: ``valueQuantity.comparator`` (a result below or above a limit); ``value_string``: the
    result as ``valueString`` ("<5 pg/mL") instead of a quantity; ``absent``: ``dataAbsentReason`` (code,
    text) and no value; ``code_unit=None``: the unit as text only (no system, no code).
    """
    obs: dict[str, Any] = {
        "resourceType": "Observation",
        "id": rid,
        "status": status,
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "laboratory",
                        "display": "Laboratory",
                    }
                ]
            }
        ],
        "code": {"coding": [{"system": LOINC, "code": loinc, **({"display": display} if display else {})}]},
        "subject": {"reference": f"Patient/{subject}"},
        "effectiveDateTime": f"{ago(days_ago)}T08:30:00Z",
        "issued": f"{ago(days_ago)}T14:00:00Z",
    }
    if absent is not None:
        code, text = absent
        obs["dataAbsentReason"] = {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/data-absent-reason", "code": code,
                        "display": {"error": "Error", "not-performed": "Not Performed"}.get(code, code)}],
            "text": text,
        }
    elif value_string is not None:
        obs["valueString"] = value_string
    elif value is not None:
        q: dict[str, Any] = {"value": value, "unit": unit}
        if comparator:
            q = {"value": value, "comparator": comparator, "unit": unit}
        if code_unit is not None:
            q.update(system=UCUM, code=unit if code_unit == "same" else code_unit)
        obs["valueQuantity"] = q
    else:
        obs["dataAbsentReason"] = {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/data-absent-reason", "code": "error"}
            ]
        }
    return obs


def estradiol(value: float, unit: str = "pg/mL", days_ago: int = 30, rid: str = "e2-1", **kw: Any) -> dict:
    loinc = "14715-7" if unit in ("pmol/L", "nmol/L") else "2243-4"
    return lab(rid, loinc, value, unit, days_ago, display="Estradiol (E2) [Mass or Moles/volume]", **kw)


def vitamin_d(
    value: float | None, unit: str = "ng/mL", days_ago: int = 60, rid: str = "vitd-1", **kw: Any
) -> dict:
    loinc = "14635-7" if unit in ("nmol/L",) else "62292-8"
    return lab(rid, loinc, value, unit, days_ago, display="25-Hydroxyvitamin D", **kw)


def calcium(
    value: float | None, unit: str = "mg/dL", days_ago: int = 60, rid: str = "ca-1", **kw: Any
) -> dict:
    loinc = "17861-6" if unit.lower() == "mg/dl" else "2000-8"
    display = "Calcium [Mass or Moles/volume] in Serum or Plasma"
    return lab(rid, loinc, value, unit, days_ago, display=display, **kw)


def albumin(value: float, unit: str = "g/dL", days_ago: int = 60, rid: str = "alb-1", **kw: Any) -> dict:
    return lab(rid, "1751-7", value, unit, days_ago, display="Albumin [Mass/volume] in Serum or Plasma", **kw)


def testosterone(
    value: float | None, unit: str = "ng/dL", days_ago: int = 60, rid: str = "t-1", **kw: Any
) -> dict:
    loinc = "2986-8" if unit == "ng/dL" else "14913-8"
    display = "Testosterone [Mass or Moles/volume] in Serum"
    return lab(rid, loinc, value, unit, days_ago, display=display, **kw)


def dxa(
    rid: str,
    site: str,
    kind: str,
    value: float,
    days_ago: int,
    *,
    status: str = "final",
    code: str | None = None,
    body_site: dict[str, Any] | None = None,
    unit: tuple[str, str | None] | None = None,
) -> dict[str, Any]:
    """A DXA Observation shaped like the US Core DXA examples (imaging category, T-score unit ``1``).

    ``body_site``: a ``bodySite`` CodeableConcept; ``unit``: (text, UCUM code or None for text only).
    """
    loinc = code or VS["dxa"][site][kind][0]
    unit = unit or {"bmd": ("g/cm2", "g/cm2"), "t_score": ("T-Score", "1"), "z_score": ("Z-Score", "1")}[kind]
    quantity: dict[str, Any] = {"value": value, "unit": unit[0]}
    if unit[1] is not None:
        quantity.update(system=UCUM, code=unit[1])
    obs = {
        "resourceType": "Observation",
        "id": rid,
        "status": status,
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "imaging",
                        "display": "Imaging",
                    }
                ],
                "text": "Imaging",
            }
        ],
        "code": {
            "coding": [{"system": LOINC, "code": loinc, "display": f"DXA {VS['dxa'][site]['title']} {kind}"}]
        },
        "subject": {"reference": f"Patient/{PID}"},
        "effectiveDateTime": f"{ago(days_ago)}T10:00:00Z",
        "valueQuantity": quantity,
    }
    if body_site is not None:
        obs["bodySite"] = body_site
    return obs


def service_request(rid: str, system: str, code: str, text: str) -> dict[str, Any]:
    return {
        "resourceType": "ServiceRequest",
        "id": rid,
        "status": "draft",
        "intent": "order",
        "code": {"coding": [{"system": system, "code": code}], "text": text},
        "subject": {"reference": f"Patient/{PID}"},
    }


# -- fixtures ----------------------------------------------------------------------------------------------


def record(sex: str | None = "male", age: int | None = 62, **slots: Any) -> list[dict[str, Any]]:
    """The background record with ``slots`` replaced (a slot set to None is left out; lists are spliced)."""
    base: dict[str, Any] = {
        "patient": patient(sex, age),
        "ai": anastrozole(),
        "vitd": vitamin_d(38),
        "e2": estradiol(32) if sex == "male" else None,
        "dxa": dxa("dxa-bg", "lumbar_spine", "t_score", -0.4, 200),
        "ca": calcium(9.4),
        "testo": testosterone(550) if "trt" in slots else None,
    }
    base.update(slots)
    out: list[dict[str, Any]] = []
    for value in base.values():
        if isinstance(value, list):
            out += value
        elif value is not None:
            out.append(value)
    return out


FIXTURES: list[tuple[str, str, list[dict], dict[str, Any]]] = []


def fixture(
    rule: str,
    name: str,
    resources: list[dict],
    *,
    cards: list[tuple] = (),
    not_cards: list[str] = (),
    hook: str = "order-sign",
    **extra: Any,
) -> None:
    expected: dict[str, Any] = {"hook": hook, "at": AT.isoformat(), "cards": []}
    for card in cards:
        item: dict[str, Any] = {"rule": card[0], "indicator": card[1]}
        if len(card) > 2 and card[2]:
            item["summary_contains"] = card[2]
        if len(card) > 3:
            item["actions"] = card[3]
        expected["cards"].append(item)
    expected["not_cards"] = sorted(set(not_cards))
    expected.update(extra)
    FIXTURES.append((rule, name, resources, expected))


def build() -> None:
    from fixtures_catalogue import define  # the catalogue sits next to this script

    define(sys.modules[__name__])


def write() -> int:
    count = 0
    for rule, name, resources, expected in FIXTURES:
        folder = OUT / rule
        folder.mkdir(parents=True, exist_ok=True)
        bundle = {
            "resourceType": "Bundle",
            "id": f"{rule}-{name}",
            "type": "collection",
            "entry": [
                {"fullUrl": f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, f'{rule}/{name}/{i}')}", "resource": r}
                for i, r in enumerate(resources)
            ],
        }
        (folder / f"{name}.json").write_text(json.dumps(bundle, indent=2) + "\n", encoding="utf-8")
        (folder / f"{name}.expected.json").write_text(json.dumps(expected, indent=2) + "\n", encoding="utf-8")
        count += 1
    return count


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    build()
    print(f"wrote {write()} fixtures under {OUT}")
