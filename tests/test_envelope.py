"""The envelope on the CDS Hooks models: what real clients send is read, the rest refused naming the field."""

from __future__ import annotations

import copy
import uuid

import pytest
from builders import hook_body, med, obs, patient

from cds.errors import EnvelopeError
from cds.hooks.envelope import check_service_id, parse_feedback, parse_hook_request
from cds.hooks.models import MAX_FEEDBACK_ITEMS

TOKEN = "secret-access-token-value"


def refusal(call, *args) -> EnvelopeError:
    with pytest.raises(EnvelopeError) as caught:
        call(*args)
    assert caught.value.status == 400
    return caught.value


def feedback_item(**changes):
    item = {"card": str(uuid.uuid4()), "outcome": "overridden",
            "outcomeTimestamp": "2026-11-22T10:00:00.000Z"}
    item.update(changes)
    return item


def test_what_ehr_simulators_send_is_answered(call):
    """``patientId`` as ``Patient/p1``, draftOrders without ``type``, ``category`` as an object, an empty
    Coding, fields this service does not know: all read, and the cards come back."""
    draft = med(status="draft", mid="d1")
    draft["category"] = {"coding": [{"code": "outpatient"}]}
    draft["medicationCodeableConcept"]["coding"].append({})
    body = hook_body("order-sign", record=[patient(), med(), obs("2243-4", 8, "pg/mL", "2026-10-01")],
                     drafts=[draft], patient_id="Patient/p1")
    del body["context"]["draftOrders"]["type"]
    body["extension"] = {"com.example.ehr": {"build": 7}}
    body["context"]["com.example.tab"] = "summary"
    body["hookInstance"] = body["hookInstance"].upper()
    response = call(body)
    assert response.status_code == 200, response.get_json()
    assert {c["source"]["topic"]["code"] for c in response.get_json()["cards"]} >= {"low-estradiol-on-ai"}


def test_the_parsed_request_keeps_the_body_as_sent():
    body = hook_body("order-select", drafts=[med(status="draft", mid="d1")], patient_id=" Patient/p1 ")
    body["fhirServer"] = "https://ehr.example.org/fhir/"
    body["fhirAuthorization"] = {"access_token": TOKEN, "token_type": "bearer", "expires_in": 300,
                                 "scope": "patient/*.read", "subject": "cds-service"}
    sent = copy.deepcopy(body)
    request = parse_hook_request(body, "order-select")
    assert body == sent
    assert request.patient_id == "p1"
    assert request.fhir_server == "https://ehr.example.org/fhir"
    assert request.selections == ["MedicationRequest/d1"]
    assert request.context is body["context"] and request.prefetch is body["prefetch"]
    assert request.fhir_authorization["access_token"] == TOKEN and TOKEN not in repr(request)


@pytest.mark.parametrize(("change", "field", "words"), [
    (lambda b: b.update(hookInstance=7), "hookInstance", "must be a string"),
    (lambda b: b.update(hookInstance=str(uuid.uuid4())[:-1]), "hookInstance", "canonical form"),
    (lambda b: b.update(context=[]), "context", "must be an object"),
    (lambda b: b["context"].update(userId=None), "context.userId", "is required"),
    (lambda b: b["context"].update(userId="  "), "context.userId", "blank"),
    (lambda b: b["context"].update(userId="u" * 257), "context.userId", "at most 256"),
    (lambda b: b["context"].update(encounterId=12), "context.encounterId", "must be a string"),
    (lambda b: b["context"].update(patientId="Patient/"), "context.patientId", "Patient id"),
    (lambda b: b["context"].update(patientId="Group/1/x"), "context.patientId", "Patient id"),
    (lambda b: b["context"].update(selections=["d1"]), "context.selections", "references like"),
    (lambda b: b["context"].update(selections=["MedicationRequest/d1"] * 1001), "context.selections",
     "at most 1000"),
    (lambda b: b["context"].update(draftOrders={"resourceType": "Patient"}),
     "context.draftOrders.resourceType", "'Bundle'"),
    (lambda b: b["context"].update(draftOrders=[]), "context.draftOrders", "must be an object"),
    (lambda b: b.update(fhirServer="ftp://ehr.example.org"), "fhirServer", "http(s) URL"),
    (lambda b: b.update(fhirServer="https://e.org", fhirAuthorization={"access_token": TOKEN,
                                                                      "token_type": "MAC"}),
     "fhirAuthorization.token_type", "'Bearer'"),
    (lambda b: b.update(fhirServer="https://e.org", fhirAuthorization={"token_type": "Bearer"}),
     "fhirAuthorization.access_token", "is required"),
    (lambda b: b.update(fhirAuthorization={"access_token": TOKEN, "token_type": "Bearer"}), "fhirServer",
     "when fhirAuthorization is sent"),
    (lambda b: b.update(prefetch=[]), "prefetch", "must be an object"),
    (lambda b: b.update(extension="x"), "extension", "must be an object"),
    (lambda b: b["prefetch"].update({"\udc80": None}), '["\\udc80"]', "surrogate"),
    (lambda b: b["context"].update(userId="Practitioner/1\x00"), "context.userId", "NUL"),
])
def test_a_bad_request_field_is_named(change, field, words):
    body = hook_body("order-select", drafts=[med(status="draft", mid="d1")])
    change(body)
    error = refusal(parse_hook_request, body, "order-select")
    if field.startswith("["):
        field = "prefetch" + field
    assert error.field == field
    assert error.message.startswith(field) and words in error.message
    assert TOKEN not in error.message


