"""The service's OpenAPI 3.1 document, served at ``GET /openapi.json``.

Built from the same tables the service uses (service ids, hooks, the rule pack's prefetch templates), so
it cannot drift on those; ``tests/test_openapi.py`` keeps the rest in step (every route documented, every
documented path served, every example valid against its schema) and fuzzes the service against it.
The CDS Hooks request and response schemas are generated from the models the service validates
requests with (``cds/hooks/models.py``). A 401 has an empty body by design: nothing that helps an
attacker.
"""

from __future__ import annotations

import copy
from typing import Any

from flask import Blueprint, current_app, jsonify

from cds.hooks.schemas import (
    EXAMPLE_CARD,
    EXAMPLE_FEEDBACK,
    EXAMPLE_REQUEST,
    JSON,
    SCHEMAS,
    SERVER_ERROR,
    SERVICE_IDS,
    UNAUTHORIZED,
    error_response,
    json_response,
    schema_ref,
)
from cds.hooks.services import discovery_document
from cds.review import auditor_openapi as _audit

bp = Blueprint("openapi", __name__)

SERVICE_ID = {
    "name": "service_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "enum": SERVICE_IDS},
    "description": "The service's id, as listed by discovery.",
}

PATHS: dict[str, Any] = {
    "/cds-services": {
        "get": {
            "operationId": "discovery",
            "tags": ["CDS Hooks"],
            "summary": "Discovery: the services offered",
            "security": [{"clientJWT": []}],
            "responses": {
                "200": json_response("Discovery", None, "The services, with their prefetch templates."),
                "401": UNAUTHORIZED,
                "500": SERVER_ERROR,
            },
        }
    },
    "/cds-services/{service_id}": {
        "post": {
            "operationId": "callService",
            "tags": ["CDS Hooks"],
            "summary": "Call a service for a hook",
            "security": [{"clientJWT": []}],
            "parameters": [SERVICE_ID],
            "requestBody": {
                "required": True,
                "content": {JSON: {"schema": schema_ref("HookRequest"), "example": EXAMPLE_REQUEST}},
            },
            "responses": {
                "200": json_response(
                    "CardsResponse",
                    {"cards": [EXAMPLE_CARD]},
                    "Cards (an empty list when there is no advice).",
                ),
                "400": error_response(
                    "The request is malformed: the diagnostics name the field.",
                    "context.patientId is required",
                    "required",
                    "context.patientId",
                ),
                "401": UNAUTHORIZED,
                "404": error_response("No such service.", "no CDS service with id 'x'", "not-found"),
                "412": error_response(
                    "Data the rules need was neither prefetched nor fetchable.",
                    "prefetch data missing for dxa and no fhirServer to fetch it from",
                    "not-found",
                ),
                "413": error_response(
                    "The body or a Bundle is larger than the service accepts.",
                    "request body is 6000000 bytes, more than the limit of 5000000",
                    "too-costly",
                ),
                "500": SERVER_ERROR,
                "408": error_response(
                    "The body did not arrive in time (production server).",
                    "the request body did not arrive within the time allowed (CDS_BODY_TIMEOUT_SECONDS)",
                    "timeout",
                ),
                "503": error_response(
                    "The call is not answered: the audit trail or the token-id store cannot take it "
                    "(transient), or it ran out of its time or work budget (too-costly, naming the budget).",
                    "the call holds more than 5000 resources to validate (CDS_CALL_MAX_RESOURCES)",
                    "too-costly",
                ),
            },
        }
    },
    "/cds-services/{service_id}/feedback": {
        "post": {
            "operationId": "feedback",
            "tags": ["CDS Hooks"],
            "summary": "Feedback on cards: accepted or overridden",
            "security": [{"clientJWT": []}],
            "parameters": [SERVICE_ID],
            "requestBody": {
                "required": True,
                "content": {JSON: {"schema": schema_ref("Feedback"), "example": EXAMPLE_FEEDBACK}},
            },
            "responses": {
                "200": json_response(
                    "FeedbackAccepted", {"accepted": 1}, "The number of feedback items accepted."
                ),
                "400": error_response(
                    "The feedback is malformed (the diagnostics name the field), or accepts suggestions the "
                    "card does not have (nothing is stored).",
                    "feedback[0].outcome must be 'accepted' or 'overridden'",
                    "required",
                    "feedback[0].outcome",
                ),
                "401": UNAUTHORIZED,
                "404": error_response(
                    "No such service, or a card this service did not issue on that service to this client "
                    "(nothing is stored).",
                    "feedback[0].card: no card 'x' was issued on service 'y' to this client", "not-found",
                ),
                "408": error_response("The body did not arrive in time (production server).",
                                      "the request body did not arrive within the time allowed", "timeout"),
                "413": error_response("The body is too large.", "request body is too large", "too-costly"),
                "500": SERVER_ERROR,
                "503": error_response(
                    "The feedback cannot be stored now.", "audit store unavailable", "transient"
                ),
            },
        }
    },
    "/health": {
        "get": {
            "operationId": "health",
            "tags": ["Operations"],
            "summary": "Liveness, and the rule pack in force",
            "responses": {
                "200": json_response(
                    "Health",
                    {
                        "status": "ok",
                        "rulePack": {"id": "bone-health-ai", "version": "0.1.0", "contentHash": "9f2c..."},
                    },
                ),
                "500": SERVER_ERROR,
            },
        }
    },
    "/openapi.json": {
        "get": {
            "operationId": "openapi",
            "tags": ["Operations"],
            "summary": "This document",
            "responses": {
                "200": {
                    "description": "The OpenAPI document.",
                    "content": {JSON: {"schema": {"type": "object"}}},
                }
            },
        }
    },
    "/metrics": {
        "get": {
            "operationId": "metrics",
            "tags": ["Operations"],
            "summary": "Prometheus metrics (text exposition format)",
            "responses": {
                "200": {
                    "description": "Requests, latency, cards and errors.",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                },
                "401": {
                    "description": "CDS_METRICS_TOKEN is set and the request does not carry it as a bearer "
                                   "token. The body is empty.",
                    "headers": {"WWW-Authenticate": {"schema": {"type": "string"}, "description": "Bearer"}},
                },
                "404": error_response(
                    "Metrics are turned off (CDS_METRICS_ENABLED=false).", "not found", "not-found"
                ),
            },
        }
    },
}

