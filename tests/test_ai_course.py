"""The course of an aromatase inhibitor, by class of case (generated records through the whole hook call):

* a man's first estradiol check is due from ``estradiol_first_check_days`` after the course started (the
  earliest authoredOn or dispense validity start of any AI order on record) until a result is dated since
  the start; before it nothing is asked for; after the first check, yearly;
* a woman on any AI with any GnRH agonist, or younger than ``premenopausal_age_limit``, whose DXA gives only
  a Z-score, is read by the Z-score; the card names the AI with ovarian suppression when that is the reason;
* a SERM is never bone protection for a woman on an AI, and no card suggests one; for a man it still is;
* calcium coded LOINC 49765-1 is total calcium.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cds.call.service import HookService
from cds.decide.evaluate import Evaluator
from cds.hooks.services import discovery_document
from cds.rules import pack as rulepack
from cds.toolkit.request import build_hook_request, choose_service

PACK = rulepack.load()
SERVICE = HookService(Evaluator(PACK))
AT = dt.date(2026, 11, 22)
NOW = dt.datetime(2026, 11, 22, 12, tzinfo=dt.UTC)
VS = PACK.valuesets
SYSTEMS = VS["systems"]
FIRST = int(PACK.threshold("estradiol_first_check_days"))
YEARLY = int(PACK.threshold("estradiol_interval_days"))
AGE_LIMIT = int(PACK.threshold("premenopausal_age_limit"))
Z_LOW = PACK.threshold("z_score_below_expected")
UCUM = "http://unitsofmeasure.org"
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def ingredients(cls: str) -> dict[str, Any]:
    return VS["medications"][cls]["ingredients"]


def coded(cls: str) -> st.SearchStrategy[tuple[str, dict[str, Any]]]:
    """(ingredient, medicationCodeableConcept) by any RxNorm or ATC code of the class, or by a name only."""
    options = []
    for name, spec in ingredients(cls).items():
        for system in ("rxnorm", "atc"):
            for code in spec.get(system) or {}:
                options.append((name, {"coding": [{"system": SYSTEMS[system], "code": code}]}))
        for text in spec.get("names") or []:
            options.append((name, {"text": f"{text} (as prescribed)"}))
    return st.sampled_from(options)


def ago(days: int) -> str:
    return (AT - dt.timedelta(days=days)).isoformat()


def order(rid: str, concept: dict[str, Any], *, authored: int | None = 400, status: str = "active",
          validity: int | None = None) -> dict[str, Any]:
    mr: dict[str, Any] = {"resourceType": "MedicationRequest", "id": rid, "status": status, "intent": "order",
                          "subject": {"reference": "Patient/p1"}, "medicationCodeableConcept": concept}
    if authored is not None:
        mr["authoredOn"] = f"{ago(authored)}T09:15:00+01:00"
    if validity is not None:
        mr["dispenseRequest"] = {"validityPeriod": {"start": ago(validity)}}
    return mr


def lab(rid: str, loinc: str, value: float, unit: str, days: int) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": rid, "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                      "code": "laboratory"}]}],
            "code": {"coding": [{"system": SYSTEMS["loinc"], "code": loinc}]},
            "subject": {"reference": "Patient/p1"}, "effectiveDateTime": f"{ago(days)}T08:30:00Z",
            "valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": unit}}


def dxa(rid: str, loinc: str, value: float, days: int = 40) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": rid, "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                      "code": "imaging"}]}],
            "code": {"coding": [{"system": SYSTEMS["loinc"], "code": loinc}]},
            "subject": {"reference": "Patient/p1"}, "effectiveDateTime": f"{ago(days)}T10:00:00Z",
            "valueQuantity": {"value": value, "unit": "1", "system": UCUM, "code": "1"}}


def patient(sex: str, age: int) -> dict[str, Any]:
    born = (AT - dt.timedelta(days=30)).replace(year=AT.year - age)
    return {"resourceType": "Patient", "id": "p1", "gender": sex, "birthDate": born.isoformat()}


def cards_for(resources: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The cards (by rule) the service answers on patient-view for this record, as ``cds replay`` sends it."""
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in resources]}
    service = choose_service(discovery_document(PACK), "patient-view", "bone-health-patient-view")
    body = build_hook_request(bundle, "patient-view", service)
    answer = SERVICE.call("bone-health-patient-view", body, now=NOW)
    return {c["source"]["topic"]["code"]: c for c in answer["cards"]}