def test_every_bad_field_is_reported_the_first_named():
    body = hook_body("order-sign")
    body["hookInstance"] = "nope"
    body["context"]["userId"] = 5
    del body["context"]["draftOrders"]
    error = refusal(parse_hook_request, body, "order-sign")
    assert error.field == "hookInstance"
    assert error.details == ["context.userId must be a string", "context.draftOrders is required"]
    issues = error.to_operation_outcome()["issue"]
    assert [i["expression"] for i in issues] == [
        ["hookInstance"], ["context.userId"], ["context.draftOrders"]]


def test_a_wrong_hook_is_echoed_short_and_escaped():
    body = hook_body("order-sign")
    body["hook"] = "patient-view\ud800" + "x" * 200
    error = refusal(parse_hook_request, body, "order-sign")
    assert error.field == "hook"
    assert "\\ud800" in error.message and "x" * 41 not in error.message
    error.message.encode("utf-8")  # storable as it is


def test_feedback_items_are_returned_as_sent():
    items = [feedback_item(acceptedSuggestions=None, extra="kept"),
             feedback_item(outcome="accepted", acceptedSuggestions=[{"id": str(uuid.uuid4())}])]
    assert parse_feedback({"feedback": items}) == items


@pytest.mark.parametrize(("item", "field"), [
    (feedback_item(card=str(uuid.uuid4()).replace("-", "")), "feedback[0].card"),
    (feedback_item(outcomeTimestamp="2026-11-22"), "feedback[0].outcomeTimestamp"),
    (feedback_item(outcomeTimestamp=1764324000), "feedback[0].outcomeTimestamp"),
    (feedback_item(overrideReason={"reason": {"display": "no code"}}),
     "feedback[0].overrideReason.reason.code"),
    (feedback_item(overrideReason={"reason": "declined"}), "feedback[0].overrideReason.reason"),
    (feedback_item(overrideReason={"userComment": 5}), "feedback[0].overrideReason.userComment"),
    (feedback_item(outcome="accepted", acceptedSuggestions=[]), "feedback[0].acceptedSuggestions"),
    (feedback_item(outcome="accepted", acceptedSuggestions=[{"id": "s"}] * 101),
     "feedback[0].acceptedSuggestions"),
    ("not an object", "feedback[0]"),
])
def test_a_bad_feedback_field_is_named(item, field):
    assert refusal(parse_feedback, {"feedback": [item]}).field == field


def test_the_number_of_feedback_items_is_capped():
    items = [feedback_item()] * MAX_FEEDBACK_ITEMS
    assert len(parse_feedback({"feedback": items})) == MAX_FEEDBACK_ITEMS
    error = refusal(parse_feedback, {"feedback": [*items, "anything"]})
    assert error.field == "feedback" and str(MAX_FEEDBACK_ITEMS + 1) in error.message


def test_service_ids_are_bounded():
    check_service_id("s" * 128)
    assert refusal(check_service_id, "s" * 129).field == "service"


def test_the_documented_examples_pass_the_envelope():
    from cds.hooks.schemas import EXAMPLE_FEEDBACK, EXAMPLE_REQUEST

    assert parse_hook_request(copy.deepcopy(EXAMPLE_REQUEST), "patient-view").patient_id == "p1"
    assert parse_feedback(copy.deepcopy(EXAMPLE_FEEDBACK)) == EXAMPLE_FEEDBACK["feedback"]
