"""Value sets at product level: codes with their provenance, INN/USAN/brand names, the coverage listing."""

from __future__ import annotations

import datetime as dt

import pytest
from builders import RXNORM, hook_body, obs, patient

from cds.cli import main
from cds.decide.facts import Context, build_facts
from cds.fhir import parse as fhir_parse
from cds.rules import pack as rulepack
from cds.rules.coverage import coverage_text, missing_sources

PACK = rulepack.load()
NOW = dt.datetime(2026, 11, 22, 12, tzinfo=dt.UTC)


def medication_facts(concept):
    order = {"resourceType": "MedicationRequest", "id": "mr", "status": "active", "intent": "order",
             "subject": {"reference": "Patient/p1"}, "medicationCodeableConcept": concept}
    model = fhir_parse.parse_resource(order, where="test")
    facts = build_facts([model], [], Context(patient_id="p1", now=NOW), PACK.valuesets).facts
    return [f for f in facts if f["t"] == "medication"]


def test_every_code_says_where_it_was_verified():
    assert missing_sources(PACK.valuesets) == []
    for spec in PACK.valuesets["medications"].values():
        for ingredient, codes in spec["ingredients"].items():
            for system in ("rxnorm", "atc"):
                for code, meta in codes[system].items():
                    assert meta.get("source"), (ingredient, code)
                    assert meta.get("verified", True) in (True, False)


def test_unverified_codes_of_the_reference_are_marked():
    rx = {code: meta for spec in PACK.valuesets["medications"].values()
          for codes in spec["ingredients"].values() for code, meta in codes["rxnorm"].items()}
    for code in ("10379", "46041", "73056", "993449", "72143", "2418"):  # "(unverified)" in the reference
        assert rx[code]["verified"] is False, code
    assert rx["904419"].get("verified", True) is True


@pytest.mark.parametrize(("concept", "ingredient", "matched_by"), [
    ({"coding": [{"system": RXNORM, "code": "904419", "display": "Alendronic acid 10 MG Oral Tablet"}]},
     "alendronate", "rxnorm"),
    ({"text": "Alendronic acid 70 mg tablet weekly"}, "alendronate", "ingredient name in text"),
    ({"coding": [{"system": RXNORM, "code": "999999", "display": "Ibandronic acid 150 MG Oral Tablet"}]},
     "ibandronate", "ingredient name in text"),
    ({"text": "Zoledronate 5 mg/100 mL infusion"}, "zoledronic acid", "ingredient name in text"),
    ({"text": "Reclast 5 MG/100ML"}, "zoledronic acid", "ingredient name in text"),
    ({"text": "PROLIA 60 mg syringe"}, "denosumab", "ingredient name in text"),
    ({"coding": [{"system": "http://www.whocc.no/atc", "code": "M05BA06"}]}, "ibandronate", "atc"),
])
def test_bone_protective_products_are_recognised(concept, ingredient, matched_by):
    found = [f for f in medication_facts(concept) if f["drug_class"] == "bone_protective"]
    assert [(f["ingredient"], f["matched_by"]) for f in found] == [(ingredient, matched_by)]
    if matched_by == "ingredient name in text":
        assert found[0]["code"] == "" and found[0]["matched_name"]


@pytest.mark.parametrize("text", ["methyltestosterone 10 mg", "tamoxifen 20 mg", "anastrazole (misspelt)"])
def test_names_match_whole_words_only(text):
    assert medication_facts({"text": text}) == []


def test_text_colecalciferol_inn_is_vitamin_d():
    found = medication_facts({"text": "Colecalciferol 1000 IU capsule"})
    assert [(f["drug_class"], f["ingredient"]) for f in found] == [
        ("vitamin_d_supplement", "cholecalciferol")]


def test_a_patient_on_alendronic_acid_is_not_told_to_start_therapy(call):
    alendronic = {"resourceType": "MedicationRequest", "id": "mr-aln", "status": "active", "intent": "order",
                  "subject": {"reference": "Patient/p1"},
                  "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": "904419",
                                                            "display": "Alendronic acid 10 MG Oral Tablet"}]}}
    anastrozole = {**alendronic, "id": "mr-ai",
                   "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": "199224"}]}}
    scans = [obs("38265-5", -2.7776543210987654, "{T-score}", "2026-06-01"), obs("62292-8", 35, "ng/mL",
                                                                                  "2026-10-01")]
    body = hook_body("patient-view", record=[patient(gender="female", birth="1958-01-01"), anastrozole,
                                             alendronic, *scans])
    body["prefetch"]["dxa"] = body["prefetch"]["estradiol"]
    body["prefetch"]["estradiol"] = {"resourceType": "Bundle", "type": "searchset", "entry": []}
    response = call(body)
    assert response.status_code == 200
    rules = {c["source"]["topic"]["code"] for c in response.get_json()["cards"]}
    assert "bone-density-low-on-ai" not in rules


def test_coverage_lists_sets_codes_names_and_verification(capsys):
    text = coverage_text(PACK)
    assert "medications.bone_protective (Bone-protective therapy)" in text
    assert "904419 SCD Alendronic acid 10 MG Oral Tablet" in text
    assert "alendronate, alendronic acid" in text
    assert "cpt: 77080" in text and "snomed: 312681000" in text and "loinc: 83311-1" in text
    assert "rxnorm: none (matched by ATC and name)" in text  # ibandronate: no RxNorm code verified
    assert "UNVERIFIED: clinical reference (Codes), marked unverified" in text
    assert text.rstrip().splitlines()[-1].endswith("0 without a source")
    assert main(["rules", "valuesets"]) == 0
    assert capsys.readouterr().out.strip() == text


def test_coverage_fails_a_code_without_a_source(tmp_path, capsys):
    import shutil

    import yaml

    shutil.copytree(rulepack.DEFAULT_DIR, tmp_path / "rules")
    path = tmp_path / "rules" / "valuesets.yaml"
    data = yaml.safe_load(path.read_text())
    data["medications"]["bone_protective"]["ingredients"]["raloxifene"]["rxnorm"]["123"] = {"tty": "SCD"}
    path.write_text(yaml.safe_dump(data))
    assert main(["rules", "valuesets", str(tmp_path / "rules")]) == 1
    assert "medications.bone_protective.raloxifene: rxnorm 123 has no source" in capsys.readouterr().out
