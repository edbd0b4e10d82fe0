"""Requests that once answered 500 (found by the schemathesis run in test_openapi.py): now a 400 or a 200."""

from __future__ import annotations

import pytest
from builders import hook_body, med, patient


@pytest.mark.parametrize("selections", [None, "MedicationRequest/1", {"a": 1}, [1]])
def test_selections_of_the_wrong_shape(call, selections):
    body = hook_body("patient-view", record=[patient(), med()])
    body["context"]["selections"] = selections
    response = call(body)
    if selections is None:
        assert response.status_code == 200
    else:
        assert response.status_code == 400
        assert response.get_json()["issue"][0]["expression"] == ["context.selections"]


@pytest.mark.parametrize("drafts", [[], "Bundle", 3])
def test_draft_orders_that_are_not_an_object(call, drafts):
    body = hook_body("patient-view", record=[patient(), med()])
    body["context"]["draftOrders"] = drafts
    response = call(body)
    assert response.status_code == 400
    assert "draftOrders" in response.get_json()["issue"][0]["diagnostics"]


@pytest.mark.parametrize("resource_type", [{}, [], 7, None])
def test_a_resource_type_that_is_not_a_string(call, resource_type):
    body = hook_body("order-sign", record=[patient(), med()])
    body["context"]["draftOrders"]["entry"] = [{"resource": {"resourceType": resource_type, "id": ""}}]
    body["prefetch"]["estradiol"]["entry"] = [{"resource": {"resourceType": resource_type}}]
    response = call(body)
    assert response.status_code in (200, 400)


@pytest.mark.parametrize("coding", [True, 7.5, 0, "84857"])
@pytest.mark.parametrize("where", ["medications", "draftOrders"])
def test_a_medication_coding_that_is_not_a_list(call, coding, where):
    """Found by scripts/fuzz_api.py: a scalar ``coding`` in a MedicationRequest's medicationCodeableConcept
    reached the relevance filter's text match, which iterated it (500). Now the order is not recognised as
    an aromatase inhibitor (its codes are unusable), so no card comes from it."""
    drug = med(status="draft" if where == "draftOrders" else "active")
    drug["medicationCodeableConcept"]["coding"] = coding
    body = hook_body("order-sign", record=[patient()] + ([drug] if where == "medications" else []),
                     drafts=[drug] if where == "draftOrders" else [])
    response = call(body)
    assert response.status_code in (200, 400, 422), response.get_data(as_text=True)
    answer = response.get_json()
    if response.status_code == 200:
        assert answer["cards"] == []
    else:
        assert answer["resourceType"] == "OperationOutcome"


@pytest.mark.parametrize("date", ["0001-01-01", "1899-12-31"])
def test_a_result_dated_before_1900_makes_no_card(call, date):
    """Found by tests/test_properties_orders.py: an estradiol of 0 pg/mL dated 0001-01-01 (a placeholder
    date) gave a "low estradiol" card. A result dated before 1900 is a data error and is not used."""
    from builders import obs

    body = hook_body("patient-view", record=[patient(), med(), obs("2243-4", 0.0, "pg/mL", date)])
    response = call(body)
    assert response.status_code == 200
    rules = {c["source"]["topic"]["code"] for c in response.get_json()["cards"]}
    assert "low-estradiol-on-ai" not in rules
    body = hook_body("patient-view", record=[patient(), med(), obs("2243-4", 0.0, "pg/mL", "1900-01-01")])
    assert "low-estradiol-on-ai" in {c["source"]["topic"]["code"] for c in call(body).get_json()["cards"]}
