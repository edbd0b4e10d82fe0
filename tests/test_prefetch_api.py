"""Prefetch through the HTTP API, against a real FHIR server on a local socket.

Every path a key can take — sent by the client, ``null``, an OperationOutcome, absent, a paged Bundle — and
every way the FHIR server can fail, each ending in cards or in a 412 that names the key.
"""

from __future__ import annotations

import json
import logging
import socket
import time

import pytest
from fhir_server_support import (
    ANY_PATH,
    NOW,
    TOKEN,
    FakeFhir,
    RecordingSink,
    card_signature,
    complete_prefetch,
    fhir_response,
    hook_body,
    outcome,
)
from support import AuthedClient
from werkzeug import Request, Response

from cds.call.fhir_client import FhirClient
from cds.errors import ConfigurationError
from cds.web.app import create_app

KEYS = ["patient", "estradiol", "vitaminD", "dxa", "monitoring", "medications"]  # the keys the rules read
#: the key of pending test orders: it only silences cards, so its absence is never a 412
PENDING = "pendingOrders"
EXPECTED_RULES = {"low-estradiol-with-bone-loss", "vitamin-d-missing", "calcium-monitoring-due"}


@pytest.fixture
def make_app(httpserver, auth_config):
    """The app with its FHIR client built by create_app from the settings, and a recording audit sink."""

    def make(**overrides):
        wanted = {"FHIR_SERVER_ALLOWLIST": fhir_url(httpserver), "FHIR_READ_TIMEOUT": 2.0,
                  "FHIR_CONNECT_TIMEOUT": 1.0, "FHIR_BACKOFF_SECONDS": 0.01, **overrides}
        sink = RecordingSink()
        app = create_app({**auth_config, "NOW": NOW, **wanted}, audit_sink=sink)
        app.testing = True
        app.test_client_class = AuthedClient
        return app, sink

    return make


def test_create_app_wires_the_fhir_client_from_the_settings():
    app = create_app({"FHIR_SERVER_ALLOWLIST": "https://ehr.example.org/fhir, https://other.example.org:8443",
                      "FHIR_READ_TIMEOUT": "1.5", "FHIR_MAX_PAGES": "3"})
    client = app.extensions["cds.service"].fetch
    assert isinstance(client, FhirClient)
    assert client.settings.read_timeout == 1.5 and client.settings.max_pages == 3
    assert [base.origin for base in client.settings.allowlist] == ["https://ehr.example.org",
                                                                  "https://other.example.org:8443"]


def test_a_bad_allow_list_entry_stops_start_up():
    with pytest.raises(ConfigurationError, match="CDS_FHIR_SERVER_ALLOWLIST"):
        create_app({"FHIR_SERVER_ALLOWLIST": "ftp://ehr.example.org"})


def fhir_url(httpserver) -> str:
    return httpserver.url_for("/fhir")


def call(app, body):
    response = app.test_client().post("/cds-services/bone-health-patient-view", json=body)
    return response.status_code, response.get_json()


def served(httpserver, handler=None):
    httpserver.expect_request(ANY_PATH).respond_with_handler(handler or FakeFhir())


def paths(httpserver) -> list[str]:
    return [request.full_path.rstrip("?") for request, _ in httpserver.log]


def resource_types(httpserver) -> list[str]:
    return sorted(request.path.split("/")[2] for request, _ in httpserver.log)


def without(*keys):
    prefetch = complete_prefetch()
    for key in keys:
        del prefetch[key]
    return prefetch


def assert_412_naming(status, body, *keys):
    assert status == 412, body
    assert body["resourceType"] == "OperationOutcome"
    text = json.dumps(body)
    for key in keys:
        assert f"prefetch.{key}" in text
    assert "Traceback" not in text


# -- where the data comes from ------------------------------------------------------------------------------

def test_complete_prefetch_needs_no_request_to_the_fhir_server(make_app, httpserver):
    served(httpserver)
    app, sink = make_app()
    status, body = call(app, hook_body(prefetch=complete_prefetch(), fhir_server=fhir_url(httpserver)))
    assert status == 200, body
    assert {rule for rule, _, _ in card_signature(body["cards"])} == EXPECTED_RULES
    assert httpserver.log == []
    assert sink.calls[0].provenance == {**dict.fromkeys(KEYS, "client"), PENDING: "empty"}


