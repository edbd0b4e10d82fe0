"""Request limits, CORS and baseline headers over real HTTP: body size (also chunked or with a lying
Content-Length), JSON depth, Bundle entries."""

from __future__ import annotations

import http.client
import json
import socket
from urllib.parse import urlsplit

import pytest
from support import make_token

from cds import create_app

LIMIT = 2000
SERVICE = "/cds-services/bone-health-patient-view"
FEEDBACK = SERVICE + "/feedback"
ORIGIN = "https://app.example.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"


def hook_body(**prefetch) -> dict:
    base = {"patient": {"resourceType": "Patient", "id": "p1", "gender": "male", "birthDate": "1960-01-01"},
            "estradiol": None, "vitaminD": None, "dxa": None, "monitoring": None,
            "medications": None}
    return {"hook": "patient-view", "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
            "context": {"userId": "Practitioner/1", "patientId": "p1"}, "prefetch": {**base, **prefetch}}


def feedback_body(padding: int = 0, card: str = "5b4a1c2e-3f1d-4c59-9a43-2b7f0e9d1a10") -> bytes:
    item = {"card": card, "outcome": "overridden",
            "outcomeTimestamp": "2026-11-22T10:00:00Z", "overrideReason": {"userComment": "x" * padding}}
    return json.dumps({"feedback": [item]}).encode()


@pytest.fixture
def base(auth_config, live_server):
    app = create_app({**auth_config, "MAX_BODY_BYTES": LIMIT, "MAX_JSON_DEPTH": 10, "MAX_BUNDLE_ENTRIES": 3,
                      "CORS_ORIGINS": f"{ORIGIN}, https://other.example.org"})
    return live_server(app)


def auth(base: str, path: str) -> dict[str, str]:
    return {"Authorization": "Bearer " + make_token(base + path)}


def json_headers(base: str, path: str) -> dict[str, str]:
    return {**auth(base, path), "Content-Type": "application/json"}


def request(base: str, method: str, path: str, body=None, headers=None, chunked: bool = False):
    conn = http.client.HTTPConnection(urlsplit(base).netloc, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {}, encode_chunked=chunked)
        response = conn.getresponse()
        data = response.read()
        return response.status, response.headers, (json.loads(data) if data.strip() else None)
    finally:
        conn.close()


