"""Resource builders in the shapes real systems send, for the realistic fixture corpus (fixtures/realistic/).

Written for this project from the published descriptions of those shapes; deterministic (a seeded random
generator), so that running the build twice writes the same files.

* ``SyntheaPatient``: a Synthea R4 *transaction* Bundle: every entry has ``fullUrl`` "urn:uuid:<id>" and a
  ``request`` (POST), every reference to the patient or an encounter is that urn, organisations and
  practitioners are conditional references (``Organization?identifier=...``), and the record carries
  hundreds of resources no rule reads (Encounters, Claims, ExplanationOfBenefits, Conditions,
  Immunizations, Procedures, vital signs) with 17-digit floats. DXA T-scores use LOINC 38265-5 whatever
  the site, with unit ``{T-score}``, as Synthea does.
* ``us_core_*``: US Core laboratory results and DXA Observations (T-score unit text "T-Score", code ``1``),
  a bone-density DiagnosticReport (LOINC 83311-1), relative references ``Patient/<id>``.
* ``sandbox_*``: draft orders as the CDS Hooks sandbox sends them: ``category`` as one object, empty
  codings ``coding: [{}]``.
"""

from __future__ import annotations

import datetime as dt
import random
import uuid
from typing import Any

AT = dt.date(2026, 11, 22)
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"
CPT = "http://www.ama-assn.org/go/cpt"
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
SYNTHEA_ORG = "https://github.com/synthetichealth/synthea"


def day(days_ago: int) -> dt.date:
    return AT - dt.timedelta(days=days_ago)


def born(age: int) -> str:
    """A birth date giving ``age`` years at ``AT`` (birthday 40 days before it)."""
    d = AT - dt.timedelta(days=40)
    return d.replace(year=d.year - age).isoformat()


def stamp(d: dt.date, hour: int = 9) -> str:
    return f"{d.isoformat()}T{hour:02d}:14:43-05:00"


def concept(system: str, code: str, display: str, text: str | None = None) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code, "display": display}], "text": text or display}


def quantity(value: float, unit: str, code: str | None = None) -> dict[str, Any]:
    return {"value": value, "unit": unit, "system": UCUM, "code": code if code is not None else unit}


# -- Synthea ---------------------------------------------------------------------------------------------


ENCOUNTER_TYPES = [("162673000", "General examination of patient (procedure)"),
                   ("185349003", "Encounter for check up (procedure)"),
                   ("410620009", "Well child visit (procedure)"),
                   ("185345009", "Encounter for symptom (procedure)")]
CONDITIONS = [("444814009", "Viral sinusitis (disorder)"), ("59621000", "Essential hypertension (disorder)"),
              ("160903007", "Full-time employment (finding)"), ("73595000", "Stress (finding)"),
              ("10509002", "Acute bronchitis (disorder)")]
VACCINES = [("140", "Influenza, seasonal, injectable, preservative free"),
            ("113", "Td (adult) preservative free"),
            ("208", "SARS-COV-2 (COVID-19) vaccine, mRNA, spike protein, LNP, preservative free")]
VITALS = [("8302-2", "Body Height", "cm", 150.0, 190.0), ("29463-7", "Body Weight", "kg", 55.0, 110.0),
          ("39156-5", "Body mass index (BMI) [Ratio]", "kg/m2", 19.0, 34.0),
          ("8867-4", "Heart rate", "/min", 55.0, 95.0), ("9279-1", "Respiratory rate", "/min", 12.0, 18.0)]


