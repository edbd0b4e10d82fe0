"""The facts stage: latest usable result per analyte and DXA site, statuses, units, medication matching."""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path

import pytest

from cds.decide.facts import Context, build_facts
from cds.fhir import parse as fhir_parse
from cds.rules import pack as rulepack
from cds.toolkit.offline import as_bundle, prefetch_from_record, split_bundle

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import build_fixtures as fx  # noqa: E402

NOW = dt.datetime(2026, 11, 22, tzinfo=dt.UTC)
VS = rulepack.load().valuesets


def facts_for(resources: list[dict], drafts: list[dict] = ()) -> list[dict]:
    models = fhir_parse.parse_all(as_bundle(resources), where="test")
    draft_models = fhir_parse.parse_all(as_bundle(list(drafts)), where="drafts")
    return build_facts(models, draft_models, Context(patient_id=fx.PID, now=NOW), VS).facts


def of(facts: list[dict], t: str) -> list[dict]:
    return [f for f in facts if f["t"] == t]


@pytest.mark.parametrize(
    "status, counted",
    [
        ("final", True),
        ("amended", True),
        ("corrected", True),
        ("preliminary", False),
        ("entered-in-error", False),
        ("cancelled", False),
        ("registered", False),
    ],
)
def test_only_final_amended_corrected_count(status, counted):
    facts = facts_for(
        [
            fx.patient(),
            fx.estradiol(15, days_ago=5, rid="new", status=status),
            fx.estradiol(30, days_ago=90, rid="old"),
        ]
    )
    (lab,) = of(facts, "lab")
    assert lab["value"] == (15 if counted else 30)


def test_latest_per_analyte_is_by_date_not_by_order():
    facts = facts_for(
        [
            fx.patient(),
            fx.estradiol(30, days_ago=5, rid="b"),
            fx.estradiol(12, days_ago=50, rid="a"),
            fx.vitamin_d(40, days_ago=400),
            fx.vitamin_d(50, "nmol/L", days_ago=10, rid="v2"),
        ]
    )
    labs = {f["analyte"]: f for f in of(facts, "lab")}
    assert labs["estradiol"]["value"] == 30 and labs["estradiol"]["age_days"] == 5
    assert labs["vitamin_d"]["value"] == pytest.approx(20.032, abs=1e-3)
    assert labs["vitamin_d"]["reported"] == "50 nmol/L"


def test_pmol_converted_and_unknown_unit_reported_not_guessed():
    facts = facts_for([fx.patient(), fx.estradiol(73, "pmol/L", rid="a"), fx.vitamin_d(30, "ug/dL")])
    (lab,) = of(facts, "lab")
    assert lab["value"] == pytest.approx(19.886, abs=1e-3)
    (problem,) = of(facts, "problem")
    assert "ug/dL" in problem["reason"] and problem["analyte"] == "vitamin_d"


def test_ucum_spellings_of_an_accepted_unit_are_the_same_unit():
    facts = facts_for([fx.patient(), fx.estradiol(15, "ng/L", rid="a"), fx.vitamin_d(12, "ug/L")])
    labs = {f["analyte"]: f for f in of(facts, "lab")}
    assert labs["estradiol"]["value"] == 15 and labs["estradiol"]["shown"] == "15.0 pg/mL"
    assert labs["vitamin_d"]["value"] == 12 and labs["vitamin_d"]["reported"] == "12 ug/L"
    assert not of(facts, "problem")


def test_latest_per_dxa_site_and_change_at_the_same_site_only():
    facts = facts_for(
        [
            fx.patient(),
            fx.dxa("h1", "hip", "bmd", 1.0, 800),
            fx.dxa("h2", "hip", "bmd", 0.95, 20),
            fx.dxa("h2t", "hip", "t_score", -1.2, 20),
            fx.dxa("s1", "lumbar_spine", "t_score", -0.5, 30),
            fx.dxa("h3", "hip", "bmd", 0.5, 5, status="entered-in-error"),
        ]
    )
    scans = {f["site"]: f for f in of(facts, "dxa")}
    assert scans["hip"]["bmd"] == 0.95 and scans["hip"]["t_score"] == -1.2 and scans["hip"]["age_days"] == 20
    (change,) = of(facts, "dxa_change")
    assert change["site"] == "hip" and change["bmd_drop"] == pytest.approx(0.05)
    assert change["bmd_drop_pct"] == pytest.approx(5.0) and "t_drop" not in change