# ---------------------------------------------------------------------------------------------------------
# AUDITOR API: the JSON paths under /audit/api, their schemas and the auditor credentials (Bearer token or
# HTTP Basic), defined in cds/review/auditor_openapi.py. The auditor's HTML pages (/audit/...) are not in the
# document.
AUDIT_PATHS: dict[str, Any] = _audit.AUDIT_PATHS
AUDIT_SCHEMAS: dict[str, Any] = _audit.AUDIT_SCHEMAS
# ---------------------------------------------------------------------------------------------------------


def document(
    version: str = "0.1.0", discovery: dict[str, Any] | None = None, *, audit: bool = True
) -> dict[str, Any]:
    """The whole document; ``discovery`` (the discovery answer) is the example of GET /cds-services.

    ``audit``: whether the auditor API is served (it is not when ``CDS_AUDIT`` is off).
    """
    spec: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "Bone Health CDS",
            "version": version,
            "description": "A CDS Hooks 2.0 service giving bone-health advice for patients on aromatase "
            "inhibitors. Every call under /cds-services carries a client JWT "
            "(Authorization: Bearer), as CDS Hooks requires. The auditor API under /audit/api takes an "
            "auditor's token instead (Bearer, or HTTP Basic with the auditor's name); the auditor's "
            "HTML pages under /audit are for people and are not described here.",
        },
        "tags": [{"name": "CDS Hooks"}, {"name": "Operations"}, {"name": "Audit"}],
        "paths": {**PATHS, **(AUDIT_PATHS if audit else {})},
        "components": {
            "schemas": {**SCHEMAS, **AUDIT_SCHEMAS},
            "securitySchemes": {
                "clientJWT": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "A JWT signed by a trusted CDS client (ES384/RS384): iss, "
                    "aud = the exact URL called, exp, iat, jti; header kid, typ JWT.",
                },
                **_audit.AUDIT_SECURITY_SCHEMES,
            },
        },
    }
    doc = copy.deepcopy(spec)
    if discovery is not None:
        doc["paths"]["/cds-services"]["get"]["responses"]["200"]["content"][JSON]["example"] = discovery
    return doc


@bp.get("/openapi.json")
def openapi_json():
    from cds.version import __version__

    discovery = discovery_document(current_app.extensions["cds.pack"])
    return jsonify(document(__version__, discovery, audit="cds.audit" in current_app.extensions))


def init_app(app: Any) -> None:
    app.register_blueprint(bp)
