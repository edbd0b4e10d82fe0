"""The OpenAPI document keeps step with the service, and the service holds up against it (schemathesis)."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import os
import re
import tempfile
from pathlib import Path

import hypothesis
import jsonschema
import pytest
import schemathesis
from live_server import KEYS
from openapi_spec_validator import validate
from support import TEST_ISS, trusted_clients_file_in

from cds.auth.client_token import Signer, load_private_jwk
from cds.web.openapi import document

HTTP_METHODS = {"get", "post", "put", "patch", "delete"}
DOCUMENTED_BLUEPRINTS = ("cds_hooks.", "openapi.", "metrics.", "cds_audit_api.")
AUDITOR_TOKEN = "auditor-token-for-openapi-tests"
AUDITOR_ENTRY = f"carol:{hashlib.sha256(AUDITOR_TOKEN.encode()).hexdigest()}"
AUDITOR = {"Authorization": f"Bearer {AUDITOR_TOKEN}"}
AUDIT_CONFIG = {
    "NOW": dt.datetime(2026, 11, 22, tzinfo=dt.UTC),
    "AUDITOR_TOKENS": AUDITOR_ENTRY,
    "AUDIT_PATIENT_KEY_SECRET": "openapi-test-patient-key-secret",
}


@pytest.fixture
def doc(client):
    response = client.get("/openapi.json")
    assert response.status_code == 200
    return response.get_json()


def flask_path(rule: str) -> str:
    return re.sub(r"<(?:[a-z]+:)?([A-Za-z_]+)>", r"{\1}", rule)


def test_the_document_is_valid_openapi(doc):
    validate(doc)
    assert doc["openapi"].startswith("3.")


def test_every_route_of_the_service_is_documented(app, doc):
    rules = [r for r in app.url_map.iter_rules() if r.endpoint.startswith(DOCUMENTED_BLUEPRINTS)]
    assert len(rules) >= 11
    assert len([r for r in rules if r.endpoint.startswith("cds_audit_api.")]) >= 5
    for rule in rules:
        path = flask_path(rule.rule)
        assert path in doc["paths"], f"{rule.rule} ({rule.endpoint}) is not in the OpenAPI document"
        methods = {m.lower() for m in rule.methods} & HTTP_METHODS
        assert methods <= set(doc["paths"][path]), (
            f"{rule.rule}: {methods - set(doc['paths'][path])} undocumented"
        )


def assert_every_documented_path_is_served(app, doc):
    served = {(flask_path(r.rule), m.lower()) for r in app.url_map.iter_rules() for m in r.methods}
    for path, operations in doc["paths"].items():
        for method in set(operations) & HTTP_METHODS:
            assert (path, method) in served, f"{method.upper()} {path} is documented but not served"


def test_every_documented_path_is_served(app, doc):
    assert any(path.startswith("/audit/api/") for path in doc["paths"])
    assert_every_documented_path_is_served(app, doc)


def test_the_auditor_html_pages_are_left_out(app, doc):
    pages = [r for r in app.url_map.iter_rules() if r.endpoint.startswith("cds_audit_web.")]
    assert pages
    for rule in pages:
        assert flask_path(rule.rule) not in doc["paths"]
    assert "HTML pages under /audit" in doc["info"]["description"]


def test_without_the_audit_trail_the_auditor_api_is_left_out(auth_config, authed_client):
    from cds import create_app

    app = create_app({**auth_config, "AUDIT": False})
    doc = authed_client(app).get("/openapi.json").get_json()
    assert not [p for p in doc["paths"] if p.startswith("/audit")]
    assert "/cds-services/{service_id}" in doc["paths"]
    assert_every_documented_path_is_served(app, doc)


def examples(doc):
    """Every (where, schema, example) in the document: request bodies and responses."""
    for path, operations in doc["paths"].items():
        for method, op in operations.items():
            body = (op.get("requestBody") or {}).get("content", {})
            for media_type, media in body.items():
                if "example" in media:
                    yield f"{method.upper()} {path} request {media_type}", media["schema"], media["example"]
            for status, response in op.get("responses", {}).items():
                for media_type, media in (response.get("content") or {}).items():
                    if "example" in media:
                        yield (
                            f"{method.upper()} {path} {status} {media_type}",
                            media["schema"],
                            media["example"],
                        )


def test_every_example_validates_against_its_schema(doc):
    found = list(examples(doc))
    assert len(found) >= 10
    for where, schema, example in found:
        wrapped = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "components": doc["components"],
            **schema,
        }
        errors = list(jsonschema.Draft202012Validator(wrapped).iter_errors(example))
        assert not errors, f"{where}: {errors[0].message} at {list(errors[0].absolute_path)}"


def test_real_answers_validate_against_the_schemas(client, doc):
    from builders import hook_body, med, obs, patient

    def check(schema_name, data):
        wrapped = {"components": doc["components"], "$ref": f"#/components/schemas/{schema_name}"}
        jsonschema.Draft202012Validator(wrapped).validate(data)

    check("Discovery", client.get("/cds-services").get_json())
    check("Health", client.get("/health").get_json())
    body = hook_body(
        "order-select",
        record=[patient(), med(), obs("2243-4", 8, "pg/mL", "2026-10-01")],
        drafts=[med(status="draft", mid="d1", timing={"frequency": 2, "period": 1, "periodUnit": "wk"})],
    )
    check("HookRequest", body)
    answer = client.post("/cds-services/bone-health-order-select", json=body).get_json()
    assert len(answer["cards"]) >= 2
    check("CardsResponse", answer)
    check("OperationOutcome", client.post("/cds-services/bone-health-patient-view", json={}).get_json())


def test_the_auditor_api_takes_auditor_credentials_only():
    doc = document()
    audit_ops = [
        op for path, ops in doc["paths"].items() if path.startswith("/audit/") for op in ops.values()
    ]
    assert len(audit_ops) == 6  # records, record, rules, rule, quarantine, verify
    schemes = doc["components"]["securitySchemes"]
    assert schemes["auditorBearer"] == {**schemes["auditorBearer"], "type": "http", "scheme": "bearer"}
    assert schemes["auditorBasic"] == {**schemes["auditorBasic"], "type": "http", "scheme": "basic"}
    for op in audit_ops:
        assert op["tags"] == ["Audit"]
        assert op["security"] == [{"auditorBearer": []}, {"auditorBasic": []}]
        assert "content" not in op["responses"]["401"]


def test_real_auditor_answers_validate_against_the_schemas(auth_config, authed_client):
    from builders import hook_body, med, obs, patient

    from cds import create_app

    app = create_app({**auth_config, **AUDIT_CONFIG})
    client = authed_client(app)
    doc = client.get("/openapi.json").get_json()

    def check(schema_name, response, status=200):
        assert response.status_code == status, response.get_data(as_text=True)
        wrapped = {"components": doc["components"], "$ref": f"#/components/schemas/{schema_name}"}
        jsonschema.Draft202012Validator(wrapped).validate(response.get_json())
        return response.get_json()

    body = hook_body("patient-view", record=[patient(), med(), obs("2243-4", 8, "pg/mL", "2026-10-01")])
    cards = client.post("/cds-services/bone-health-patient-view", json=body).get_json()["cards"]
    assert cards
    page = check("AuditRecordPage", client.get("/audit/api/records?limit=10", headers=AUDITOR))
    assert page["total"] == 1 and page["records"][0]["cards"]
    seq = page["records"][0]["seq"]
    check("AuditRecord", client.get(f"/audit/api/records/{seq}", headers=AUDITOR))
    by_card = check("AuditRecord", client.get(f"/audit/api/records/{cards[0]['uuid']}", headers=AUDITOR))
    assert by_card["seq"] == seq
    stats = check("AuditRuleStatsList", client.get("/audit/api/rules", headers=AUDITOR))
    rule_id = next(s["rule"] for s in stats["rules"] if s["cardsShown"])
    check("AuditRuleStats", client.get(f"/audit/api/rules/{rule_id}", headers=AUDITOR))
    assert check("AuditVerification", client.get("/audit/api/verify", headers=AUDITOR))["ok"] is True
    check("OperationOutcome", client.get("/audit/api/records/999", headers=AUDITOR), 404)
    check("OperationOutcome", client.get("/audit/api/records?since=yesterday", headers=AUDITOR), 400)

    basic = base64.b64encode(f"carol:{AUDITOR_TOKEN}".encode()).decode()
    assert client.get("/audit/api/verify", headers={"Authorization": f"Basic {basic}"}).status_code == 200
    refused = client.get("/audit/api/verify")  # the CDS client's JWT is no auditor credential
    assert refused.status_code == 401 and refused.get_data() == b""
    assert refused.headers["WWW-Authenticate"].startswith("Basic")


# -- property-based tests against the document ---------------------------------------------------------------


TRUSTED = tempfile.TemporaryDirectory(prefix="cds-openapi-")  # removed when the test process ends


def _app():
    from cds import create_app

    trusted = trusted_clients_file_in(Path(TRUSTED.name))
    return create_app(
        {**AUDIT_CONFIG, "DATABASE_URL": "sqlite://", "DEV_MODE": False, "TRUSTED_CLIENTS": str(trusted)}
    )


APP = _app()
SIGNER = Signer(load_private_jwk(KEYS), iss=TEST_ISS)
SCHEMA = schemathesis.openapi.from_wsgi("/openapi.json", APP)
CHECKS = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_schema_conformance,
]


# A bounded, repeatable run by default; FUZZ_EXAMPLES=2000 FUZZ_RANDOM=1 explores further.
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "40"))
RANDOM = os.environ.get("FUZZ_RANDOM") == "1"


@SCHEMA.parametrize()
@hypothesis.settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=not RANDOM,
    database=None,
    suppress_health_check=list(hypothesis.HealthCheck),
)
def test_the_service_holds_up_against_its_document(case):
    """No 5xx for any generated request; every answer's status, type and body are the documented ones.

    Each call carries a client JWT (test key set, issuer ``TEST_ISS``, ``aud`` the URL called)
    as a CDS client's would; a service that checks tokens must trust that key for this test to go deeper
    than the 401. Calls to the auditor API carry an auditor token the app trusts instead.
    """
    url = f"http://localhost{case.formatted_path}"
    headers = AUDITOR if case.formatted_path.startswith("/audit/") else SIGNER.headers(url)
    case.call_and_validate(checks=CHECKS, headers=headers)