def test_complete_prefetch_works_without_a_fhir_server(make_app):
    app, sink = make_app()
    status, body = call(app, hook_body(prefetch=complete_prefetch()))
    assert status == 200, body
    assert {rule for rule, _, _ in card_signature(body["cards"])} == EXPECTED_RULES


def test_partial_prefetch_fetches_only_the_missing_keys(make_app, httpserver):
    served(httpserver)
    app, sink = make_app()
    status, body = call(app, hook_body(prefetch=without("dxa", "medications"),
                                       fhir_server=fhir_url(httpserver)))
    assert status == 200, body
    assert resource_types(httpserver) == ["MedicationRequest", "Observation"]
    assert sink.calls[0].provenance == {"patient": "client", "estradiol": "client", "vitaminD": "client",
                                        "monitoring": "client", "dxa": "fetched", "medications": "fetched",
                                        PENDING: "empty"}
    assert {rule for rule, _, _ in card_signature(body["cards"])} == EXPECTED_RULES


def test_the_fetched_searches_use_the_template_parameters(make_app, httpserver):
    served(httpserver)
    app, _ = make_app()
    status, body = call(app, hook_body(fhir_server=fhir_url(httpserver)))
    assert status == 200, body
    requests = {request.path.split("/", 2)[2]: request.args for request, _ in httpserver.log}
    assert set(requests) == {"Patient/pat-1", "Observation", "MedicationRequest", "ServiceRequest"}
    assert requests["MedicationRequest"]["status"] == "active,on-hold,completed,stopped"
    assert requests["ServiceRequest"]["status"] == "active,on-hold"
    assert "http://snomed.info/sct|312681000" in requests["ServiceRequest"]["code"]
    observation_codes = [r.args["code"] for r, _ in httpserver.log if r.path.endswith("/Observation")]
    assert any("http://loinc.org|2243-4" in codes for codes in observation_codes)
    assert all(r.args.get("patient") == "pat-1" for r, _ in httpserver.log if "?" in r.full_path.rstrip("?"))


def test_null_keys_mean_nothing_found_and_are_not_fetched(make_app, httpserver):
    served(httpserver)
    prefetch = complete_prefetch()
    prefetch["dxa"] = None
    prefetch["estradiol"] = None
    app, sink = make_app()
    status, body = call(app, hook_body(prefetch=prefetch, fhir_server=fhir_url(httpserver)))
    assert status == 200, body
    assert httpserver.log == []
    assert sink.calls[0].provenance["dxa"] == sink.calls[0].provenance["estradiol"] == "empty"
    assert {rule for rule, _, _ in card_signature(body["cards"])} == {
        "vitamin-d-missing",
        "dxa-baseline-missing",
        "estradiol-monitoring-due",
        "calcium-monitoring-due",
    }


def test_an_operation_outcome_from_the_client_is_fetched_again(make_app, httpserver):
    served(httpserver)
    prefetch = complete_prefetch()
    prefetch["estradiol"] = outcome("timeout", "the EHR's own query timed out")
    app, sink = make_app()
    status, body = call(app, hook_body(prefetch=prefetch, fhir_server=fhir_url(httpserver)))
    assert status == 200, body
    assert len(httpserver.log) == 1 and httpserver.log[0][0].args["code"].endswith("72873-3")
    assert sink.calls[0].provenance["estradiol"] == "fetched"
    assert {rule for rule, _, _ in card_signature(body["cards"])} == EXPECTED_RULES


def test_an_operation_outcome_without_a_fhir_server_is_a_412(make_app):
    prefetch = complete_prefetch()
    prefetch["dxa"] = outcome("exception", "failed")
    app, sink = make_app()
    status, body = call(app, hook_body(prefetch=prefetch))
    assert_412_naming(status, body, "dxa")
    assert "OperationOutcome" in json.dumps(body) and "no fhirServer" in json.dumps(body)
    assert sink.calls[0].provenance["dxa"] == "failed"


def test_no_prefetch_and_no_fhir_server_is_a_412_naming_every_key(make_app):
    app, sink = make_app()
    status, body = call(app, hook_body())
    assert_412_naming(status, body, *KEYS)
    assert PENDING not in json.dumps(body)  # never a reason for a 412
    assert sink.calls[0].status == 412
    assert sink.calls[0].provenance == dict.fromkeys([*KEYS, PENDING], "failed")