NORMAL = [lab("vitd", "62292-8", 38, "ng/mL", 60), lab("ca", "17861-6", 9.4, "mg/dL", 60),
          dxa("dxa-bg", "38267-1", -0.4, 200)]


# -- the first estradiol check -------------------------------------------------------------------------------


@SETTINGS
@given(ai=coded("aromatase_inhibitor"), authored=st.integers(0, 600),
       earlier_validity=st.one_of(st.none(), st.integers(1, 120)),
       stopped_before=st.one_of(st.none(), st.integers(1, 300)),
       e2_days=st.one_of(st.none(), st.integers(0, 900)))
def test_the_first_estradiol_check_follows_the_course_start(ai, authored, earlier_validity, stopped_before,
                                                            e2_days):
    name, concept = ai
    orders = [order("ai", concept, authored=authored,
                    validity=authored + earlier_validity if earlier_validity else None)]
    course = authored + (earlier_validity or 0)
    if stopped_before:  # an earlier course of the same class, stopped: the course began with it
        orders.append(order("ai-old", concept, authored=authored + stopped_before, status="stopped"))
        course = max(course, authored + stopped_before)
    e2 = [lab("e2", "2243-4", 31, "pg/mL", e2_days)] if e2_days is not None else []
    cards = cards_for([patient("male", 61), *orders, *e2, *NORMAL])
    since_start = e2_days is not None and e2_days <= course
    first = FIRST <= course <= YEARLY and not since_start
    yearly = course >= FIRST and (e2_days is None or e2_days > YEARLY) and not first
    assert ("estradiol-first-check-due" in cards) == first, (course, e2_days, sorted(cards))
    assert ("estradiol-monitoring-due" in cards) == yearly, (course, e2_days, sorted(cards))
    if first:
        summary = cards["estradiol-first-check-due"]["summary"]
        assert f"started {course} days ago ({ago(course)})" in summary and name in summary


@SETTINGS
@given(ai=coded("aromatase_inhibitor"), authored=st.integers(0, 600), age=st.integers(18, 90))
def test_women_are_never_asked_for_estradiol(ai, authored, age):
    cards = cards_for([patient("female", age), order("ai", ai[1], authored=authored), *NORMAL])
    assert not {"estradiol-first-check-due", "estradiol-monitoring-due"} & set(cards)


# -- menopausal status and the Z-score -----------------------------------------------------------------------

Z_SITES = {spec["title"]: spec["z_score"][0] for spec in VS["dxa"].values() if spec.get("z_score")}


@SETTINGS
@given(ai=coded("aromatase_inhibitor"), ofs=coded("ovarian_suppression"), age=st.integers(18, 90),
       z=st.decimals(-5, 1, places=1), site=st.sampled_from(sorted(Z_SITES)),
       ofs_status=st.sampled_from(["active", "on-hold", "stopped", "completed", None]))
def test_a_z_score_only_report_is_read_for_a_woman_not_read_as_postmenopausal(ai, ofs, age, z, site,
                                                                              ofs_status):
    record = [patient("female", age), order("ai", ai[1]), dxa("z", Z_SITES[site], float(z)), *NORMAL[:2]]
    if ofs_status:
        record.append(order("ofs", ofs[1], status=ofs_status))
    on_ofs = ofs_status in ("active", "on-hold")  # (a draft is among the draft orders: order hooks only)
    read = (on_ofs or age < AGE_LIMIT) and float(z) <= Z_LOW
    cards = cards_for(record)
    card = cards.get("bone-density-low-on-ai")
    assert (card is not None) == read, (age, z, ofs_status, sorted(cards))
    if card is None:
        return
    assert f"Z-score {float(z):.1f} at the {site}" in card["summary"]
    assert "below the expected range for age" in card["summary"]
    named = f"{ai[0]} with ovarian suppression ({ofs[0]})"
    assert (named in card["summary"] + card["detail"]) == on_ofs
    assert "raloxifene" not in card["detail"] and "tamoxifen" not in card["detail"]


