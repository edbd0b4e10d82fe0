"""Property-based tests of the pure core: random and absurd FHIR data never crash it and never make a card
out of an unusable value."""

from __future__ import annotations

import datetime as dt
import math

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from cds.decide.case import Case
from cds.decide.evaluate import Evaluator
from cds.errors import CdsError
from cds.fhir import parse as fhir_parse
from cds.fhir import units
from cds.fhir.units import to_canonical
from cds.rules import pack as rulepack

PACK = rulepack.load()
units.warm_up()  # the UCUM registry loads once, before any example is timed
EVALUATOR = Evaluator(PACK)
NOW = dt.datetime(2026, 11, 22, tzinfo=dt.UTC)
LAB_CODES = [c for spec in PACK.valuesets["labs"].values() for c in spec["loinc"]]
DXA_CODES = [
    c for site in PACK.valuesets["dxa"].values() for k in ("t_score", "z_score", "bmd") for c in site[k]
]
UNITS = ["pg/mL", "pmol/L", "ng/mL", "nmol/L", "ng/dL", "1", "{T-Score}", "g/cm2", "mg/dL", "", "PG/ML", "%"]

numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.decimals(allow_nan=False, allow_infinity=False, places=3).map(float),
    st.integers(min_value=-10**30, max_value=10**30),
    st.sampled_from([0, -0.0, 1e308, -1e308, 5e-324]),
)
junk = st.one_of(st.none(), st.text(max_size=12), st.booleans(), st.lists(st.integers(), max_size=2),
                 st.dictionaries(st.text(max_size=4), st.integers(), max_size=2))
dates = st.one_of(
    st.dates(min_value=dt.date(1, 1, 1), max_value=dt.date(9999, 12, 31)).map(str),
    st.datetimes(
        min_value=dt.datetime(1900, 1, 1),
        max_value=dt.datetime(2200, 1, 1),
        timezones=st.sampled_from(
            [dt.UTC, dt.timezone(dt.timedelta(hours=-11)), dt.timezone(dt.timedelta(hours=14))]
        ),
    ).map(lambda d: d.isoformat()),
    st.sampled_from(["2026", "2026-02", "not a date", "", "2026-13-45"]),
)

plausible = st.one_of(
    st.floats(min_value=-5, max_value=200, allow_nan=False), st.sampled_from([1e-05, 5e-324, 1e-9])
)
recent = st.dates(min_value=dt.date(2022, 1, 1), max_value=dt.date(2026, 11, 22)).map(str)


@given(value=numbers, unit=st.sampled_from(UNITS), analyte=st.sampled_from(sorted(PACK.valuesets["labs"])))
def test_unit_conversion_never_crashes_and_never_returns_an_unusable_value(value, unit, analyte):
    spec = PACK.valuesets["labs"][analyte]
    converted, why = to_canonical(value, unit, spec)
    if converted is None:
        assert why
    else:
        assert math.isfinite(converted) and converted >= 0
        assert unit in spec["units"]


VALID_PAIRS = (
    [(c, u) for spec in PACK.valuesets["labs"].values() for c in spec["loinc"] for u in spec["units"]]
    + [(c, "1") for site in PACK.valuesets["dxa"].values() for c in site["t_score"] + site["z_score"]]
    + [(c, "g/cm2") for site in PACK.valuesets["dxa"].values() for c in site["bmd"]]
)


def observation(code_unit, value, date, status, subject):
    code, unit = code_unit
    resource = {"resourceType": "Observation", "id": "o1", "status": status,
                "code": {"coding": [{"system": "http://loinc.org", "code": code}]}}
    if subject is not None:
        resource["subject"] = {"reference": subject}
    if date is not None:
        resource["effectiveDateTime"] = date
    if value is not None or unit is not None:
        quantity = {}
        if value is not None:
            quantity["value"] = value
        if unit is not None:
            quantity.update(unit=unit, code=unit, system="http://unitsofmeasure.org")
        resource["valueQuantity"] = quantity
    return resource