def test_a_patient_read_answered_404_is_empty_not_a_failure(make_app, httpserver):
    served(httpserver)
    app, sink = make_app()
    status, body = call(app, hook_body(prefetch=without("patient"), patient_id="unknown-7",
                                       fhir_server=fhir_url(httpserver)))
    assert status == 200, body
    assert paths(httpserver) == ["/fhir/Patient/unknown-7"]
    assert sink.calls[0].provenance["patient"] == "empty"


# -- the same cards however the data came -------------------------------------------------------------------

@pytest.mark.parametrize("page_size", [None, 1])
def test_the_same_patient_gives_the_same_cards_by_prefetch_or_by_fetch(make_app, httpserver, page_size):
    served(httpserver, FakeFhir(page_size=page_size))
    app, _ = make_app()
    status_p, by_prefetch = call(app, hook_body(prefetch=complete_prefetch()))
    status_f, by_fetch = call(app, hook_body(fhir_server=fhir_url(httpserver)))
    assert status_p == status_f == 200
    assert card_signature(by_prefetch["cards"]) == card_signature(by_fetch["cards"])
    assert {rule for rule, _, _ in card_signature(by_fetch["cards"])} == EXPECTED_RULES


# -- paging -------------------------------------------------------------------------------------------------

def test_searches_follow_next_links_through_every_page(make_app, httpserver):
    served(httpserver, FakeFhir(page_size=1))
    app, sink = make_app()
    status, body = call(app, hook_body(prefetch=without("dxa"), fhir_server=fhir_url(httpserver)))
    assert status == 200, body
    assert [r.args.get("_page") for r, _ in httpserver.log] == [None, "2"]
    assert "low-estradiol-with-bone-loss" in {rule for rule, _, _ in card_signature(body["cards"])}
    assert sink.calls[0].provenance["dxa"] == "fetched"


def test_a_client_bundle_with_a_next_link_gets_its_remaining_pages_fetched(make_app, httpserver):
    served(httpserver, FakeFhir(page_size=1))
    prefetch = complete_prefetch()
    first_page = prefetch["dxa"]
    first_page["entry"] = first_page["entry"][:1]
    rest = httpserver.url_for("/fhir/Observation?patient=pat-1&code=http://loinc.org|38267-1&_page=2")
    first_page["link"] = [{"relation": "next", "url": rest}]
    app, sink = make_app()
    status, body = call(app, hook_body(prefetch=prefetch, fhir_server=fhir_url(httpserver)))
    assert status == 200, body
    assert [r.args.get("_page") for r, _ in httpserver.log] == ["2"]
    assert "low-estradiol-with-bone-loss" in {rule for rule, _, _ in card_signature(body["cards"])}
    assert sink.calls[0].provenance["dxa"] == "fetched"


def test_a_client_bundle_with_a_next_link_and_no_fhir_server_is_a_412(make_app):
    prefetch = complete_prefetch()
    prefetch["dxa"]["link"] = [{"relation": "next", "url": "https://ehr.example.org/fhir/Observation?page=2"}]
    app, _ = make_app()
    status, body = call(app, hook_body(prefetch=prefetch))
    assert_412_naming(status, body, "dxa")
    assert "paged Bundle" in json.dumps(body)


def test_more_pages_than_the_cap_is_a_412(make_app, httpserver):
    served(httpserver, FakeFhir(page_size=1))
    app, sink = make_app(FHIR_MAX_PAGES=1)
    status, body = call(app, hook_body(prefetch=without("dxa"), fhir_server=fhir_url(httpserver)))
    assert_412_naming(status, body, "dxa")
    assert "CDS_FHIR_MAX_PAGES" in json.dumps(body)
    assert len(httpserver.log) == 1
    assert sink.calls[0].provenance["dxa"] == "failed"


def test_more_resources_than_the_cap_is_a_412(make_app, httpserver):
    served(httpserver, FakeFhir(page_size=1))
    app, _ = make_app(FHIR_MAX_RESOURCES=1)
    status, body = call(app, hook_body(prefetch=without("estradiol", "dxa"),
                                       fhir_server=fhir_url(httpserver)))
    assert_412_naming(status, body, "estradiol", "dxa")
    assert "CDS_FHIR_MAX_RESOURCES" in json.dumps(body)


