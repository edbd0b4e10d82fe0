"""Each hook end to end, and the three foundation rules firing and not firing at their boundaries."""

from __future__ import annotations

import pytest
from builders import hook_body, med, obs, patient
from spec_checks import check_response, rules_of

E2_MASS, E2_MOLAR, VITD, SPINE_T = "2243-4", "14715-7", "62292-8", "38267-1"
RECENT = "2026-10-01"
VITD_OK = obs(VITD, 35, "ng/mL", RECENT)


def man_on_ai(*extra, gender="male"):
    return [patient(gender=gender), med(), VITD_OK, *extra]


@pytest.mark.parametrize("hook", ["patient-view", "order-select", "order-sign"])
def test_each_hook_answers_spec_valid_cards(call, hook):
    record = man_on_ai(obs(E2_MASS, 12, "pg/mL", RECENT))
    body = hook_body(
        hook, record=record, drafts=[med(status="draft", mid="d1")] if hook != "patient-view" else []
    )
    response = call(body)
    assert response.status_code == 200, response.get_json()
    check_response(response.get_json())
    assert "low-estradiol-on-ai" in rules_of(response.get_json())


@pytest.mark.parametrize(
    ("value", "unit", "fires", "indicator"),
    [
        (19.9, "pg/mL", True, "warning"),
        (20.0, "pg/mL", False, None),
        (9.9, "pg/mL", True, "critical"),
        (10.0, "pg/mL", True, "warning"),
        (73.0, "pmol/L", True, "warning"),  # 19.9 pg/mL
        (73.5, "pmol/L", False, None),  # 20.02 pg/mL
        (36.3, "pmol/L", True, "critical"),  # 9.89 pg/mL
    ],
)
def test_low_estradiol_boundary(call, value, unit, fires, indicator):
    body = hook_body(
        "patient-view", record=man_on_ai(obs(E2_MOLAR if unit == "pmol/L" else E2_MASS, value, unit, RECENT))
    )
    cards = call(body).get_json()["cards"]
    found = [c for c in cards if c["source"]["topic"]["code"] == "low-estradiol-on-ai"]
    assert bool(found) is fires
    if fires:
        assert found[0]["indicator"] == indicator


def test_low_estradiol_never_for_women(call):
    body = hook_body("patient-view", record=man_on_ai(obs(E2_MASS, 5, "pg/mL", RECENT), gender="female"))
    assert "low-estradiol-on-ai" not in rules_of(call(body).get_json())


def test_low_estradiol_needs_an_aromatase_inhibitor(call):
    record = [patient(), VITD_OK, obs(E2_MASS, 5, "pg/mL", RECENT)]
    assert rules_of(call(hook_body("patient-view", record=record)).get_json()) == []


def test_low_estradiol_ignores_entered_in_error_and_uses_latest(call):
    record = man_on_ai(obs(E2_MASS, 5, "pg/mL", "2026-11-01", status="entered-in-error"),
                       obs(E2_MASS, 8, "pg/mL", "2025-01-01"), obs(E2_MASS, 25, "pg/mL", "2026-06-01"))
    assert "low-estradiol-on-ai" not in rules_of(call(hook_body("patient-view", record=record)).get_json())


def test_order_time_suggestions_update_and_delete_the_draft(call):
    draft = med(status="draft", mid="draft-ai", timing={"frequency": 2, "period": 1, "periodUnit": "wk"})
    body = hook_body("order-select", record=man_on_ai(obs(E2_MASS, 12, "pg/mL", RECENT)), drafts=[draft])
    card = next(
        c for c in call(body).get_json()["cards"] if c["source"]["topic"]["code"] == "low-estradiol-on-ai"
    )
    actions = [a for s in card["suggestions"] for a in s["actions"]]
    update = next(a for a in actions if a["type"] == "update")
    assert update["resource"]["id"] == "draft-ai"
    assert update["resource"]["dosageInstruction"][0]["timing"]["repeat"] == \
        {"frequency": 2, "period": 2, "periodUnit": "wk"}
    delete = next(a for a in actions if a["type"] == "delete")
    assert delete["resourceId"] == "MedicationRequest/draft-ai"
    assert card["selectionBehavior"] == "at-most-one"


