"""The FHIR client on its own: the allow-list, retries and Retry-After, the injected session, redirects."""

from __future__ import annotations

import email.utils
import time
import uuid

import pytest
import requests
from fhir_server_support import ANY_PATH, FakeFhir, fhir_response
from werkzeug import Request, Response

from cds.call.fhir_client import ClientSettings, FhirClient, parse_allowlist, parse_base
from cds.errors import ConfigurationError, FhirServerError, FhirServerNotAllowed
from cds.hooks.envelope import parse_hook_request

ALLOWED = "https://ehr.example.org/fhir"


def allowed(url: str, allowlist: str = ALLOWED) -> bool:
    base = parse_base(url)
    return base is not None and any(entry.contains(base) for entry in parse_allowlist(allowlist.split(",")))


@pytest.mark.parametrize("url", [
    "https://ehr.example.org/fhir", "https://ehr.example.org/fhir/", "https://EHR.example.org/fhir/r4",
    "https://ehr.example.org:443/fhir", "https://ehr.example.org./fhir",
])
def test_urls_under_an_allowed_base_match(url):
    assert allowed(url)


@pytest.mark.parametrize("url", [
    "https://ehr.example.org.evil.com/fhir",  # a longer host is another host
    "https://evil.com/ehr.example.org/fhir",
    "https://ehr.example.org@evil.com/fhir",  # credentials: the host is evil.com
    "https://user:pw@ehr.example.org/fhir",  # credentials in the URL are refused outright
    "http://ehr.example.org/fhir",  # another scheme
    "https://ehr.example.org:8443/fhir",  # another port
    "https://ehr.example.org/fhir2",  # a path that merely starts with the same letters
    "https://ehr.example.org/",
    "https://ehr.example.org",
    "ftp://ehr.example.org/fhir",
    "not a url",
    "https://ehr.example.org:99999/fhir",
])
def test_other_urls_do_not_match(url):
    assert not allowed(url)


def test_an_allow_list_entry_without_a_path_allows_the_whole_origin():
    assert allowed("https://ehr.example.org/any/path", "https://ehr.example.org")
    assert allowed("http://localhost:8080/fhir", "https://ehr.example.org, http://localhost:8080/")
    assert not allowed("http://localhost:8081/fhir", "http://localhost:8080")


@pytest.mark.parametrize("entry", ["ehr.example.org/fhir", "ftp://ehr.example.org", "https://ehr.example.org/?x=1",
                                   "https://"])
def test_a_malformed_allow_list_entry_is_a_configuration_error(entry):
    with pytest.raises(ConfigurationError, match="CDS_FHIR_SERVER_ALLOWLIST"):
        parse_allowlist([entry])


def hook_request(server: str, token: str | None = "tok-123"):
    body = {"hook": "patient-view", "hookInstance": str(uuid.uuid4()), "fhirServer": server,
            "context": {"userId": "Practitioner/p", "patientId": "pat-1"}}
    if token:
        body["fhirAuthorization"] = {"access_token": token, "token_type": "Bearer"}
    return parse_hook_request(body, "patient-view")


class RecordingSession(requests.Session):
    def __init__(self):
        super().__init__()
        self.calls = []

    def get(self, url, **kwargs):
        self.calls.append(kwargs)
        return super().get(url, **kwargs)


def make_client(httpserver, session=None, sleeps=None, **overrides):
    settings = ClientSettings(allowlist=parse_allowlist([httpserver.url_for("/fhir")]), connect_timeout=1.5,
                              read_timeout=2.5, backoff=0.01, **overrides)
    return FhirClient(settings, session=session, sleep=(sleeps.append if sleeps is not None else time.sleep))


