"""Neither the client's JWT nor the FHIR access token ever reaches a log, whatever happens to the call."""

from __future__ import annotations

import logging

import requests
from support import make_token

from cds import create_app

SERVICE = "/cds-services/bone-health-patient-view"
ACCESS_TOKEN = "fhir-access-token-7f3c9e2b4d1a8c6e0f5b"


def test_tokens_never_appear_in_logs(auth_config, live_server, caplog):
    caplog.set_level(logging.DEBUG)  # every logger, every level (werkzeug's request log included)
    base = live_server(create_app({**auth_config, "LOG_LEVEL": "DEBUG"}))
    body = {"hook": "patient-view", "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
            "fhirServer": "https://fhir.example.org/r4",
            "fhirAuthorization": {"access_token": ACCESS_TOKEN, "token_type": "Bearer", "expires_in": 300,
                                  "scope": "patient/*.read", "subject": "cds-service"},
            "context": {"userId": "Practitioner/1", "patientId": "p1"}, "prefetch": {}}
    tokens = []

    def post(token: str, payload=body) -> int:
        tokens.append(token)
        return requests.post(base + SERVICE, json=payload, headers={"Authorization": f"Bearer {token}"},
                             timeout=10).status_code

    good = make_token(base + SERVICE)
    assert post(good) not in (401, 500)  # accepted: the service itself answers (412, it has no FHIR client)
    assert post(good) == 401  # replay
    assert post(make_token(base + SERVICE, now=0)) == 401  # expired
    assert post(make_token(base + "/cds-services")) == 401  # another endpoint's token
    assert post(make_token(base + SERVICE, iss="https://evil.example.org")) == 401
    assert post(good[:-6] + "AAAAAA") == 401  # broken signature
    assert post(make_token(base + SERVICE), payload={**body, "hookInstance": 7}) == 400  # bad envelope

    assert caplog.records, "the calls above should have logged something"
    logged = caplog.text + "\n".join(r.getMessage() for r in caplog.records)
    assert "refused POST " + SERVICE in logged
    for token in tokens:
        for part in token.split("."):
            assert part not in logged
    assert ACCESS_TOKEN not in logged