@pytest.mark.parametrize(
    ("before", "after", "fires"),
    [
        (-1.0, -1.3, True),  # drop 0.3: at the threshold
        (-1.0, -1.29, False),  # drop 0.29: below it
        (-1.0, -0.5, False),  # rising
    ],
)
def test_falling_t_score_boundary(call, before, after, fires):
    record = man_on_ai(obs(SPINE_T, before, "1", "2024-06-01"), obs(SPINE_T, after, "1", "2026-06-01"))
    assert (
        "falling-bone-density" in rules_of(call(hook_body("patient-view", record=record)).get_json())
    ) is fires


def test_falling_t_score_compares_only_the_same_site(call):
    hip_left_t = "80946-7"
    record = man_on_ai(obs(SPINE_T, -1.0, "1", "2024-06-01"), obs(hip_left_t, -2.0, "1", "2026-06-01"))
    assert "falling-bone-density" not in rules_of(call(hook_body("patient-view", record=record)).get_json())


@pytest.mark.parametrize(("date", "fires"), [("2025-11-22", False), ("2025-11-21", True)])
def test_vitamin_d_missing_boundary(call, date, fires):
    # 2025-11-22 is exactly 365 days before the pinned evaluation time; one day earlier is too old
    record = [patient(), med(), obs(VITD, 35, "ng/mL", date)]
    assert (
        "vitamin-d-missing" in rules_of(call(hook_body("patient-view", record=record)).get_json())
    ) is fires


def test_vitamin_d_missing_suggests_an_order_unless_it_is_being_ordered(call):
    record = [patient(), med()]
    card = next(c for c in call(hook_body("patient-view", record=record)).get_json()["cards"]
                if c["source"]["topic"]["code"] == "vitamin-d-missing")
    created = card["suggestions"][0]["actions"][0]
    assert created["type"] == "create"
    assert created["resource"]["resourceType"] == "ServiceRequest"
    assert created["resource"]["code"]["coding"][0]["code"] == "62292-8"
    assert created["resource"]["subject"] == {"reference": "Patient/p1"}
    vitd_order = {"resourceType": "ServiceRequest", "id": "sr1", "status": "draft", "intent": "order",
                  "subject": {"reference": "Patient/p1"},
                  "code": {"coding": [{"system": "http://loinc.org", "code": "62292-8"}]}}
    body = hook_body("order-sign", record=record, drafts=[vitd_order])
    assert "vitamin-d-missing" not in rules_of(call(body).get_json())


def test_vitamin_d_missing_needs_an_aromatase_inhibitor(call):
    assert rules_of(call(hook_body("patient-view", record=[patient()])).get_json()) == []


def test_patient_id_with_prefix_is_tolerated(call):
    body = hook_body(
        "patient-view", record=man_on_ai(obs(E2_MASS, 12, "pg/mL", RECENT)), patient_id="Patient/p1"
    )
    response = call(body)
    assert response.status_code == 200
    assert "low-estradiol-on-ai" in rules_of(response.get_json())


def test_unknown_unit_is_reported_not_guessed(call):
    record = man_on_ai(obs(E2_MASS, 12, "ng/dL", RECENT))
    cards = call(hook_body("patient-view", record=record)).get_json()["cards"]
    assert "low-estradiol-on-ai" not in [c["source"]["topic"]["code"] for c in cards]
    gaps = next(c for c in cards if c["source"]["topic"]["code"] == "evaluation-gaps")
    assert "ng/dL" in gaps["detail"] and "not recognised" in gaps["detail"]


def test_unknown_sex_is_reported_as_a_gap(call):
    record = [patient(gender=None), med(), VITD_OK, obs(E2_MASS, 12, "pg/mL", RECENT)]
    cards = call(hook_body("patient-view", record=record)).get_json()["cards"]
    gaps = next(c for c in cards if c["source"]["topic"]["code"] == "evaluation-gaps")
    assert "sex is not recorded" in gaps["detail"]


def test_results_of_another_patient_are_ignored(call):
    record = man_on_ai(obs(E2_MASS, 5, "pg/mL", RECENT, pid="someone-else"))
    cards = call(hook_body("patient-view", record=record)).get_json()["cards"]
    assert "low-estradiol-on-ai" not in [c["source"]["topic"]["code"] for c in cards]
    gaps = next(c for c in cards if c["source"]["topic"]["code"] == "evaluation-gaps")
    assert "different patient" in gaps["detail"]


def test_no_data_answers_empty_cards(call):
    body = hook_body("patient-view")
    body["prefetch"] = {k: None for k in body["prefetch"]}
    response = call(body)
    assert response.status_code == 200
    assert response.get_json() == {"cards": []}
