"""Bad input gets a 4xx OperationOutcome naming the field; nothing answers with a stack trace."""

from __future__ import annotations

import pytest
from builders import hook_body, med, obs, patient

URL = "/cds-services/bone-health-order-sign"


def _outcome(response, status):
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert body["resourceType"] == "OperationOutcome"
    text = response.get_data(as_text=True)
    assert "Traceback" not in text and 'File "' not in text
    return body["issue"][0]


def test_malformed_json(client):
    issue = _outcome(client.post(URL, data=b'{"hook": ', content_type="application/json"), 400)
    assert "malformed JSON" in issue["diagnostics"]


def test_empty_body(client):
    assert "empty" in _outcome(client.post(URL, data=b""), 400)["diagnostics"]


def test_body_not_an_object(client):
    assert "JSON object" in _outcome(client.post(URL, json=[1, 2]), 400)["diagnostics"]


def test_wrong_hook_for_service(client):
    issue = _outcome(client.post(URL, json=hook_body("patient-view")), 400)
    assert issue["expression"] == ["hook"]


def test_unknown_service(client):
    issue = _outcome(client.post("/cds-services/nope", json=hook_body("order-sign")), 404)
    assert "nope" in issue["diagnostics"]


@pytest.mark.parametrize(("field", "expected"), [
    ("hookInstance", "hookInstance"),
    ("context", "context"),
])
def test_missing_envelope_field(client, field, expected):
    body = hook_body("order-sign")
    del body[field]
    assert _outcome(client.post(URL, json=body), 400)["expression"] == [expected]


@pytest.mark.parametrize("field", ["userId", "patientId", "draftOrders"])
def test_missing_context_field(client, field):
    body = hook_body("order-sign")
    del body["context"][field]
    issue = _outcome(client.post(URL, json=body), 400)
    assert issue["expression"] == [f"context.{field}"]
    assert field in issue["diagnostics"]


def test_order_select_needs_selections(client):
    body = hook_body("order-select")
    del body["context"]["selections"]
    issue = _outcome(client.post("/cds-services/bone-health-order-select", json=body), 400)
    assert issue["expression"] == ["context.selections"]


def test_hook_instance_must_be_a_uuid(client):
    body = hook_body("order-sign")
    body["hookInstance"] = "not-a-uuid"
    assert _outcome(client.post(URL, json=body), 400)["expression"] == ["hookInstance"]


def test_fhir_authorization_requires_fhir_server(client):
    body = hook_body("order-sign")
    body["fhirAuthorization"] = {"access_token": "x", "token_type": "Bearer", "expires_in": 300,
                                 "scope": "patient/*.read", "subject": "cds"}
    assert _outcome(client.post(URL, json=body), 400)["expression"] == ["fhirServer"]


def test_invalid_fhir_names_the_resource_and_field(client):
    bad = obs("2243-4", 12, "pg/mL", "2026-10-01")
    bad["valueQuantity"]["value"] = "twelve"
    body = hook_body("order-sign", record=[patient(), med(), bad])
    issue = _outcome(client.post(URL, json=body), 400)
    assert "prefetch.estradiol.entry[0].resource" in issue["diagnostics"]
    assert "valueQuantity.value" in issue["diagnostics"]


def test_invalid_draft_order_names_the_field(client):
    draft = med(status="draft", mid="d1")
    draft["dosageInstruction"] = "daily"
    issue = _outcome(client.post(URL, json=hook_body("order-sign", drafts=[draft])), 400)
    assert "context.draftOrders.entry[0].resource" in issue["diagnostics"]
    assert "dosageInstruction" in issue["diagnostics"]


def test_invalid_fhir_in_an_unused_resource_is_not_an_error(client):
    other_lab = obs("2345-7", 5.1, "mmol/L", "2026-10-01")  # glucose: no rule reads it
    other_lab["valueQuantity"]["value"] = "high"
    response = client.post(URL, json=hook_body("order-sign", record=[patient(), other_lab]))
    assert response.status_code == 200


def test_internal_error_is_an_operation_outcome_without_trace(app, client, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(app.extensions["cds.evaluator"], "evaluate", boom)
    issue = _outcome(client.post(URL, json=hook_body("order-sign", record=[patient()])), 500)
    assert "secret internals" not in issue["diagnostics"]


def test_rule_action_failure_is_a_500_operation_outcome(app, client, monkeypatch):
    from cds.errors import EngineError

    def fail(facts):
        raise EngineError("a rule action failed: boom")

    monkeypatch.setattr(app.extensions["cds.evaluator"], "run_facts", fail)
    issue = _outcome(client.post(URL, json=hook_body("order-sign", record=[patient()])), 500)
    assert "rule action failed" in issue["diagnostics"]


def test_wrong_method_and_unknown_path(client):
    _outcome(client.get("/cds-services/bone-health-order-sign"), 405)
    _outcome(client.get("/nowhere"), 404)


def test_nesting_deeper_than_the_limit_is_refused(client):
    deep: dict = {"x": 1}
    for _ in range(100):
        deep = {"x": deep}
    body = hook_body("order-sign")
    body["extension"] = deep
    assert "nested deeper" in _outcome(client.post(URL, json=body), 400)["diagnostics"]


def test_nesting_within_the_limit_is_accepted(client):
    nested: list = [1]
    for _ in range(40):
        nested = [nested]
    body = hook_body("order-sign")
    body["extension"] = {"x": nested}
    assert client.post(URL, json=body).status_code == 200


def test_brackets_inside_strings_do_not_count_as_nesting(client):
    body = hook_body("order-sign")
    body["extension"] = {"note": "[" * 200 + '\\"' + "{" * 200}
    assert client.post(URL, json=body).status_code == 200
