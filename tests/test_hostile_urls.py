"""Finding 7: the FHIR allow-list cannot be escaped with dot segments or encoded separators.

The service runs over real HTTP; the FHIR server is a real local server that records every request. The
allow-list names ``/fhir`` on it; whatever the request's ``fhirServer`` or a Bundle's ``next`` link says,
nothing outside ``/fhir`` is ever asked, so the access token never reaches another path.
"""

from __future__ import annotations

import uuid

import pytest
import requests
from builders import complete_prefetch, med, patient, searchset
from recording_server import RecordingServer
from support import make_token

from cds.web.app import create_app

SERVICE = "bone-health-patient-view"
TOKEN = "access-token-for-the-fhir-server"


@pytest.fixture
def fhir():
    with RecordingServer() as server:
        yield server


@pytest.fixture
def base(fhir, auth_config, tmp_path, live_server):
    app = create_app({**auth_config, "FHIR_SERVER_ALLOWLIST": f"{fhir.origin}/fhir", "FHIR_RETRIES": 0,
                      "AUDIT_SPOOL_DIR": str(tmp_path / "spool"), "AUDIT_PATIENT_KEY_SECRET": "s" * 32})
    yield live_server(app)
    app.extensions["cds.audit"].close()


def call(base: str, fhir_server: str, prefetch: dict) -> requests.Response:
    url = f"{base}/cds-services/{SERVICE}"
    body = {"hook": "patient-view", "hookInstance": str(uuid.uuid4()), "fhirServer": fhir_server,
            "fhirAuthorization": {"access_token": TOKEN, "token_type": "Bearer", "expires_in": 300,
                                  "scope": "patient/*.read", "subject": "cds"},
            "context": {"userId": "Practitioner/dr-1", "patientId": "p1"}, "prefetch": prefetch}
    return requests.post(url, json=body, headers={"Authorization": f"Bearer {make_token(url)}"}, timeout=60)


def full_prefetch() -> dict:
    return {**{key: searchset([]) for key in complete_prefetch()}, "patient": patient(),
            "medications": searchset([med()])}


@pytest.mark.parametrize("suffix", ["/fhir/../internal", "/fhir/%2E%2E/internal", "/fhir/%2e%2e/internal",
                                    "/fhir/./../internal", "/fhir%2F..%2Finternal", "/fhir/..%5Cinternal",
                                    "/fhir/..\\internal"])
def test_fhir_server_with_dot_segments_is_refused_and_nothing_is_sent(fhir, base, suffix):
    prefetch = full_prefetch()
    del prefetch["patient"]  # the service must fetch it
    response = call(base, fhir.origin + suffix, prefetch)
    assert response.status_code == 412, response.text
    issue = response.json()["issue"][0]
    assert issue["code"] == "security" and "allow-list" in issue["diagnostics"]
    assert fhir.received == []


@pytest.mark.parametrize("link", ["{origin}/fhir/../internal/Observation?page=2", "../internal/Observation",
                                  "{origin}/fhir/%2E%2E/internal/Observation", "%2E%2E/internal/x",
                                  "{origin}/fhir/MedicationRequest%2F..%2F..%2Finternal",
                                  "{origin}/internal/MedicationRequest"])
def test_next_link_leaving_fhir_server_is_not_followed(fhir, base, link):
    prefetch = full_prefetch()
    first = searchset([med()])
    first["link"] = [{"relation": "next", "url": link.format(origin=fhir.origin)}]
    prefetch["medications"] = first
    response = call(base, f"{fhir.origin}/fhir", prefetch)
    assert response.status_code == 412, response.text
    assert "next link" in response.json()["issue"][0]["diagnostics"]
    assert fhir.received == []


def test_plain_next_link_is_followed_with_the_token_under_fhir(fhir, base):
    fhir.pages["/fhir/MedicationRequest?page=2"] = searchset([med(mid="m-page-2")])
    prefetch = full_prefetch()
    first = searchset([med()])
    first["link"] = [{"relation": "next", "url": f"{fhir.origin}/fhir/MedicationRequest?page=2"}]
    prefetch["medications"] = first
    response = call(base, f"{fhir.origin}/fhir/", prefetch)
    assert response.status_code == 200, response.text
    assert fhir.received == [("/fhir/MedicationRequest?page=2", True)]