def test_a_next_link_outside_the_fhir_server_is_not_followed(make_app, httpserver):
    def handler(request: Request) -> Response:
        return fhir_response({"resourceType": "Bundle", "type": "searchset", "entry": [],
                              "link": [{"relation": "next", "url": "http://127.0.0.1:9/elsewhere?page=2"}]})

    served(httpserver, handler)
    app, _ = make_app()
    status, body = call(app, hook_body(prefetch=without("dxa"), fhir_server=fhir_url(httpserver)))
    assert_412_naming(status, body, "dxa")
    assert "outside fhirServer" in json.dumps(body)
    assert len(httpserver.log) == 1


# -- the access token ---------------------------------------------------------------------------------------

def test_the_bearer_token_is_sent_and_never_logged(make_app, httpserver, caplog):
    caplog.set_level(logging.DEBUG)
    served(httpserver)
    app, sink = make_app()
    status, body = call(app, hook_body(fhir_server=fhir_url(httpserver)))
    assert status == 200, body
    assert len(httpserver.log) == 7  # the patient read and a search per other key (pendingOrders too)
    for request, _ in httpserver.log:
        assert request.headers["Authorization"] == f"Bearer {TOKEN}"
        assert request.headers["Accept"] == "application/fhir+json"
    assert caplog.records, "the client logs its requests"
    assert TOKEN not in caplog.text
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("cds")]
    assert ours and not any("pat-1" in message for message in ours)
    # every logger but the test FHIR server's own (werkzeug) must keep the patient id out
    service_side = [r.getMessage() for r in caplog.records if not r.name.startswith("werkzeug")]
    assert not any("pat-1" in message for message in service_side)
    assert TOKEN not in repr(sink.calls[0])


def test_without_fhir_authorization_no_authorization_header_is_sent(make_app, httpserver):
    served(httpserver)
    app, _ = make_app()
    body = hook_body(prefetch=without("patient"), fhir_server=fhir_url(httpserver), token=None)
    status, _ = call(app, body)
    assert status == 200
    assert "Authorization" not in httpserver.log[0][0].headers


# -- the FHIR server failing --------------------------------------------------------------------------------

def _answer(status, data, content_type="application/fhir+json"):
    def handler(request: Request) -> Response:
        return Response(data, status=status, content_type=content_type)

    return handler


@pytest.mark.parametrize(("handler", "words"), [
    (_answer(500, json.dumps(outcome("exception", "boom"))), "HTTP 500"),
    (_answer(401, ""), "refused access (HTTP 401)"),
    (_answer(403, json.dumps(outcome("forbidden", "no"))), "refused access (HTTP 403)"),
    (_answer(200, "<html>maintenance</html>", "text/html"), "not JSON"),
    (_answer(200, json.dumps({"hello": "world"})), "not a FHIR resource"),
    (_answer(200, json.dumps(outcome("too-costly", "too many"))), "OperationOutcome (too-costly)"),
    (_answer(200, json.dumps({"resourceType": "Patient", "id": "x"})), "not a Bundle"),
], ids=["500", "401", "403", "not-json", "not-fhir", "operation-outcome", "wrong-type"])
def test_a_failing_fhir_server_is_a_412_naming_the_key(make_app, httpserver, handler, words):
    served(httpserver, handler)
    app, sink = make_app()
    status, body = call(app, hook_body(prefetch=without("estradiol"), fhir_server=fhir_url(httpserver)))
    assert_412_naming(status, body, "estradiol")
    assert body["issue"][0]["expression"] == ["prefetch.estradiol"]
    assert words in body["issue"][0]["diagnostics"]
    assert sink.calls[0].provenance == {**dict.fromkeys(KEYS, "client"), "estradiol": "failed",
                                        PENDING: "empty"}


def test_a_fhir_server_that_is_down_is_a_412(make_app):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = f"http://127.0.0.1:{port}/fhir"
    app, sink = make_app(FHIR_SERVER_ALLOWLIST=server)
    status, body = call(app, hook_body(prefetch=without("dxa"), fhir_server=server))
    assert_412_naming(status, body, "dxa")
    assert "could not be reached" in body["issue"][0]["diagnostics"]
    assert sink.calls[0].provenance["dxa"] == "failed"