def test_every_call_goes_through_the_injected_session_with_both_timeouts(httpserver):
    httpserver.expect_request(ANY_PATH).respond_with_handler(FakeFhir(page_size=1))
    session = RecordingSession()
    client = make_client(httpserver, session=session)
    bundle = client(hook_request(httpserver.url_for("/fhir")), "dxa",
                    "Observation?patient=pat-1&code=http%3A%2F%2Floinc.org%7C38267-1")
    assert [e["resource"]["id"] for e in bundle["entry"]] == ["dxa-2024", "dxa-2025"]
    assert bundle["total"] == 2 and "link" not in bundle
    assert len(session.calls) == 2
    assert all(call["timeout"] == (1.5, 2.5) and call["allow_redirects"] is False for call in session.calls)


def test_retry_after_is_honoured_up_to_the_cap(httpserver):
    later = email.utils.format_datetime(email.utils.localtime().replace(microsecond=0), usegmt=False)
    answers = iter([Response("", 429, {"Retry-After": "120"}), Response("", 503, {"Retry-After": "0.05"}),
                    Response("", 502, {"Retry-After": later}), Response("", 504)])

    def handler(request: Request) -> Response:
        return next(answers, None) or FakeFhir()(request)

    httpserver.expect_request(ANY_PATH).respond_with_handler(handler)
    sleeps: list[float] = []
    client = make_client(httpserver, sleeps=sleeps, retries=4, retry_after_cap=0.5)
    patient = client(hook_request(httpserver.url_for("/fhir")), "patient", "Patient/pat-1")
    assert patient["id"] == "pat-1"
    assert len(httpserver.log) == 5
    assert sleeps[0] == 0.5  # 120 s asked, capped
    assert sleeps[1] == 0.05
    assert 0 <= sleeps[2] <= 0.5  # an HTTP date, now or just passed
    assert sleeps[3] == pytest.approx(0.01 * 2 ** 3)  # no Retry-After: exponential backoff


def test_no_retry_when_retries_is_zero(httpserver):
    httpserver.expect_request(ANY_PATH).respond_with_data("", status=503)
    client = make_client(httpserver, retries=0)
    with pytest.raises(FhirServerError, match="HTTP 503"):
        client(hook_request(httpserver.url_for("/fhir")), "patient", "Patient/pat-1")
    assert len(httpserver.log) == 1


def test_a_500_is_not_retried(httpserver):
    httpserver.expect_request(ANY_PATH).respond_with_data("", status=500)
    with pytest.raises(FhirServerError, match="HTTP 500"):
        make_client(httpserver)(hook_request(httpserver.url_for("/fhir")), "patient", "Patient/pat-1")
    assert len(httpserver.log) == 1


def test_a_redirect_is_not_followed(httpserver):
    httpserver.expect_request(ANY_PATH).respond_with_data(
        "", status=302, headers={"Location": "http://127.0.0.1:9/steal"})
    with pytest.raises(FhirServerError, match="HTTP 302"):
        make_client(httpserver)(hook_request(httpserver.url_for("/fhir")), "patient", "Patient/pat-1")
    assert len(httpserver.log) == 1


def test_a_read_answered_with_another_type_fails(httpserver):
    httpserver.expect_request(ANY_PATH).respond_with_handler(
        lambda request: fhir_response({"resourceType": "Observation", "id": "x", "status": "final"}))
    with pytest.raises(FhirServerError, match="Patient read"):
        make_client(httpserver)(hook_request(httpserver.url_for("/fhir")), "patient", "Patient/pat-1")


def test_a_refused_server_gets_no_request_through_the_session(httpserver):
    session = RecordingSession()
    client = FhirClient(ClientSettings(allowlist=parse_allowlist([ALLOWED])), session=session)
    with pytest.raises(FhirServerNotAllowed, match="allow-list"):
        client(hook_request(httpserver.url_for("/fhir")), "patient", "Patient/pat-1")
    with pytest.raises(FhirServerNotAllowed):
        client.complete(hook_request("https://ehr.example.org.evil.com/fhir"), "dxa",
                        {"resourceType": "Bundle", "link": [{"relation": "next", "url": ALLOWED + "/x"}]})
    assert session.calls == [] and httpserver.log == []