@SETTINGS
@given(ai=coded("aromatase_inhibitor"), ofs=coded("ovarian_suppression"), age=st.integers(18, 49),
       t=st.decimals("-1.9", 1, places=1), z=st.decimals(-5, "-2.0", places=1))
def test_t_scores_keep_the_hadji_advice_beside_a_low_z_score(ai, ofs, age, t, z):
    """A report with a T-score at the site: the women's T-score advice only (no T below -2.0 here: no
    low-density card), whatever the Z-score beside it."""
    record = [patient("female", age), order("ai", ai[1]), order("ofs", ofs[1]), *NORMAL[:2],
              dxa("t", "38267-1", float(t)), dxa("z", "85394-5", float(z))]
    assert "bone-density-low-on-ai" not in cards_for(record)


@SETTINGS
@given(ai=coded("aromatase_inhibitor"), ofs=coded("ovarian_suppression"), age=st.integers(18, 90),
       t=st.decimals(-5, "-2.1", places=1), z=st.one_of(st.none(), st.decimals(-5, 1, places=1)))
def test_the_hadji_card_names_ovarian_suppression_when_she_is_on_it(ai, ofs, age, t, z):
    record = [patient("female", age), order("ai", ai[1]), order("ofs", ofs[1]), *NORMAL[:2],
              dxa("t", "38267-1", float(t))]
    if z is not None:
        record.append(dxa("z", "85394-5", float(z)))
    card = cards_for(record)["bone-density-low-on-ai"]
    assert f"T-score {float(t):.1f} at the Lumbar spine" in card["summary"]
    assert f"{ai[0]} with ovarian suppression ({ofs[0]})" in card["summary"]
    assert "Hadji 2017" in card["detail"]


# -- SERMs ---------------------------------------------------------------------------------------------------

SERMS = [("raloxifene", {"coding": [{"system": SYSTEMS["rxnorm"], "code": c}]})
         for c in ingredients("bone_protective")["raloxifene"]["rxnorm"]]
SERMS += [("raloxifene", {"coding": [{"system": SYSTEMS["atc"], "code": "G03XC01"}]}),
          ("raloxifene", {"text": "Evista 60 mg tablet"}),
          ("tamoxifen", {"coding": [{"system": SYSTEMS["rxnorm"], "code": "10324"}],
                         "text": "tamoxifen 20 mg"})]


@SETTINGS
@given(ai=coded("aromatase_inhibitor"), serm=st.sampled_from(SERMS), age=st.integers(50, 95),
       t=st.decimals(-5, "-2.6", places=1), sex=st.sampled_from(["female", "male"]))
def test_a_serm_is_bone_protection_for_a_man_never_for_a_woman_on_an_ai(ai, serm, age, t, sex):
    record = [patient(sex, age), order("ai", ai[1]), order("serm", serm[1]), *NORMAL[:2],
              dxa("t", "38267-1", float(t))]
    cards = cards_for(record)
    counted_for_a_man = sex == "male" and serm[0] == "raloxifene"
    assert ("bone-density-low-on-ai" in cards) == (not counted_for_a_man), (sex, serm, sorted(cards))
    for card in cards.values():  # no suggestion ever orders a SERM
        offered = json.dumps(card.get("suggestions", [])).lower()
        assert not any(word in offered for word in ("raloxifene", "tamoxifen", "evista", "g03xc01", "72143"))
    if sex == "female":
        assert "not a bone-protective option" in cards["bone-density-low-on-ai"]["detail"]


# -- calcium as Synthea codes it -----------------------------------------------------------------------------


@SETTINGS
@given(value=st.floats(6.0, 11.0, allow_nan=False), days=st.integers(0, 400))
def test_calcium_in_blood_49765_1_is_read_as_total_calcium(value, days):
    record = [patient("female", 66), order("ai", {"text": "letrozole 2.5 mg"}), NORMAL[0], NORMAL[2],
              lab("ca", "49765-1", value, "mg/dL", days)]
    cards = cards_for(record)
    assert ("calcium-monitoring-due" in cards) == (days > 365)
    assert ("calcium-low-on-ai" in cards) == (round(value, 4) < 8.5), (value, sorted(cards))