def test_a_fhir_server_slower_than_the_read_timeout_is_a_412(make_app, httpserver):
    def slow(request: Request) -> Response:
        time.sleep(0.8)
        return FakeFhir()(request)

    served(httpserver, slow)
    app, _ = make_app(FHIR_READ_TIMEOUT=0.2)
    started = time.perf_counter()
    status, body = call(app, hook_body(prefetch=without("dxa"), fhir_server=fhir_url(httpserver)))
    assert time.perf_counter() - started < 0.7
    deadline = time.monotonic() + 5
    while not httpserver.log and time.monotonic() < deadline:  # let the server finish before the next test
        time.sleep(0.05)
    assert len(httpserver.log) == 1
    assert_412_naming(status, body, "dxa")
    assert "did not answer within 0.2 s" in body["issue"][0]["diagnostics"]


def test_a_server_wide_failure_stops_fetching_and_marks_every_key_failed(make_app, httpserver):
    served(httpserver, _answer(401, ""))
    app, sink = make_app()
    status, body = call(app, hook_body(fhir_server=fhir_url(httpserver)))
    assert_412_naming(status, body, *KEYS)
    assert len(httpserver.log) == 1  # the other keys would be refused the same way
    assert PENDING not in json.dumps(body)
    assert sink.calls[0].provenance == dict.fromkeys([*KEYS, PENDING], "failed")
    assert sink.calls[0].outcome == "412"


def test_a_503_is_retried_and_then_succeeds(make_app, httpserver):
    answers = iter([503, 503])

    def flaky(request: Request) -> Response:
        status = next(answers, None)
        if status is not None:
            return Response("busy", status=status, headers={"Retry-After": "0"})
        return FakeFhir()(request)

    served(httpserver, flaky)
    app, sink = make_app(FHIR_RETRIES=2)
    status, body = call(app, hook_body(prefetch=without("dxa"), fhir_server=fhir_url(httpserver)))
    assert status == 200, body
    assert len(httpserver.log) == 3
    assert [response.status_code for _, response in httpserver.log] == [503, 503, 200]
    assert sink.calls[0].provenance["dxa"] == "fetched"


def test_a_503_that_lasts_beyond_the_retries_is_a_412(make_app, httpserver):
    served(httpserver, _answer(503, "busy", "text/plain"))
    app, _ = make_app(FHIR_RETRIES=1)
    status, body = call(app, hook_body(prefetch=without("dxa"), fhir_server=fhir_url(httpserver)))
    assert_412_naming(status, body, "dxa")
    assert "HTTP 503" in body["issue"][0]["diagnostics"]
    assert len(httpserver.log) == 2


# -- the allow-list -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("allowlist", ["", "https://ehr.example.org/fhir", "http://127.0.0.1:1/fhir"])
def test_a_fhir_server_outside_the_allow_list_gets_no_request(make_app, httpserver, allowlist):
    served(httpserver)
    app, sink = make_app(FHIR_SERVER_ALLOWLIST=allowlist)
    status, body = call(app, hook_body(prefetch=without("dxa", "vitaminD"), fhir_server=fhir_url(httpserver)))
    assert status == 412, body
    assert body["issue"][0]["code"] == "security"
    assert "allow-list" in body["issue"][0]["diagnostics"]
    assert httpserver.log == []
    assert sink.calls[0].provenance["dxa"] == sink.calls[0].provenance["vitaminD"] == "failed"


def test_a_fhir_server_on_a_path_outside_the_allowed_prefix_gets_no_request(make_app, httpserver):
    served(httpserver)
    app, _ = make_app(FHIR_SERVER_ALLOWLIST=httpserver.url_for("/fhir/r4"))
    status, _ = call(app, hook_body(prefetch=without("dxa"), fhir_server=fhir_url(httpserver)))
    assert status == 412
    assert httpserver.log == []


# -- template values are URL-encoded ------------------------------------------------------------------------

def test_context_values_are_url_encoded_in_the_queries(make_app, httpserver):
    served(httpserver)
    odd = "pat 1&code=x#y"
    app, sink = make_app()
    status, body = call(app, hook_body(patient_id=odd, fhir_server=fhir_url(httpserver)))
    assert status == 200, body
    reads = [r for r, _ in httpserver.log if "/Patient/" in r.path]
    assert reads[0].path == f"/fhir/Patient/{odd}"  # one path segment, decoded by the server
    searches = [r for r, _ in httpserver.log if "/Patient/" not in r.path]
    assert len(searches) == 6 and all(r.args["patient"] == odd for r in searches)
    assert all(r.args.getlist("code") != ["x"] for r in searches)
    assert sink.calls[0].provenance["patient"] == "empty"