@pytest.mark.parametrize(
    "order, how",
    [
        (fx.med_request("m", rxnorm="84857"), "rxnorm"),
        (fx.med_request("m", atc="L02BG04"), "atc"),
        (fx.med_request("m", text="LETROZOLE 2.5MG TAB"), "ingredient name in text"),
        (
            fx.med_request(
                "m",
                contained={
                    "resourceType": "Medication",
                    "id": "x",
                    "code": {"coding": [{"system": fx.ATC, "code": "L02BG06"}]},
                },
            ),
            "atc (contained Medication)",
        ),
    ],
)
def test_medication_matching_records_how(order, how):
    (med,) = [f for f in of(facts_for([fx.patient(), order]), "medication")]
    assert med["drug_class"] == "aromatase_inhibitor" and med["matched_by"] == how


def test_unresolvable_medication_reference_is_reported():
    facts = facts_for([fx.patient(), fx.med_request("m", medication_ref="Medication/missing")])
    assert not of(facts, "medication")
    assert "could not be identified" in of(facts, "problem")[0]["reason"]


@pytest.mark.parametrize(
    "system, code, kind",
    [
        (fx.SNOMED, "312681000", "dxa_scan"),
        (fx.LOINC, "38267-1", "dxa_scan"),
        (fx.LOINC, "72873-3", "estradiol_test"),
        (fx.LOINC, "2243-4", "estradiol_test"),
        (fx.LOINC, "62292-8", "vitamin_d_test"),
    ],
)
def test_draft_service_requests_map_to_order_kinds(system, code, kind):
    facts = facts_for([fx.patient()], drafts=[fx.service_request("sr", system, code, "x")])
    assert of(facts, "order") == [{"t": "order", "kind": kind, "ref": "ServiceRequest/sr"}]


def test_draft_medication_request_is_an_order_of_its_class():
    facts = facts_for([fx.patient()], drafts=[fx.med_request("d", rxnorm="2418", status="draft")])
    assert {"t": "order", "kind": "vitamin_d_supplement", "ref": "MedicationRequest/d"} in of(facts, "order")


def test_prefetch_keys_get_what_their_templates_ask_for():
    path = (
        Path(__file__).resolve().parent.parent
        / "fixtures/on-aromatase-inhibitor/in-referenced-medication.json"
    )
    _pid, record, _drafts = split_bundle(json.loads(path.read_text()), "order-sign")
    record.append(fx.anastrozole(status="stopped", rid="old-ai"))
    record.append(fx.anastrozole(status="entered-in-error", rid="wrong-ai"))
    prefetch = prefetch_from_record(record)
    assert prefetch["patient"]["resourceType"] == "Patient"

    def codes(key: str) -> set[str]:
        return {c["code"] for e in prefetch[key]["entry"] for c in e["resource"]["code"]["coding"]}

    assert codes("estradiol") == {"2243-4"}
    assert codes("vitaminD") == {"62292-8"}
    assert codes("dxa") == {"38267-1"}
    meds = [(e["resource"]["resourceType"], e["resource"]["id"]) for e in prefetch["medications"]["entry"]]
    assert meds == [
        ("MedicationRequest", "ai-1"),
        ("MedicationRequest", "old-ai"),
        ("Medication", "ana"),
    ]  # the stopped order is asked for (when the course started), the order entered in error is not


def test_bone_turnover_markers_are_kept_as_facts_by_their_loinc_codes():
    """CTX (41171-0) and P1NP (77370-5) become lab facts for the clinician's view; the cholesterol/HDL ratio
    (32309-7, once mistaken here for P1NP) is no bone marker; no rule's condition names either marker."""
    facts = facts_for([fx.patient(), fx.lab("ctx-1", "41171-0", 412, "pg/mL", 30),
                       fx.lab("p1np-1", "77370-5", 48, "ug/L", 30),
                       fx.lab("chol-1", "32309-7", 3.9, "1", 30)])
    labs = {f["analyte"]: f for f in facts if f["t"] == "lab"}
    assert set(labs) == {"ctx", "p1np"}
    assert (labs["ctx"]["value"], labs["p1np"]["value"], labs["p1np"]["unit"]) == (412, 48, "ng/mL")
    rules = (Path(fx.ROOT) / "rules" / "rules").glob("*.yaml")
    assert not [r.name for r in rules if "analyte: ctx" in r.read_text() or "analyte: p1np" in r.read_text()]


def test_a_malformed_authored_on_is_an_unknown_start_not_a_refusal():
    """A sandbox draft's authoredOn in free text: the order is read, its start unknown (no ``started``); any
    other malformed element still refuses the resource."""
    from cds.errors import InvalidFhir

    order = {**fx.med_request("trt-1", rxnorm="835840", display="testosterone cypionate 200 MG/ML"),
             "authoredOn": "the day after tomorrow"}
    meds = [f for f in facts_for([fx.patient(), order]) if f["t"] == "medication"]
    assert meds and all("started" not in f for f in meds)
    with pytest.raises(InvalidFhir, match="invalid FHIR MedicationRequest"):
        facts_for([fx.patient(), {**order, "intent": 7}])
