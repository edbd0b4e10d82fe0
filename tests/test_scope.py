"""Out of scope: deceased patients and patients under ``adult_min_age`` get no advice; the audit says why."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

import pytest
import yaml
from builders import hook_body, med, obs, patient
from support import NOW

from cds import create_app
from cds.cli import main
from cds.ledger.memory import MemoryLedger
from cds.ledger.port import CallRecord
from cds.ledger.record import build_content
from cds.rules import pack as rulepack

E2, VITD = "2243-4", "62292-8"
RECENT = "2026-10-01"


def record_for(*, birth="1960-05-01", **patient_fields):
    return [{**patient(birth=birth), **patient_fields}, med(), obs(E2, 8, "pg/mL", RECENT)]


@pytest.fixture
def audited(app):
    sink = MemoryLedger()
    app.extensions["cds.service"] = dataclasses.replace(app.extensions["cds.service"], audit=sink)
    return sink


def cards_of(response):
    assert response.status_code == 200, response.get_json()
    return response.get_json()["cards"]


@pytest.mark.parametrize("fields", [{"deceasedBoolean": True}, {"deceasedDateTime": "2024-03-01T10:00:00Z"},
                                    {"deceasedDateTime": "2024"}])
def test_a_deceased_patient_gets_no_cards_and_the_record_says_why(call, audited, fields):
    assert cards_of(call(hook_body("patient-view", record=record_for(**fields)))) == []
    evaluation = audited.calls[-1].evaluation
    assert evaluation.out_of_scope["code"] == "deceased"
    assert evaluation.fired == [] and evaluation.not_evaluated == []
    content = build_content(audited.calls[-1], rulepack.load(), b"secret")
    assert content["outOfScope"]["code"] == "deceased" and content["cards"] == []


def test_deceased_false_is_in_scope(call):
    cards = cards_of(call(hook_body("patient-view", record=record_for(deceasedBoolean=False))))
    assert "low-estradiol-on-ai" in {c["source"]["topic"]["code"] for c in cards}


def test_age_is_counted_to_the_date_of_death(call, audited):
    record = record_for(birth="1920-06-15", deceasedDateTime="2019-06-14")
    call(hook_body("patient-view", record=record))
    facts = audited.calls[-1].evaluation.facts
    person = next(f for f in facts if f["t"] == "patient")
    assert person["age"] == 98 and person["deceased_date"] == "2019-06-14"
    call(hook_body("patient-view", record=record_for(birth="1920-06-15", deceasedBoolean=True)))
    person = next(f for f in audited.calls[-1].evaluation.facts if f["t"] == "patient")
    assert "age" not in person  # died on an unknown date: the age is unknown, never counted to today


def born(age: int) -> str:
    return (NOW.date() - dt.timedelta(days=10)).replace(year=NOW.year - age).isoformat()


@pytest.mark.parametrize(("age", "advised"), [(11, False), (17, False), (18, True), (40, True)])
def test_no_adult_bone_advice_below_the_minimum_age(call, audited, age, advised):
    record = [patient(birth=born(age)), med()]  # on an AI, no DXA, no vitamin D
    rules = {c["source"]["topic"]["code"] for c in cards_of(call(hook_body("patient-view", record=record)))}
    assert ("dxa-baseline-missing" in rules) is advised
    assert ("vitamin-d-missing" in rules) is advised
    scope = audited.calls[-1].evaluation.out_of_scope
    assert (scope is None) is advised
    if not advised:
        assert scope["code"] == "below_min_age" and f"is {age}" in scope["reason"]


def test_the_minimum_age_is_a_site_threshold(tmp_path, auth_config, authed_client):
    site = tmp_path / "site.yaml"
    site.write_text(yaml.safe_dump({"thresholds": {"adult_min_age": 16}}))
    app = create_app({**auth_config, "NOW": NOW, "SITE_CONFIG": str(site)})
    body = hook_body("patient-view", record=[patient(birth=born(17)), med()])
    response = authed_client(app).post("/cds-services/bone-health-patient-view", json=body)
    assert "dxa-baseline-missing" in {c["source"]["topic"]["code"] for c in cards_of(response)}


def test_cds_evaluate_shows_out_of_scope(tmp_path, capsys):
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": r} for r in [patient(birth=born(12)), med()]]}
    path = tmp_path / "child.json"
    path.write_text(json.dumps(bundle))
    assert main(["evaluate", str(path), "--at", "2026-11-22"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("0 card(s)") and "out of scope (below_min_age): the patient is 12" in out
    assert main(["evaluate", str(path), "--at", "2026-11-22", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["out_of_scope"]["code"] == "below_min_age"


def test_replaying_stored_facts_keeps_the_scope(call, audited):
    from cds.decide.evaluate import Evaluator

    call(hook_body("patient-view", record=record_for(deceasedBoolean=True)))
    stored = audited.calls[-1].evaluation.facts
    again = Evaluator(rulepack.load()).from_facts(stored, context={"patientId": "pk"}, drafts_by_ref={})
    assert again.cards == [] and again.out_of_scope["code"] == "deceased"
    assert isinstance(audited.calls[-1], CallRecord)
