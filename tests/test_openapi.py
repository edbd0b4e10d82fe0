"""The OpenAPI document keeps step with the service, and the service holds up against it (schemathesis)."""

from __future__ import annotations

import os
import re

import hypothesis
import jsonschema
import pytest
import schemathesis
from live_server import KEYS
from openapi_spec_validator import validate

from cds.client_token import Signer, load_private_jwk
from cds.openapi import document

HTTP_METHODS = {"get", "post", "put", "patch", "delete"}


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
    rules = [
        r for r in app.url_map.iter_rules() if r.endpoint.startswith(("cds_hooks.", "openapi.", "metrics."))
    ]
    assert len(rules) >= 6
    for rule in rules:
        path = flask_path(rule.rule)
        assert path in doc["paths"], f"{rule.rule} ({rule.endpoint}) is not in the OpenAPI document"
        methods = {m.lower() for m in rule.methods} & HTTP_METHODS
        assert methods <= set(doc["paths"][path]), (
            f"{rule.rule}: {methods - set(doc['paths'][path])} undocumented"
        )


def test_every_documented_path_is_served(app, doc):
    served = {(flask_path(r.rule), m.lower()) for r in app.url_map.iter_rules() for m in r.methods}
    for path, operations in doc["paths"].items():
        for method in set(operations) & HTTP_METHODS:
            assert (path, method) in served, f"{method.upper()} {path} is documented but not served"


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


def test_the_auditor_api_has_a_marked_place():
    doc = document()
    assert "Audit" in [t["name"] for t in doc["tags"]]
    import cds.openapi as mod

    assert isinstance(mod.AUDIT_PATHS, dict) and isinstance(mod.AUDIT_SCHEMAS, dict)


# -- property-based tests against the document ---------------------------------------------------------------


def _app():
    import datetime as dt

    from cds import create_app

    return create_app({"NOW": dt.datetime(2026, 11, 22, tzinfo=dt.UTC), "DATABASE_URL": "sqlite://"})


APP = _app()
SIGNER = Signer(load_private_jwk(KEYS), iss="urn:cds:test-client")
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

    Each call carries a client JWT (test key set, issuer ``urn:cds:test-client``, ``aud`` the URL called)
    as a CDS client's would; a service that checks tokens must trust that key for this test to go deeper
    than the 401.
    """
    url = f"http://localhost{case.formatted_path}"
    case.call_and_validate(checks=CHECKS, headers=SIGNER.headers(url))
