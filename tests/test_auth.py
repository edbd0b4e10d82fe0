"""Client authentication over the Flask test client: valid ES384 and RS384 tokens pass, bad ones get 401."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import jwt
import pytest
from builders import hook_body, med, patient
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from support import PRIVATE_KEYS, PUBLIC_JWKS, TEST_ISS, make_token

from cds import create_app
from cds.errors import ConfigurationError
from cds.ledger.memory import MemoryLedger

BASE = "http://localhost"
DISCOVERY = f"{BASE}/cds-services"
SERVICE = "/cds-services/bone-health-patient-view"
FEEDBACK = SERVICE + "/feedback"

HOOK_BODY = {
    "hook": "patient-view", "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
    "context": {"userId": "Practitioner/1", "patientId": "p1"},
    "prefetch": {"patient": {"resourceType": "Patient", "id": "p1", "gender": "male",
                             "birthDate": "1960-01-01"},
                 "estradiol": None, "vitaminD": None, "dxa": None, "monitoring": None,
                 "medications": None},
}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def raw_token(header: dict, claims: dict, signing_input_key: bytes | None = None) -> str:
    """A token assembled by hand: unsigned, or HMAC-SHA256 signed with ``signing_input_key``."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    if signing_input_key is None:
        return signing_input + "."
    mac = hmac.new(signing_input_key, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64(mac)


def fresh_claims(aud: str = DISCOVERY) -> dict:
    now = int(time.time())
    return {"iss": TEST_ISS, "aud": aud, "exp": now + 300, "iat": now, "jti": f"j-{time.monotonic_ns()}"}


@pytest.fixture
def app(auth_config):
    return create_app(auth_config)


@pytest.fixture
def client(app):
    return app.test_client()


def get_discovery(client, token: str | None):
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return client.get("/cds-services", headers=headers)


def assert_bare_401(response):
    assert response.status_code == 401
    assert response.data == b""
    assert response.headers["WWW-Authenticate"] == "Bearer"


@pytest.mark.parametrize("alg", ["ES384", "RS384"])
def test_valid_token_is_accepted_for_discovery(client, alg):
    response = get_discovery(client, make_token(DISCOVERY, alg=alg))
    assert response.status_code == 200
    assert {s["id"] for s in response.get_json()["services"]} >= {"bone-health-patient-view"}


@pytest.mark.parametrize("aud", [DISCOVERY + "/", [f"{BASE}/cds-services/other", DISCOVERY], "HTTP://LOCALHOST:80/cds-services"])
def test_aud_may_be_an_array_or_differ_only_by_final_slash_case_or_default_port(client, aud):
    assert get_discovery(client, make_token(aud)).status_code == 200


def test_service_call_and_feedback_need_and_accept_a_token(auth_config, client):
    # a card this client was issued, for the feedback below (feedback is taken only for such cards)
    issued = client.post(SERVICE, json=hook_body("patient-view", record=[patient(gender="female"), med()]),
                         headers={"Authorization": "Bearer " + make_token(BASE + SERVICE)})
    card_uuid = issued.get_json()["cards"][0]["uuid"]
    sink = MemoryLedger()
    recorded = sink.calls
    # the same service on the same audit database, built to record its hook calls to the sink
    client = create_app(auth_config, audit_sink=sink).test_client()
    assert_bare_401(client.post(SERVICE, json=HOOK_BODY))
    assert recorded == []  # refused before the service saw the call
    # A call past authentication that stops before the rules engine (no prefetch, no fhirServer: the
    # service's own 412), so the test does not depend on the engine.
    response = client.post(SERVICE, json={**HOOK_BODY, "prefetch": {}},
                           headers={"Authorization": "Bearer " + make_token(BASE + SERVICE, alg="RS384")})
    assert response.status_code == 412
    assert response.get_json()["resourceType"] == "OperationOutcome"
    assert [(r.client_iss, r.status) for r in recorded] == [(TEST_ISS, 412)]

    feedback = {"feedback": [{"card": card_uuid, "outcome": "overridden",
                              "outcomeTimestamp": "2026-11-22T10:00:00Z"}]}
    assert_bare_401(client.post(FEEDBACK, json=feedback))
    response = client.post(FEEDBACK, json=feedback,
                           headers={"Authorization": "Bearer " + make_token(BASE + FEEDBACK)})
    assert response.status_code == 200
    assert response.get_json() == {"accepted": 1}


def test_unknown_service_without_token_is_401_not_404(client):
    assert_bare_401(client.post("/cds-services/no-such-service", json=HOOK_BODY))


def test_health_needs_no_token(client):
    response = client.get("/health")
    assert response.status_code == 200
    assert response.get_json()["status"] == "ok"


def _other_key_token() -> str:
    """Right kid and issuer, signed by a key the service does not know."""
    other = ec.generate_private_key(ec.SECP384R1())
    return jwt.encode(fresh_claims(), other, algorithm="ES384",
                      headers={"kid": PRIVATE_KEYS["ES384"]["kid"], "typ": "JWT"})


def _hs256_with_public_key() -> str:
    public = jwt.PyJWK(PUBLIC_JWKS["keys"][0]).key
    pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    header = {"alg": "HS256", "typ": "JWT", "kid": PRIVATE_KEYS["ES384"]["kid"]}
    return raw_token(header, fresh_claims(), signing_input_key=pem)


def _tampered() -> str:
    head, body, sig = make_token(DISCOVERY).split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=="))
    claims["iss"] = TEST_ISS + "/admin"
    return ".".join([head, b64(json.dumps(claims).encode()), sig])


NEGATIVE = {
    "malformed": lambda: "not.a.jwt",
    "garbage": lambda: "abc",
    "alg none": lambda: raw_token({"alg": "none", "typ": "JWT", "kid": PRIVATE_KEYS["ES384"]["kid"]},
                                  fresh_claims()),
    "HS256 with the public key as secret": _hs256_with_public_key,
    "alg as a list": lambda: raw_token({"alg": ["ES384"], "typ": "JWT", "kid": "k"}, fresh_claims()),
    "header not an object": lambda: b64(b"[1]") + "." + b64(json.dumps(fresh_claims()).encode()) + ".c2ln",
    "claims not an object": lambda: raw_token({"alg": "ES384", "typ": "JWT", "kid": "k"}, ["x"]),
    "wrong signature": _other_key_token,
    "tampered claims": _tampered,
    "unknown kid": lambda: make_token(DISCOVERY, headers={"kid": "no-such-kid"}),
    "no kid": lambda: make_token(DISCOVERY, drop=("kid",)),
    "typ not JWT": lambda: make_token(DISCOVERY, headers={"typ": "at+jwt"}),
    "untrusted iss": lambda: make_token(DISCOVERY, iss="https://evil.example.org"),
    "jku not registered": lambda: make_token(DISCOVERY, headers={"jku": "https://evil.example.org/jwks.json"}),
    "aud of another endpoint": lambda: make_token(BASE + SERVICE),
    "aud with a query string": lambda: make_token(DISCOVERY + "?x=1"),
    "aud of another host": lambda: make_token("https://other.example.org/cds-services"),
    "no aud": lambda: make_token(DISCOVERY, drop=("aud",)),
    "expired": lambda: make_token(DISCOVERY, now=time.time() - 400),
    "iat in the future": lambda: make_token(DISCOVERY, claims={"iat": int(time.time()) + 600}),
    "no exp": lambda: make_token(DISCOVERY, drop=("exp",)),
    "exp as a string": lambda: make_token(DISCOVERY, claims={"exp": str(int(time.time()) + 60)}),
    "exp NaN": lambda: make_token(DISCOVERY, claims={"exp": float("nan"), "iat": float("nan")}),
    "no iat": lambda: make_token(DISCOVERY, drop=("iat",)),
    "no jti": lambda: make_token(DISCOVERY, drop=("jti",)),
    "empty jti": lambda: make_token(DISCOVERY, claims={"jti": ""}),
    "numeric jti": lambda: make_token(DISCOVERY, claims={"jti": 12345}),
    "lives too long": lambda: make_token(DISCOVERY, lifetime=7 * 24 * 3600),
    "RS384 header on the EC key": lambda: make_token(DISCOVERY, alg="ES384",
                                                     headers={"kid": PRIVATE_KEYS["RS384"]["kid"]}),
    "PS384 with a key declared RS384": lambda: jwt.encode(
        fresh_claims(), jwt.PyJWK(PRIVATE_KEYS["RS384"], algorithm="PS384").key, algorithm="PS384",
        headers={"kid": PRIVATE_KEYS["RS384"]["kid"], "typ": "JWT"}),
}


@pytest.mark.parametrize("case", sorted(NEGATIVE))
def test_bad_token_is_a_bare_401(client, case, caplog):
    caplog.set_level("WARNING", logger="cds.auth")
    response = get_discovery(client, NEGATIVE[case]())
    assert_bare_401(response)
    assert any(r.name == "cds.auth" and "refused GET /cds-services" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("authorization", [None, "", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Token abc"])
def test_missing_or_non_bearer_authorization_is_401(client, authorization):
    headers = {} if authorization is None else {"Authorization": authorization}
    assert_bare_401(client.get("/cds-services", headers=headers))


def test_replayed_jti_is_refused(client):
    token = make_token(DISCOVERY)
    assert get_discovery(client, token).status_code == 200
    assert_bare_401(get_discovery(client, token))
    # the same jti, freshly signed, is still a replay
    jti = jwt.decode(token, options={"verify_signature": False})["jti"]
    assert_bare_401(get_discovery(client, make_token(DISCOVERY, jti=jti)))


def test_same_jti_from_another_trusted_issuer_is_not_a_replay(tmp_path, auth_config):
    other = "https://second-ehr.example.org"
    path = tmp_path / "two.json"
    clients = [{"iss": TEST_ISS, "jwks": PUBLIC_JWKS}, {"iss": other, "jwks": PUBLIC_JWKS}]
    path.write_text(json.dumps({"clients": clients}))
    client = create_app({**auth_config, "TRUSTED_CLIENTS": str(path)}).test_client()
    assert get_discovery(client, make_token(DISCOVERY, jti="shared-id")).status_code == 200
    assert get_discovery(client, make_token(DISCOVERY, jti="shared-id", iss=other)).status_code == 200


def test_leeway_is_a_setting(auth_config):
    lenient = create_app({**auth_config, "AUTH_LEEWAY_SECONDS": 120}).test_client()
    strict = create_app({**auth_config, "AUTH_LEEWAY_SECONDS": 0}).test_client()
    just_expired = dict(now=time.time() - 360, lifetime=300)  # expired 60 s ago
    assert get_discovery(lenient, make_token(DISCOVERY, **just_expired)).status_code == 200
    assert_bare_401(get_discovery(strict, make_token(DISCOVERY, **just_expired)))


def test_public_url_sets_the_expected_audience(auth_config):
    client = create_app({**auth_config, "PUBLIC_URL": "https://cds.example.org/bone/"}).test_client()
    assert_bare_401(get_discovery(client, make_token(DISCOVERY)))
    assert get_discovery(client, make_token("https://cds.example.org/bone/cds-services")).status_code == 200


def test_verified_tenant_and_issuer_reach_flask_g(app):
    seen = {}

    @app.after_request
    def spy(response):
        from flask import g
        seen.update(iss=g.get("client_iss"), tenant=g.get("client_tenant"))
        return response

    assert get_discovery(app.test_client(), make_token(DISCOVERY, tenant="site-7")).status_code == 200
    assert seen == {"iss": TEST_ISS, "tenant": "site-7"}


def test_no_trusted_clients_without_dev_mode_refuses_everything_and_says_why(tmp_path, caplog):
    caplog.set_level("ERROR", logger="cds.auth")
    app = create_app({"DEV_MODE": False, "DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite3"})
    assert any("every call to the CDS endpoints will be refused" in r.getMessage() for r in caplog.records)
    assert_bare_401(get_discovery(app.test_client(), make_token(DISCOVERY)))
    assert app.test_client().get("/health").status_code == 200


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"),
    ('{"clients": {}}', "'clients' list"),
    ('{"clients": [{"iss": "x"}]}', "neither 'jwks' keys nor 'jku' URLs"),
    ('{"clients": [{"iss": "x", "jwks": {"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "h"}]}}]}',
     "not an asymmetric signing key"),
    ('{"clients": [{"iss": "x", "jku": ["ftp://keys.example.org"]}]}', "http(s) URLs"),
])
def test_bad_trusted_clients_file_stops_start_up(tmp_path, content, message):
    path = tmp_path / "clients.json"
    path.write_text(content)
    with pytest.raises(ConfigurationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        create_app({"DEV_MODE": False, "TRUSTED_CLIENTS": str(path), "DATABASE_URL": f"sqlite:///{tmp_path}/d.db"})


def test_authed_client_fixture_signs_for_the_url_called(auth_config, authed_client):
    client = authed_client(create_app(auth_config))
    assert client.get("/cds-services").status_code == 200
    # past authentication: no prefetch and no fhirServer is the service's own 412
    response = client.post(SERVICE, json={**HOOK_BODY, "prefetch": {}})
    assert response.status_code == 412
    assert response.get_json()["resourceType"] == "OperationOutcome"


def test_verifier_runs_on_an_injected_clock():
    from cds.auth.trusted_clients import parse_trusted_clients
    from cds.auth.verify import TokenVerifier
    from cds.errors import Unauthorized

    seen: set[tuple[str, str]] = set()

    def remember(iss, jti, expires_at):
        if (iss, jti) in seen:
            return False
        seen.add((iss, jti))
        return True

    clients = parse_trusted_clients({"clients": [{"iss": TEST_ISS, "jwks": PUBLIC_JWKS}]}, where="test")
    in_2015 = 1_430_000_000.0
    token = make_token(DISCOVERY, now=in_2015)
    then = TokenVerifier(clients, first_use=remember, clock=lambda: in_2015 + 60)
    identity = then.verify(f"Bearer {token}", DISCOVERY)
    assert (identity.iss, identity.kid) == (TEST_ISS, PRIVATE_KEYS["ES384"]["kid"])
    later = TokenVerifier(clients, first_use=remember, clock=lambda: in_2015 + 3600)
    with pytest.raises(Unauthorized, match="expired"):
        later.verify(f"Bearer {make_token(DISCOVERY, now=in_2015)}", DISCOVERY)


def test_a_key_set_with_private_keys_is_reduced_to_public_keys(tmp_path, auth_config):
    from support import DATA

    path = tmp_path / "with-private.json"
    full = json.loads((DATA / "test-client-jwks.json").read_text())
    path.write_text(json.dumps({"clients": [{"iss": TEST_ISS, "jwks": full}]}))
    app = create_app({**auth_config, "TRUSTED_CLIENTS": str(path)})
    keys = app.extensions["cds.auth"].clients[TEST_ISS].keys
    assert all(not hasattr(k.key, "private_numbers") for k in keys.values())
    assert get_discovery(app.test_client(), make_token(DISCOVERY, alg="RS384")).status_code == 200
