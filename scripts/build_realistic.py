"""Write the realistic-data fixture corpus in ``fixtures/realistic/`` (bundles and their expected cards).

    .venv/bin/python scripts/build_realistic.py

Each fixture is a whole patient record in a shape real systems send (see ``realistic_shapes.py``): Synthea
R4 transaction bundles, US Core laboratory and DXA profiles, the CDS Hooks sandbox's draft orders. The
sidecars say what a clinician expects of the advice; ``tests/test_fixtures.py`` evaluates every fixture
through the HTTP API, and ``cds replay fixtures/realistic --url ...`` against a live server.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import realistic_shapes as s  # noqa: E402

OUT = Path(__file__).resolve().parent.parent / "fixtures" / "realistic"
HOOK_AT = {"at": "2026-11-22"}
VITD = ("62292-8", "25-Hydroxyvitamin D2+D3 [Mass/volume] in Serum or Plasma")
E2 = ("2243-4", "Estradiol [Mass/volume] in Serum or Plasma")
CALCIUM = ("17861-6", "Calcium [Mass/volume] in Serum or Plasma")
#: on an AI with no calcium in the last year (yearly calcium monitoring): the card a clinician expects
CALCIUM_DUE = {"rule": "calcium-monitoring-due", "indicator": "info",
               "summary_contains": "No calcium result in the last 365 days"}
ON_AI_RULES = ["dxa-baseline-missing", "vitamin-d-missing", "estradiol-monitoring-due", "low-estradiol-on-ai",
               "bone-density-low-on-ai", "osteopenia-on-ai", "dxa-overdue", "evaluation-gaps"]


def anastrozole(pid: str, rid: str = "mr-anastrozole") -> dict[str, Any]:
    return s.medication_request(rid, pid, code="199224", display="anastrozole 1 MG Oral Tablet")


def letrozole(pid: str) -> dict[str, Any]:
    return s.medication_request("mr-letrozole", pid, code="200064", display="letrozole 2.5 MG Oral Tablet")


def synthea_trt_man() -> tuple[dict[str, Any], dict[str, Any]]:
    p = s.SyntheaPatient(1301, sex="male", age=58, given="Joseph123", family="Kuhn96")
    p.background(30)
    p.medication("835840", "1 ML testosterone cypionate 200 MG/ML Injection")
    p.medication("199224", "anastrozole 1 MG Oral Tablet")
    p.lab(*E2, 14.2, "pg/mL", days_ago=40)
    p.lab(*VITD, 41.37299810373482, "ng/mL",
          days_ago=40)
    p.dxa_t_score(-0.81234567890123456, days_ago=200)
    bundle = p.bundle("Synthea-shaped transaction bundle: man on testosterone and anastrozole, estradiol "
                      "14.2 pg/mL, every reference a urn:uuid")
    return bundle, {"hook": "patient-view", **HOOK_AT,
                    "cards": [{"rule": "low-estradiol-on-ai", "indicator": "warning",
                               "summary_contains": "Low estradiol (14.2 pg/mL)"}, CALCIUM_DUE,
                              {"rule": "testosterone-first-check-due", "indicator": "info",
                               "summary_contains": "Testosterone due: therapy started 120 days ago"}],
                    "not_cards": ["evaluation-gaps", "dxa-baseline-missing", "vitamin-d-missing"]}


def synthea_woman_on_alendronic_acid() -> tuple[dict[str, Any], dict[str, Any]]:
    p = s.SyntheaPatient(1302, sex="female", age=67, given="Maria456", family="Ortiz12")
    p.background(36)
    p.medication("200064", "letrozole 2.5 MG Oral Tablet")
    p.medication("904419", "Alendronic acid 10 MG Oral Tablet")
    p.lab(*VITD, 36.18822707963512, "ng/mL",
          days_ago=400)
    p.dxa_t_score(-2.7776543210987654, days_ago=150)
    renewal = s.medication_request("letrozole-renewal", p.pid, status="draft", code="200064",
                                   display="letrozole 2.5 MG Oral Tablet")
    renewal["subject"] = p.ref()
    p.add(renewal)
    bundle = p.bundle("Synthea-shaped: woman on letrozole and alendronic acid (RxNorm 904419), forearm "
                      "T-score -2.78 (38265-5, 17 digits), vitamin D 400 days old; letrozole renewal signed")
    return bundle, {"hook": "order-sign", **HOOK_AT,
                    "cards": [{"rule": "vitamin-d-missing", "indicator": "info",
                               "summary_contains": "No 25-OH vitamin D result"}, CALCIUM_DUE],
                    "fired": ["on-aromatase-inhibitor", "on-bone-protective-therapy",
                              "bone-density-osteoporosis-range"],
                    "derived": [{"t": "on_bone_protection", "ingredient": "alendronate",
                                 "matched_by": "rxnorm"}],
                    "not_cards": ["bone-density-low-on-ai", "dxa-baseline-missing", "evaluation-gaps"]}


def synthea_deceased() -> tuple[dict[str, Any], dict[str, Any]]:
    p = s.SyntheaPatient(1303, sex="female", age=101, given="Edith789", family="Halvorson3",
                         deceased=s.day(2500))
    p.background(24)
    p.medication("200064", "letrozole 2.5 MG Oral Tablet")
    bundle = p.bundle("Synthea-shaped: a woman who died in 2020 aged 94, letrozole still listed as active, "
                      "no DXA and no vitamin D: out of scope, no cards")
    return bundle, {"hook": "patient-view", **HOOK_AT, "cards": [], "not_cards": ON_AI_RULES}


def us_core_deceased() -> tuple[dict[str, Any], dict[str, Any]]:
    pid = "uscore-woman-deceased"
    patient = {**s.us_core_patient(pid, "female", 111), "deceasedDateTime": "2019-04-02T06:10:00-05:00"}
    resources = [patient,
                 letrozole(pid)]
    return _collection(resources, "US Core shapes: a woman who died in 2019, aged 103, letrozole still "
                                  "active, no DXA or vitamin D: out of scope, no cards"), {
        "hook": "patient-view", **HOOK_AT, "cards": [], "not_cards": ON_AI_RULES}


def us_core_deceased_boolean() -> tuple[dict[str, Any], dict[str, Any]]:
    pid = "uscore-man-deceased"
    resources = [{**s.us_core_patient(pid, "male", 72), "deceasedBoolean": True},
                 anastrozole(pid),
                 s.us_core_lab("o-e2", pid, *E2, 8, "pg/mL",
                               days_ago=30)]
    return _collection(resources, "US Core shapes: a man recorded as deceased (deceasedBoolean, no date), "
                                  "anastrozole active, estradiol 8 pg/mL: out of scope, no cards"), {
        "hook": "patient-view", **HOOK_AT, "cards": [], "not_cards": ON_AI_RULES}


def us_core_girl() -> tuple[dict[str, Any], dict[str, Any]]:
    pid = "uscore-girl-11"
    resources = [s.us_core_patient(pid, "female", 11),
                 letrozole(pid)]
    return _collection(resources, "US Core shapes: an 11-year-old girl on letrozole, no DXA or vitamin D: "
                                  "below adult_min_age, no adult bone advice"), {
        "hook": "patient-view", **HOOK_AT, "cards": [], "not_cards": ON_AI_RULES}


def us_core_man_18() -> tuple[dict[str, Any], dict[str, Any]]:
    pid = "uscore-man-18"
    resources = [s.us_core_patient(pid, "male", 18),
                 anastrozole(pid),
                 s.us_core_lab("o-vitd", pid, *VITD,
                               38, "ng/mL", days_ago=30),
                 s.us_core_lab("o-e2", pid, *E2, 28, "pg/mL",
                               days_ago=30)]
    return _collection(resources, "US Core shapes: a man of exactly 18 on anastrozole, no DXA: in scope, "
                                  "the baseline DXA is advised"), {
        "hook": "patient-view", **HOOK_AT,
        "cards": [{"rule": "dxa-baseline-missing", "indicator": "info", "summary_contains": "No DXA"},
                  CALCIUM_DUE],
        "not_cards": ["low-estradiol-on-ai", "vitamin-d-missing"]}


def us_core_alendronic_acid_text() -> tuple[dict[str, Any], dict[str, Any]]:
    pid = "uscore-woman-hip"
    dxa = [("o-hip-t", "80946-7", "DXA Hip-L T-score BMD", -2.62, "t"),
           ("o-hip-z", "80938-4", "DXA Hip-L Z-score BMD", -1.19, "z"),
           ("o-hip-bmd", "46278-8", "DXA Hip-L ArMass BMD", 0.634, "bmd")]
    resources = [s.us_core_patient(pid, "female", 64),
                 anastrozole(pid),
                 s.medication_request("mr-alendronic", pid, text="Alendronic acid 70 mg tablet, once weekly"),
                 s.us_core_lab("o-vitd", pid, *VITD,
                               44, "ng/mL", days_ago=60),
                 s.us_core_lab("o-ca", pid, *CALCIUM, 9.6, "mg/dL", days_ago=60, reference=(8.5, 10.5)),
                 *(s.us_core_dxa(rid, pid, code, display, value, kind, days_ago=100)
                   for rid, code, display, value, kind in dxa),
                 s.us_core_dxa_report("dr-dxa", pid, [d[0] for d in dxa], days_ago=100)]
    return _collection(resources, "US Core lab and DXA profiles: woman on anastrozole, left hip T-score "
                                  "-2.62, on alendronic acid named in text only, calcium 9.6 mg/dL"), {
        "hook": "patient-view", **HOOK_AT, "cards": [],
        "fired": ["bone-density-osteoporosis-range", "on-bone-protective-therapy"],
        "derived": [{"t": "on_bone_protection", "ingredient": "alendronate",
                     "matched_by": "ingredient name in text"}],
        "not_cards": ["bone-density-low-on-ai", "dxa-baseline-missing", "evaluation-gaps"]}


def sandbox_dxa_cpt() -> tuple[dict[str, Any], dict[str, Any]]:
    pid = "sandbox-woman-dxa"
    order = s.sandbox_draft(anastrozole(pid, "mr-anastrozole-draft"))
    dxa = s.sandbox_draft(s.service_request("sr-dxa", pid, s.CPT, "77080",
                                            "DXA bone density, axial skeleton"))
    resources = [s.us_core_patient(pid, "female", 61), order, dxa,
                 s.us_core_lab("o-vitd", pid, *VITD,
                               35, "ng/mL", days_ago=60)]
    return _collection(resources, "CDS Hooks sandbox draft orders (category as an object, coding [{}]): "
                                  "anastrozole and a DXA ordered as CPT 77080, no DXA on record"), {
        "hook": "order-sign", **HOOK_AT, "cards": [CALCIUM_DUE],
        "fired": ["on-aromatase-inhibitor"],
        "not_cards": ["dxa-baseline-missing", "vitamin-d-missing", "evaluation-gaps"]}


SYNTHEA_CALCIUM = ("49765-1", "Calcium [Mass/volume] in Blood")
TESTOSTERONE = ("2986-8", "Testosterone [Mass/volume] in Serum or Plasma")


def synthea_trt_man_anastrozole_added() -> tuple[dict[str, Any], dict[str, Any]]:
    p = s.SyntheaPatient(1304, sex="male", age=54, given="Roberto77", family="Lind41")
    p.background(20)
    p.medication("835840", "1 ML testosterone cypionate 200 MG/ML Injection", days_ago=700)
    p.medication("199224", "anastrozole 1 MG Oral Tablet", days_ago=120)
    p.lab(*E2, 48.61230498127734, "pg/mL", days_ago=200)
    p.lab(*TESTOSTERONE, 612.3377196610248, "ng/dL", days_ago=60)
    p.lab(*VITD, 39.50917356470411, "ng/mL", days_ago=60)
    p.lab(*SYNTHEA_CALCIUM, 9.381402315934553, "mg/dL", days_ago=60)
    p.dxa_t_score(-0.4123456789012345, days_ago=300)
    bundle = p.bundle("Synthea-shaped: man on testosterone, anastrozole added 120 days ago, his only "
                      "estradiol from before the start; calcium coded 49765-1 as Synthea emits it")
    return bundle, {"hook": "patient-view", **HOOK_AT,
                    "cards": [{"rule": "estradiol-first-check-due", "indicator": "info",
                               "summary_contains": "anastrozole started 120 days ago"},
                              {"rule": "testosterone-against-target", "indicator": "info"}],
                    "not_cards": ["estradiol-monitoring-due", "calcium-monitoring-due", "evaluation-gaps"]}


def synthea_woman_low_calcium_49765_1() -> tuple[dict[str, Any], dict[str, Any]]:
    p = s.SyntheaPatient(1305, sex="female", age=69, given="Ines402", family="Okafor8")
    p.background(28)
    p.medication("199224", "anastrozole 1 MG Oral Tablet", days_ago=500)
    p.lab(*VITD, 33.80147012367823, "ng/mL", days_ago=45)
    p.lab(*SYNTHEA_CALCIUM, 8.123456789012345, "mg/dL", days_ago=45)
    p.dxa_t_score(-0.9345678901234567, days_ago=250)
    bundle = p.bundle("Synthea-shaped: woman on anastrozole, calcium 8.12 mg/dL coded 49765-1 (calcium in "
                      "blood, the code of Synthea's metabolic panels)")
    return bundle, {"hook": "patient-view", **HOOK_AT,
                    "cards": [{"rule": "calcium-low-on-ai", "indicator": "warning",
                               "summary_contains": "8.12"}],
                    "fired": ["low-calcium"],
                    "not_cards": ["calcium-monitoring-due", "evaluation-gaps"]}


def us_core_woman_on_ovarian_suppression() -> tuple[dict[str, Any], dict[str, Any]]:
    pid = "uscore-woman-41-ofs"
    dxa = [("o-spine-z", "85394-5", "DXA Lumbar spine [Z-score] Bone density", -2.4, "z"),
           ("o-spine-bmd", "24966-4", "DXA Lumbar spine [Mass/Area] Bone density", 0.812, "bmd")]
    goserelin = s.medication_request("mr-goserelin", pid, text="Zoladex 3.6 mg implant")
    goserelin["medicationCodeableConcept"]["coding"] = [
        {"system": "http://www.whocc.no/atc", "code": "L02AE03", "display": "goserelin"}]
    goserelin["dosageInstruction"] = [{"text": "3.6 mg subcutaneously every 28 days", "timing": {
        "repeat": {"frequency": 1, "period": 28, "periodUnit": "d"}}}]
    resources = [s.us_core_patient(pid, "female", 41),
                 s.medication_request("mr-exemestane", pid, code="310261",
                                      display="exemestane 25 MG Oral Tablet"),
                 goserelin,
                 s.us_core_lab("o-vitd", pid, *VITD, 42, "ng/mL", days_ago=50),
                 s.us_core_lab("o-ca", pid, *CALCIUM, 9.5, "mg/dL", days_ago=50, reference=(8.5, 10.5)),
                 *(s.us_core_dxa(rid, pid, code, display, value, kind, days_ago=30)
                   for rid, code, display, value, kind in dxa),
                 s.us_core_dxa_report("dr-dxa", pid, [d[0] for d in dxa], days_ago=30)]
    description = ("US Core: a woman of 41 on exemestane with goserelin (ovarian suppression); her DXA "
                   "report gives a spine Z-score of -2.4 and no T-score")
    return _collection(resources, description), {
        "hook": "patient-view", **HOOK_AT,
        "cards": [{"rule": "bone-density-low-on-ai", "indicator": "warning",
                   "summary_contains": "exemestane with ovarian suppression (goserelin)"}],
        "fired": ["menopausal-status-ovarian-suppression", "bone-density-z-score-not-postmenopausal"],
        "not_cards": ["dxa-baseline-missing", "evaluation-gaps", "estradiol-monitoring-due"]}


def _collection(resources: list[dict[str, Any]], description: str) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "collection",
            "meta": {"tag": [{"system": "urn:bone-health-cds:fixture", "code": "realistic",
                              "display": description}]},
            "entry": [{"fullUrl": f"{r['resourceType']}/{r['id']}", "resource": r} for r in resources]}


FIXTURES = {
    "synthea-man-anastrozole-low-estradiol-urn-uuid": synthea_trt_man,
    "synthea-woman-letrozole-osteoporosis-on-alendronic-acid": synthea_woman_on_alendronic_acid,
    "synthea-woman-letrozole-deceased": synthea_deceased,
    "uscore-woman-letrozole-deceased-2019": us_core_deceased,
    "uscore-man-anastrozole-deceased-no-date": us_core_deceased_boolean,
    "uscore-girl-11-letrozole-out-of-scope": us_core_girl,
    "uscore-man-18-anastrozole-in-scope": us_core_man_18,
    "uscore-woman-anastrozole-hip-dxa-alendronic-acid-text": us_core_alendronic_acid_text,
    "sandbox-woman-anastrozole-dxa-ordered-cpt-77080": sandbox_dxa_cpt,
    "synthea-man-trt-anastrozole-added-estradiol-only-before-start": synthea_trt_man_anastrozole_added,
    "synthea-woman-anastrozole-low-calcium-49765-1": synthea_woman_low_calcium_49765_1,
    "uscore-woman-41-exemestane-goserelin-spine-z-score-only": us_core_woman_on_ovarian_suppression,
}


def write() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, build in FIXTURES.items():
        bundle, expected = build()
        (OUT / f"{name}.json").write_text(json.dumps(bundle, indent=1) + "\n", encoding="utf-8")
        (OUT / f"{name}.expected.json").write_text(json.dumps(expected, indent=2) + "\n", encoding="utf-8")
    return len(FIXTURES)


if __name__ == "__main__":
    print(f"wrote {write()} fixtures to {OUT}")
