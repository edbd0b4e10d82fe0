from __future__ import annotations

import uuid

import pytest
from builders import hook_body, med, patient

URL = "/cds-services/bone-health-order-sign/feedback"


def item(**overrides):
    base = {
        "card": str(uuid.uuid4()),
        "outcome": "accepted",
        "acceptedSuggestions": [{"id": str(uuid.uuid4())}],
        "outcomeTimestamp": "2026-11-22T10:00:00Z",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def test_accepted_and_overridden_feedback_is_answered(client):
    # feedback is taken for cards issued on that service (tests/audit/test_audit_feedback_owner.py)
    body = hook_body("order-sign", record=[patient(gender="female")], drafts=[med(status="draft")])
    cards = client.post("/cds-services/bone-health-order-sign", json=body).get_json()["cards"]
    accepted = item(card=cards[0]["uuid"], acceptedSuggestions=[{"id": cards[0]["suggestions"][0]["uuid"]}])
    overridden = item(card=cards[1]["uuid"], outcome="overridden", acceptedSuggestions=None,
                      overrideReason={"reason": {"code": "dose-already-reduced", "system": "x",
                                                 "display": "Dose already reduced"}, "userComment": "ok"})
    response = client.post(URL, json={"feedback": [accepted, overridden]})
    assert response.status_code == 200
    assert response.get_json() == {"accepted": 2}


@pytest.mark.parametrize(("body", "field"), [
    ({}, "feedback"),
    ({"feedback": []}, "feedback"),
    ({"feedback": [item(card="x")]}, "feedback[0].card"),
    ({"feedback": [item(outcome="maybe")]}, "feedback[0].outcome"),
    ({"feedback": [item(acceptedSuggestions=None)]}, "feedback[0].acceptedSuggestions"),
    ({"feedback": [item(outcomeTimestamp=None)]}, "feedback[0].outcomeTimestamp"),
    ({"feedback": [item(overrideReason={"reason": {"code": "x"}})]}, "feedback[0].overrideReason"),
])
def test_invalid_feedback_names_the_field(client, body, field):
    response = client.post(URL, json=body)
    assert response.status_code == 400
    assert response.get_json()["issue"][0]["expression"] == [field]


def test_feedback_for_unknown_service(client):
    assert client.post("/cds-services/nope/feedback", json={"feedback": [item()]}).status_code == 404