class SyntheaPatient:
    """One Synthea-shaped patient record, built up resource by resource."""

    def __init__(self, seed: int, *, sex: str, age: int, given: str, family: str,
                 deceased: dt.date | None = None):
        self.rng = random.Random(seed)
        self.entries: list[dict[str, Any]] = []
        self.pid = self.uuid()
        self.sex, self.given, self.family = sex, given, family
        patient: dict[str, Any] = {
            "resourceType": "Patient", "id": self.pid,
            "meta": {"profile": ["http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient"]},
            "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">Generated</div>"},
            "extension": [{"url": "http://hl7.org/fhir/us/core/StructureDefinition/us-core-birthsex",
                           "valueCode": "M" if sex == "male" else "F"}],
            "identifier": [{"system": SYNTHEA_ORG, "value": self.pid},
                           {"type": concept("http://terminology.hl7.org/CodeSystem/v2-0203", "MR",
                                            "Medical Record Number"),
                            "system": "http://hospital.smarthealthit.org", "value": self.pid}],
            "name": [{"use": "official", "family": family, "given": [given],
                      "prefix": ["Mr." if sex == "male" else "Mrs."]}],
            "telecom": [{"system": "phone", "value": "555-" + str(self.rng.randint(100, 999)) + "-0199",
                         "use": "home"}],
            "gender": sex, "birthDate": born(age),
            "address": [{"line": ["742 Example Way"], "city": "Springfield", "state": "Massachusetts",
                         "postalCode": "01101", "country": "US"}],
            "multipleBirthBoolean": False,
        }
        if deceased is not None:
            patient["deceasedDateTime"] = stamp(deceased, 3)
        self.add(patient)
        self.org = f"Organization?identifier={SYNTHEA_ORG}|{self.uuid()}"
        npi = f"99999{self.rng.randint(10000, 99999)}"
        self.doctor = f"Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|{npi}"

    def uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def ref(self, rid: str | None = None) -> dict[str, Any]:
        if rid is None:
            return {"reference": f"urn:uuid:{self.pid}", "display": f"{self.given} {self.family}"}
        return {"reference": f"urn:uuid:{rid}"}

    def add(self, resource: dict[str, Any]) -> dict[str, Any]:
        resource.setdefault("id", self.uuid())
        self.entries.append({"fullUrl": f"urn:uuid:{resource['id']}", "resource": resource,
                             "request": {"method": "POST", "url": resource["resourceType"]}})
        return resource

    def encounter(self, when: dt.date) -> str:
        code, display = self.rng.choice(ENCOUNTER_TYPES)
        enc = self.add({
            "resourceType": "Encounter", "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
            "type": [concept(SNOMED, code, display)], "subject": self.ref(),
            "participant": [{"individual": {"reference": self.doctor, "display": "Dr. Example"}}],
            "period": {"start": stamp(when), "end": stamp(when, 10)},
            "serviceProvider": {"reference": self.org, "display": "SPRINGFIELD HEALTH"}})
        self.add({"resourceType": "Claim", "status": "active",
                  "type": concept("http://terminology.hl7.org/CodeSystem/claim-type", "professional",
                                  "professional"),
                  "use": "claim", "patient": self.ref(), "billablePeriod": enc["period"],
                  "created": stamp(when, 10), "provider": {"reference": self.org},
                  "priority": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/processpriority",
                                           "code": "normal"}]},
                  "item": [{"sequence": 1, "productOrService": concept(SNOMED, code, display),
                            "encounter": [self.ref(enc["id"])]}],
                  "total": {"value": round(self.rng.uniform(80, 900), 2), "currency": "USD"}})
        self.add({"resourceType": "ExplanationOfBenefit", "status": "active", "use": "claim",
                  "type": concept("http://terminology.hl7.org/CodeSystem/claim-type", "professional",
                                  "professional"),
                  "patient": self.ref(), "created": stamp(when, 10), "insurer": {"display": "Medicare"},
                  "provider": {"reference": self.doctor}, "outcome": "complete",
                  "insurance": [{"focal": True, "coverage": {"display": "Medicare"}}],
                  "billablePeriod": enc["period"]})
        return enc["id"]

    def background(self, visits: int) -> None:
        """``visits`` yearly-ish encounters, each with its claim, vitals, and now and then a condition,
        an immunization or a procedure: the bulk of a Synthea record, none of it read by the rules."""
        for n in range(visits):
            when = day(60 + n * self.rng.randint(70, 140))
            enc = self.encounter(when)
            for code, display, unit, low, high in VITALS:
                self.add({"resourceType": "Observation", "status": "final",
                          "category": [{"coding": [{"system": OBS_CATEGORY, "code": "vital-signs"}]}],
                          "code": concept(LOINC, code, display), "subject": self.ref(),
                          "encounter": self.ref(enc), "effectiveDateTime": stamp(when),
                          "issued": stamp(when).replace("-05:00", ".512-05:00"),
                          "valueQuantity": quantity(self.rng.uniform(low, high), unit)})
            if n % 3 == 0:
                code, display = self.rng.choice(CONDITIONS)
                self.add({"resourceType": "Condition",
                          "clinicalStatus": concept("http://terminology.hl7.org/CodeSystem/condition-clinical",
                                                    "resolved", "resolved"),
                          "code": concept(SNOMED, code, display), "subject": self.ref(),
                          "encounter": self.ref(enc), "onsetDateTime": stamp(when),
                          "recordedDate": stamp(when)})
            if n % 2 == 0:
                code, display = self.rng.choice(VACCINES)
                self.add({"resourceType": "Immunization", "status": "completed",
                          "vaccineCode": concept("http://hl7.org/fhir/sid/cvx", code, display),
                          "patient": self.ref(), "encounter": self.ref(enc),
                          "occurrenceDateTime": stamp(when), "primarySource": True})
            if n % 4 == 1:
                self.add({"resourceType": "Procedure", "status": "completed",
                          "code": concept(SNOMED, "430193006", "Medication Reconciliation (procedure)"),
                          "subject": self.ref(), "encounter": self.ref(enc),
                          "performedPeriod": {"start": stamp(when), "end": stamp(when, 10)}})

    def medication(self, code: str, display: str, *, days_ago: int = 120, status: str = "active") -> None:
        enc = self.encounter(day(days_ago))
        self.add({"resourceType": "MedicationRequest", "status": status, "intent": "order",
                  "medicationCodeableConcept": concept(RXNORM, code, display), "subject": self.ref(),
                  "encounter": self.ref(enc), "authoredOn": stamp(day(days_ago)),
                  "requester": {"reference": self.doctor, "display": "Dr. Example"},
                  "dosageInstruction": [{"sequence": 1, "asNeededBoolean": False}]})

    def lab(self, code: str, display: str, value: float, unit: str, *, days_ago: int) -> None:
        enc = self.encounter(day(days_ago))
        self.add({"resourceType": "Observation", "status": "final",
                  "category": [{"coding": [{"system": OBS_CATEGORY, "code": "laboratory"}]}],
                  "code": concept(LOINC, code, display), "subject": self.ref(), "encounter": self.ref(enc),
                  "effectiveDateTime": stamp(day(days_ago)), "issued": stamp(day(days_ago), 11),
                  "valueQuantity": quantity(value, unit)})

    def dxa_t_score(self, value: float, *, days_ago: int) -> None:
        """Synthea's bone density workup: the procedure, then a T-score coded 38265-5 whatever the site."""
        enc = self.encounter(day(days_ago))
        self.add({"resourceType": "Procedure", "status": "completed",
                  "code": concept(SNOMED, "312681000", "Bone density scan (procedure)"),
                  "subject": self.ref(), "encounter": self.ref(enc),
                  "performedPeriod": {"start": stamp(day(days_ago))}})
        self.add({"resourceType": "Observation", "status": "final",
                  "category": [{"coding": [{"system": OBS_CATEGORY, "code": "procedure"}]}],
                  "code": concept(LOINC, "38265-5", "DXA [T-score] Bone density"), "subject": self.ref(),
                  "encounter": self.ref(enc), "effectiveDateTime": stamp(day(days_ago)),
                  "issued": stamp(day(days_ago), 11), "valueQuantity": quantity(value, "{T-score}")})

    def bundle(self, description: str) -> dict[str, Any]:
        return {"resourceType": "Bundle", "type": "transaction",
                "meta": {"tag": [{"system": "urn:bone-health-cds:fixture", "code": "realistic",
                                  "display": description}]},
                "entry": self.entries}