observations = st.builds(
    observation,
    code_unit=st.one_of(
        st.sampled_from(VALID_PAIRS),
        st.sampled_from(VALID_PAIRS),
        st.tuples(
            st.sampled_from(LAB_CODES + DXA_CODES + ["1234-5"]),
            st.one_of(st.sampled_from(UNITS), st.none(), st.text(max_size=6)),
        ),
    ),
    value=st.one_of(plausible, plausible, plausible, numbers, junk),
    date=st.one_of(recent, recent, dates, st.none(), junk),
    status=st.one_of(
        st.just("final"),
        st.sampled_from(
            ["final", "amended", "corrected", "preliminary", "entered-in-error", "cancelled", "x"]
        ),
    ),
    subject=st.sampled_from(["Patient/p1", "Patient/p2", None, "p1"]),
)
patients = st.builds(
    lambda gender, birth: {
        k: v
        for k, v in {"resourceType": "Patient", "id": "p1", "gender": gender, "birthDate": birth}.items()
        if v is not None
    },
    gender=st.sampled_from(["male", "female", "other", "unknown", None]),
    birth=st.one_of(
        st.none(), st.dates(min_value=dt.date(1880, 1, 1), max_value=dt.date(2100, 1, 1)).map(str)
    ),
)
AI = {"resourceType": "MedicationRequest", "id": "m1", "status": "active", "intent": "order",
      "subject": {"reference": "Patient/p1"},
      "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                                                "code": "84857"}]}}


def parse_or_skip(raw):
    try:
        return fhir_parse.parse_resource(raw, where="test")
    except CdsError:
        return None


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(patient=patients, raws=st.lists(observations, max_size=8))
def test_random_records_never_crash_and_cards_use_only_usable_values(patient, raws):
    models = [m for m in (parse_or_skip(r) for r in [patient, AI, *raws]) if m is not None]
    evaluation = EVALUATOR.evaluate(Case(hook="patient-view", patient_id="p1", now=NOW,
                                         context={"patientId": "p1"}, resources=tuple(models)))
    for fact in evaluation.facts:
        if fact["t"] == "lab":
            assert isinstance(fact["value"], float) and math.isfinite(fact["value"]) and fact["value"] >= 0
            assert fact["age_days"] >= -1
        if fact["t"] in ("dxa", "dxa_change"):
            for key in ("t_score", "z_score", "bmd", "t_drop", "bmd_drop"):
                if fact.get(key) is not None:
                    assert math.isfinite(fact[key])
    for fired in evaluation.fired:
        for fact in fired["facts"].values():
            if fact.get("t") == "lab":
                assert math.isfinite(fact["value"])
    event("usable lab" if any(f["t"] == "lab" for f in evaluation.facts) else "no usable lab")
    event("card from a rule on results" if any(c["source"]["topic"]["code"] in ("low-estradiol-on-ai",
                                                                                "falling-bone-density")
                                                for c in evaluation.cards) else "no result card")
    for card in evaluation.cards:
        assert 0 < len(card["summary"]) < 140
        assert "(unknown)" not in card["summary"]


clean_observations = st.builds(
    observation, code_unit=st.sampled_from(VALID_PAIRS), value=plausible, date=recent,
    status=st.sampled_from(["final", "amended", "corrected", "preliminary"]), subject=st.just("Patient/p1"))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(gender=st.sampled_from(["male", "female", "unknown"]),
       raws=st.lists(clean_observations, min_size=1, max_size=10))
def test_well_formed_records_give_cards_only_from_counted_results(gender, raws):
    ids = iter(range(10_000))
    raws = [{**r, "id": f"o{next(ids)}"} for r in raws]
    patient = {"resourceType": "Patient", "id": "p1", "gender": gender, "birthDate": "1960-01-01"}
    models = [fhir_parse.parse_resource(r, where="test") for r in [patient, AI, *raws]]
    evaluation = EVALUATOR.evaluate(Case(hook="patient-view", patient_id="p1", now=NOW,
                                         context={"patientId": "p1"}, resources=tuple(models)))
    counted = {f"Observation/{r['id']}" for r in raws if r["status"] != "preliminary"}
    labs = [f for f in evaluation.facts if f["t"] == "lab"]
    event(f"{len(evaluation.cards)} card(s)")
    for lab in labs:
        assert lab["ref"] in counted
        assert lab["value"] >= 0
    rules = {c["source"]["topic"]["code"] for c in evaluation.cards}
    if "low-estradiol-on-ai" in rules:
        assert gender == "male"
        assert any(
            f["analyte"] == "estradiol" and f["value"] < PACK.threshold("estradiol_low_pg_ml") for f in labs
        )