def raw(base: str, head: str, body: bytes, *, close_write: bool = False) -> tuple[int, dict]:
    """Send bytes exactly as given; return the status and the JSON body of the answer."""
    with socket.create_connection((urlsplit(base).hostname, urlsplit(base).port), timeout=10) as sock:
        sock.sendall(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
        if close_write:
            sock.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head_part, _, payload = received.partition(b"\r\n\r\n")
    return int(head_part.split()[1]), json.loads(payload) if payload.strip() else {}


def assert_outcome(body, code: str):
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["code"] == code


def test_body_over_the_limit_is_413(base):
    status, _, body = request(base, "POST", FEEDBACK, feedback_body(LIMIT), json_headers(base, FEEDBACK))
    assert status == 413
    assert_outcome(body, "too-costly")


def test_chunked_body_over_the_limit_is_413(base):
    data = feedback_body(LIMIT * 4)
    chunks = (data[i:i + 500] for i in range(0, len(data), 500))
    status, _, body = request(base, "POST", FEEDBACK, chunks, json_headers(base, FEEDBACK), chunked=True)
    assert status == 413
    assert_outcome(body, "too-costly")


def issued_card(base: str) -> str:
    """A card the service issued to the test client (feedback is taken only for such cards)."""
    order = {"resourceType": "MedicationRequest", "id": "m1", "status": "active", "intent": "order",
             "subject": {"reference": "Patient/p1"},
             "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": "84857"}]}}
    bundle = {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": order}]}
    body = hook_body(medications=bundle)
    status, _, answer = request(base, "POST", SERVICE, json.dumps(body).encode(), json_headers(base, SERVICE))
    assert status == 200 and answer["cards"], answer
    return answer["cards"][0]["uuid"]


def test_chunked_body_within_the_limit_is_read(base):
    data = feedback_body(100, card=issued_card(base))
    chunks = (data[i:i + 50] for i in range(0, len(data), 50))
    status, _, body = request(base, "POST", FEEDBACK, chunks, json_headers(base, FEEDBACK), chunked=True)
    assert status == 200
    assert body == {"accepted": 1}


def _head(base: str, length: int) -> str:
    token = auth(base, FEEDBACK)["Authorization"]
    return (f"POST {FEEDBACK} HTTP/1.1\nHost: {urlsplit(base).netloc}\nAuthorization: {token}\n"
            f"Content-Type: application/json\nContent-Length: {length}\nConnection: close\n")


def test_content_length_shorter_than_the_body_reads_no_further(base):
    status, body = raw(base, _head(base, 20), feedback_body(LIMIT * 2))
    assert status == 400  # the first 20 bytes are not a JSON document
    assert_outcome(body, "structure")


def test_content_length_longer_than_the_body_is_400_when_the_client_stops(base):
    status, body = raw(base, _head(base, LIMIT - 1), feedback_body(10), close_write=True)
    assert status == 400
    assert body["resourceType"] == "OperationOutcome"


def test_huge_content_length_is_refused_before_reading(base):
    status, body = raw(base, _head(base, 10**12), b"{}")
    assert status == 413
    assert_outcome(body, "too-costly")


@pytest.mark.parametrize("payload", [
    b'{"feedback": ' + b"[" * 11 + b"]" * 11 + b"}",
    b"[" * 100_000 + b"]" * 100_000,
    b'{"feedback": ' + b"1" * 1500 + b"}",
], ids=["depth-12", "depth-100000-over-size", "integer-of-1500-digits"])
def test_deep_or_odd_json_is_400_or_413_never_500(base, payload):
    status, _, body = request(base, "POST", FEEDBACK, payload, json_headers(base, FEEDBACK))
    assert status in (400, 413)
    assert body["resourceType"] == "OperationOutcome"
    if len(payload) <= LIMIT:
        assert status == 400


def test_integer_past_pythons_digit_limit_is_400(auth_config, live_server):
    base = live_server(create_app(auth_config))
    status, _, body = request(base, "POST", FEEDBACK, b'{"feedback": ' + b"1" * 5000 + b"}",
                              json_headers(base, FEEDBACK))
    assert status == 400
    assert_outcome(body, "structure")


def _bundle(n: int) -> dict:
    return {"resourceType": "Bundle", "type": "searchset", "entry": [
        {"resource": {"resourceType": "Observation", "id": f"o{i}", "status": "final",
                      "code": {"text": "x"}, "subject": {"reference": "Patient/p1"}}} for i in range(n)]}


def test_bundle_with_too_many_entries_is_413(base):
    data = json.dumps(hook_body(vitaminD=_bundle(4))).encode()
    assert len(data) < LIMIT
    status, _, body = request(base, "POST", SERVICE, data, json_headers(base, SERVICE))
    assert status == 413
    assert_outcome(body, "too-costly")
    assert "prefetch.vitaminD" in body["issue"][0]["diagnostics"]


def test_unauthenticated_big_body_is_401_without_reading_it(base):
    status, headers, body = request(base, "POST", FEEDBACK, feedback_body(LIMIT * 10),
                                    {"Content-Type": "application/json"})
    assert status == 401
    assert body is None
    assert headers["WWW-Authenticate"] == "Bearer"


def test_cors_preflight_needs_no_token(base):
    status, headers, _ = request(base, "OPTIONS", SERVICE, headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type"})
    assert status == 200
    assert headers["Access-Control-Allow-Origin"] == ORIGIN
    assert {h.strip().lower() for h in headers["Access-Control-Allow-Headers"].split(",")} == {
        "authorization", "content-type"}
    assert "POST" in headers["Access-Control-Allow-Methods"]
    assert "Origin" in headers["Vary"]


def test_cors_answers_only_configured_origins(base):
    status, headers, _ = request(base, "OPTIONS", "/cds-services", headers={
        "Origin": "https://evil.example.org", "Access-Control-Request-Method": "GET"})
    assert "Access-Control-Allow-Origin" not in headers
    status, headers, _ = request(base, "GET", "/cds-services", headers={**auth(base, "/cds-services"),
                                                                        "Origin": ORIGIN})
    assert status == 200
    assert headers["Access-Control-Allow-Origin"] == ORIGIN
    status, headers, _ = request(base, "GET", "/cds-services", headers={"Origin": ORIGIN})
    assert status == 401  # a refusal the browser can read
    assert headers["Access-Control-Allow-Origin"] == ORIGIN


def test_no_cors_by_default(auth_config, live_server):
    base = live_server(create_app(auth_config))
    _, headers, _ = request(base, "OPTIONS", "/cds-services", headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "GET"})
    assert "Access-Control-Allow-Origin" not in headers


def test_any_origin_when_configured_as_star(auth_config, live_server):
    base = live_server(create_app({**auth_config, "CORS_ORIGINS": "*"}))
    _, headers, _ = request(base, "OPTIONS", "/cds-services", headers={
        "Origin": "https://anywhere.example.org", "Access-Control-Request-Method": "GET"})
    assert headers["Access-Control-Allow-Origin"] == "*"


@pytest.mark.parametrize("method, path, expected", [
    ("GET", "/health", 200), ("GET", "/cds-services", 401), ("GET", "/no-such-page", 404),
    ("OPTIONS", "/cds-services", 200)])
def test_every_response_says_nosniff(base, method, path, expected):
    status, headers, _ = request(base, method, path)
    assert status == expected
    assert headers["X-Content-Type-Options"] == "nosniff"