# -- US Core and the sandbox --------------------------------------------------------------------------------


def us_core_patient(pid: str, sex: str, age: int) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": pid,
            "meta": {"profile": ["http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient"]},
            "identifier": [{"system": "http://hospital.example.org", "value": f"MRN-{pid}"}],
            "name": [{"family": "Shaw", "given": ["Amy" if sex == "female" else "Adam"]}],
            "gender": sex, "birthDate": born(age)}


def us_core_lab(rid: str, pid: str, code: str, display: str, value: float, unit: str, *,
                days_ago: int, reference: tuple[float, float] = (30, 100)) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": rid, "status": "final",
            "meta": {"profile": ["http://hl7.org/fhir/us/core/StructureDefinition/us-core-observation-lab"]},
            "category": [{"coding": [{"system": OBS_CATEGORY, "code": "laboratory", "display": "Laboratory"}],
                          "text": "Laboratory"}],
            "code": concept(LOINC, code, display), "subject": {"reference": f"Patient/{pid}"},
            "effectiveDateTime": stamp(day(days_ago)), "issued": stamp(day(days_ago), 12),
            "valueQuantity": quantity(value, unit),
            "referenceRange": [{"low": quantity(reference[0], unit), "high": quantity(reference[1], unit)}]}


def us_core_dxa(rid: str, pid: str, code: str, display: str, value: float, kind: str, *,
                days_ago: int) -> dict[str, Any]:
    """A US Core DXA Observation: T/Z-score with unit text "T-Score"/"Z-Score" and code 1, or BMD g/cm2."""
    value_quantity = quantity(value, "g/cm2") if kind == "bmd" else {
        "value": value, "unit": "T-Score" if kind == "t" else "Z-Score", "system": UCUM, "code": "1"}
    return {"resourceType": "Observation", "id": rid, "status": "final",
            "category": [{"coding": [{"system": OBS_CATEGORY, "code": "imaging", "display": "Imaging"}]}],
            "code": {"coding": [{"system": LOINC, "code": code, "display": display}], "text": display},
            "subject": {"reference": f"Patient/{pid}", "display": "Amy Shaw"},
            "effectiveDateTime": f"{day(days_ago).isoformat()}T19:14:41.088720-08:00",
            "valueQuantity": value_quantity}


