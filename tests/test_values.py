"""Values and units as laboratories and DXA systems send them: UCUM spellings, limits, text results."""

from __future__ import annotations

import pytest
import yaml

from cds.errors import RulePackError
from cds.fhir import parse as fhir_parse
from cds.fhir import units
from cds.fhir.values import read
from cds.rules import pack as rulepack

PACK = rulepack.load()
ALIASES = PACK.valuesets["unit_text_aliases"]


def obs(**value) -> object:
    return fhir_parse.parse_resource(
        {"resourceType": "Observation", "id": "o", "status": "final", "code": {"text": "x"}, **value},
        where="test",
    )


@pytest.mark.parametrize(
    "a, b",
    [
        ("ng/mL", "ug/L"),
        ("pg/mL", "ng/L"),
        ("g/cm2", "g.cm-2"),
        ("ng/mL", "ng/ml"),
        ("nmol/L", "umol/m3"),
        ("1", "{T-Score}"),
    ],
)
def test_ucum_spellings_of_one_unit_are_the_same(a, b):
    assert units.same_unit(a, b)


@pytest.mark.parametrize(
    "a, b",
    [
        ("ng/mL", "ng/dL"),
        ("pg/mL", "pmol/L"),
        ("g/cm2", "g/cm-2"),
        ("1", "%"),
        ("g/cm2", "mg/cm2"),
        ("ng/mL", "mcg/L"),
        ("pg/mL", "<img src=x>"),
    ],
)
def test_different_or_invalid_units_are_not_the_same(a, b):
    assert not units.same_unit(a, b)


def test_text_units_take_their_usual_aliases_and_are_then_ucum():
    assert units.from_text("mcg/L", ALIASES) == "ug/L"
    assert units.from_text("µg/L", ALIASES) == "ug/L"
    assert units.same_unit(units.from_text("g/cm²", ALIASES), "g/cm2")
    converted, why = units.to_canonical(
        12, units.from_text("mcg/L", ALIASES), PACK.valuesets["labs"]["vitamin_d"]
    )
    assert converted == 12 and not why


def test_an_accepted_unit_keeps_its_cited_factor():
    spec = PACK.valuesets["labs"]["estradiol"]
    assert units.to_canonical(36.71, "pmol/L", spec)[0] == pytest.approx(10.0, abs=1e-3)
    assert units.to_canonical(10, "ng/L", spec) == (10, "")
    value, why = units.to_canonical(1.5, "ng/dL", spec)
    assert value is None and "ng/dL" in why


@pytest.mark.parametrize(
    "value, expected",
    [
        (
            {
                "valueQuantity": {
                    "value": 20,
                    "comparator": "<",
                    "unit": "pg/mL",
                    "system": "http://unitsofmeasure.org",
                    "code": "pg/mL",
                }
            },
            ("<", 20.0, "pg/mL", "<20 pg/mL"),
        ),
        ({"valueString": "<5 pg/mL"}, ("<", 5.0, "pg/mL", "<5 pg/mL")),
        ({"valueString": " > 100 ng/mL"}, (">", 100.0, "ng/mL", ">100 ng/mL")),
        ({"valueString": "≤ 5 pg/mL"}, ("<=", 5.0, "pg/mL", "<=5 pg/mL")),
        ({"valueString": "14.20 pg/mL"}, ("", 14.2, "pg/mL", "14.20 pg/mL")),
        ({"valueQuantity": {"value": 12, "unit": "mcg/L"}}, ("", 12.0, "ug/L", "12 mcg/L")),
    ],
)
def test_values_as_reported(value, expected):
    reading = read(obs(**value), ALIASES)
    assert not reading.why
    assert (reading.comparator, reading.number, reading.unit, reading.reported) == expected


@pytest.mark.parametrize(
    "value, why",
    [
        ({"dataAbsentReason": {"text": "Specimen haemolysed"}}, "Specimen haemolysed"),
        ({"valueString": "Haemolysed"}, "reported as text 'Haemolysed'"),
        ({}, "no numeric value"),
        ({"valueString": "<5"}, None),  # no unit anywhere: read, and the unit check then refuses it
    ],
)
def test_values_that_cannot_be_used_say_why(value, why):
    reading = read(obs(**value), ALIASES)
    if why is None:
        assert reading.unit == "" and reading.number == 5
    else:
        assert reading.number is None and why in reading.why


def test_an_unknown_site_unit_switch_stops_the_pack_loading(tmp_path):
    site = tmp_path / "site.yaml"
    site.write_text(yaml.safe_dump({"units": {"read_mg_as_g": True}}))
    with pytest.raises(RulePackError) as error:
        rulepack.load(site_config=site)
    assert "read_mg_as_g" in " ".join(error.value.details)
    site.write_text(yaml.safe_dump({"units": {"read_g_cm-2_as_g_cm2": "yes"}}))
    with pytest.raises(RulePackError) as error:
        rulepack.load(site_config=site)
    assert "must be true or false" in " ".join(error.value.details)
    site.write_text(yaml.safe_dump({"units": {"read_g_cm-2_as_g_cm2": True}}))
    assert rulepack.load(site_config=site).valuesets["site_units"] == {"read_g_cm-2_as_g_cm2": True}


def test_stored_lab_facts_without_shown_still_read_as_a_number():
    from cds.decide.evaluate import Evaluator

    facts = [
        {"t": "patient", "sex": "male", "age": 60},
        {"t": "medication", "ref": "MedicationRequest/a", "drug_class": "aromatase_inhibitor",
         "ingredient": "anastrozole", "status": "active", "draft": False, "selected": False,
         "matched_by": "rxnorm", "code": "84857"},
        {"t": "lab", "analyte": "estradiol", "value": 12.0, "unit": "pg/mL", "reported": "12 pg/mL",
         "date": "2026-10-01", "age_days": 52, "ref": "Observation/e"},
    ]
    evaluation = Evaluator(PACK).from_facts(facts, context={"patientId": "p"}, drafts_by_ref={})
    (low,) = [c for c in evaluation.cards if c["source"]["topic"]["code"] == "low-estradiol-on-ai"]
    assert "Low estradiol (12.0 pg/mL)" in low["summary"]