def us_core_dxa_report(rid: str, pid: str, results: list[str], *, days_ago: int) -> dict[str, Any]:
    return {"resourceType": "DiagnosticReport", "id": rid, "status": "final",
            "category": [{"coding": [{"system": LOINC, "code": "LP29684-5", "display": "Radiology"}]}],
            "code": concept(LOINC, "83311-1", "Bone density quantitative measurement by DXA panel"),
            "subject": {"reference": f"Patient/{pid}"}, "effectiveDateTime": stamp(day(days_ago)),
            "result": [{"reference": f"Observation/{r}"} for r in results]}


def medication_request(rid: str, pid: str, *, status: str = "active", code: str | None = None,
                       display: str | None = None, text: str | None = None) -> dict[str, Any]:
    mr: dict[str, Any] = {"resourceType": "MedicationRequest", "id": rid, "status": status, "intent": "order",
                          "subject": {"reference": f"Patient/{pid}"}, "authoredOn": day(90).isoformat(),
                          "dosageInstruction": [{"text": "1 tablet by mouth", "timing": {"repeat": {
                              "frequency": 1, "period": 1, "periodUnit": "d"}}}]}
    coding = [{"system": RXNORM, "code": code, "display": display}] if code else []
    mr["medicationCodeableConcept"] = {**({"coding": coding} if coding else {}), "text": text or display}
    return mr


def sandbox_draft(resource: dict[str, Any]) -> dict[str, Any]:
    """A draft order as the sandbox sends it: ``category`` as one object, an empty coding first."""
    out = {**resource, "status": "draft",
           "category": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/medicationrequest-category",
                                    "code": "outpatient"}]}}
    key = "medicationCodeableConcept" if "medicationCodeableConcept" in out else "code"
    out[key] = {**out[key], "coding": [{}, *out[key].get("coding", [])]}
    return out


def service_request(rid: str, pid: str, system: str, code: str, display: str) -> dict[str, Any]:
    return {"resourceType": "ServiceRequest", "id": rid, "status": "draft", "intent": "order",
            "code": {"coding": [{"system": system, "code": code, "display": display}], "text": display},
            "subject": {"reference": f"Patient/{pid}"}}
