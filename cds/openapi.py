"""The service's OpenAPI 3.1 document, served at ``GET /openapi.json``.

Built from the same tables the service uses (service ids, hooks, the rule pack's prefetch templates), so
it cannot drift on those; ``tests/test_openapi.py`` keeps the rest in step (every route documented, every
documented path served, every example valid against its schema) and fuzzes the service against it.
Request and response schemas follow CDS Hooks 2.0. A 401 has an empty body by design: nothing that helps
an attacker.
"""

from __future__ import annotations

import copy
from typing import Any

from flask import Blueprint, current_app, jsonify

from .discovery import SERVICES, discovery_document

bp = Blueprint("openapi", __name__)

REF = "#/components/schemas/"
JSON = "application/json"
HOOKS = sorted({hook for _, hook, _ in SERVICES})
SERVICE_IDS = [sid for sid, _, _ in SERVICES]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF + name}


def _json(schema: str, example: Any = None, description: str = "") -> dict[str, Any]:
    media: dict[str, Any] = {"schema": _ref(schema)}
    if example is not None:
        media["example"] = example
    return {"description": description or schema, "content": {JSON: media}}


def _error(description: str, example_message: str, code: str = "invalid") -> dict[str, Any]:
    example = {"resourceType": "OperationOutcome",
               "issue": [{"severity": "error", "code": code, "diagnostics": example_message}]}
    return _json("OperationOutcome", example, description)


UNAUTHORIZED = {"description": "The client's JWT is missing or not trusted. The body is empty by design.",
                "headers": {"WWW-Authenticate": {"schema": {"type": "string"}, "description": "Bearer"}}}
SERVER_ERROR = _error("The service failed; the body never holds a stack trace.",
                      "internal error; the request was not processed", "exception")

CODING = {"type": "object", "properties": {"system": {"type": "string"}, "code": {"type": "string"},
                                           "display": {"type": "string"}}}

SCHEMAS: dict[str, Any] = {
    "Coding": CODING,
    "Resource": {"type": "object", "required": ["resourceType"],
                 "properties": {"resourceType": {"type": "string", "minLength": 1}, "id": {"type": "string"}},
                 "additionalProperties": True, "description": "Any FHIR R4 resource (JSON)."},
    "Bundle": {"type": "object", "required": ["resourceType"], "additionalProperties": True,
               "properties": {"resourceType": {"const": "Bundle"}, "type": {"type": "string"},
                              "entry": {"type": "array", "items": {
                                  "type": "object", "properties": {"resource": _ref("Resource")}}}}},
    "OperationOutcome": {
        "type": "object", "required": ["resourceType", "issue"],
        "properties": {"resourceType": {"const": "OperationOutcome"},
                       "issue": {"type": "array", "minItems": 1, "items": {
                           "type": "object", "required": ["severity", "code"],
                           "properties": {"severity": {"enum": ["fatal", "error", "warning", "information"]},
                                          "code": {"type": "string"}, "diagnostics": {"type": "string"},
                                          "expression": {"type": "array", "items": {"type": "string"}}}}}}},
    "Service": {
        "type": "object", "required": ["id", "hook", "description"],
        "properties": {"id": {"type": "string"}, "hook": {"type": "string"}, "title": {"type": "string"},
                       "description": {"type": "string"},
                       "prefetch": {"type": "object", "additionalProperties": {"type": "string"}},
                       "usageRequirements": {"type": "string"}}},
    "Discovery": {"type": "object", "required": ["services"],
                  "properties": {"services": {"type": "array", "items": _ref("Service")}}},
    "HookRequest": {
        "type": "object", "required": ["hook", "hookInstance", "context"],
        "properties": {
            "hook": {"type": "string", "enum": HOOKS},
            "hookInstance": {"type": "string", "format": "uuid"},
            "fhirServer": {"type": "string", "format": "uri"},
            "fhirAuthorization": {
                "type": "object", "required": ["access_token", "token_type"],
                "properties": {"access_token": {"type": "string"}, "token_type": {"const": "Bearer"},
                               "expires_in": {"type": "integer"}, "scope": {"type": "string"},
                               "subject": {"type": "string"}, "patient": {"type": "string"}}},
            "context": {
                "type": "object", "required": ["userId", "patientId"],
                "properties": {"userId": {"type": "string", "minLength": 1},
                               "patientId": {"type": "string", "minLength": 1},
                               "encounterId": {"type": "string"},
                               "selections": {"type": "array", "items": {"type": "string"}},
                               "draftOrders": _ref("Bundle")}},
            "prefetch": {"type": "object",
                         "additionalProperties": {"anyOf": [_ref("Resource"), {"type": "null"}]}},
        }},
    "Action": {"type": "object", "required": ["type"],
               "properties": {"type": {"enum": ["create", "update", "delete"]}, "description": {"type": "string"},
                              "resource": _ref("Resource"), "resourceId": {"type": "string"}}},
    "Suggestion": {"type": "object", "required": ["label"],
                   "properties": {"label": {"type": "string"}, "uuid": {"type": "string", "format": "uuid"},
                                  "isRecommended": {"type": "boolean"},
                                  "actions": {"type": "array", "items": _ref("Action")}}},
    "Link": {"type": "object", "required": ["label", "url", "type"],
             "properties": {"label": {"type": "string"}, "url": {"type": "string"},
                            "type": {"enum": ["absolute", "smart"]}, "appContext": {"type": "string"},
                            "autolaunchable": {"type": "boolean"}}},
    "Card": {
        "type": "object", "required": ["summary", "indicator", "source"],
        "properties": {
            "uuid": {"type": "string", "format": "uuid"},
            "summary": {"type": "string", "maxLength": 139},
            "detail": {"type": "string"},
            "indicator": {"enum": ["info", "warning", "critical"]},
            "source": {"type": "object", "required": ["label"],
                       "properties": {"label": {"type": "string"}, "url": {"type": "string"},
                                      "icon": {"type": "string"}, "topic": _ref("Coding")}},
            "suggestions": {"type": "array", "items": _ref("Suggestion")},
            "selectionBehavior": {"enum": ["at-most-one", "any"]},
            "overrideReasons": {"type": "array", "items": _ref("Coding")},
            "links": {"type": "array", "items": _ref("Link")}}},
    "CardsResponse": {"type": "object", "required": ["cards"],
                      "properties": {"cards": {"type": "array", "items": _ref("Card")},
                                     "systemActions": {"type": "array", "items": _ref("Action")}}},
    "Feedback": {
        "type": "object", "required": ["feedback"],
        "properties": {"feedback": {"type": "array", "minItems": 1, "items": {
            "type": "object", "required": ["card", "outcome", "outcomeTimestamp"],
            "properties": {
                "card": {"type": "string", "format": "uuid"},
                "outcome": {"enum": ["accepted", "overridden"]},
                "outcomeTimestamp": {"type": "string"},
                "acceptedSuggestions": {"type": "array", "items": {
                    "type": "object", "required": ["id"], "properties": {"id": {"type": "string"}}}},
                "overrideReason": {"type": "object", "properties": {"reason": _ref("Coding"),
                                                                   "userComment": {"type": "string"}}}}}}}},
    "FeedbackAccepted": {"type": "object", "required": ["accepted"],
                         "properties": {"accepted": {"type": "integer", "minimum": 1}}},
    "Health": {"type": "object", "required": ["status", "rulePack"],
               "properties": {"status": {"type": "string"},
                              "rulePack": {"type": "object", "required": ["id", "version", "contentHash"],
                                           "properties": {"id": {"type": "string"}, "version": {"type": "string"},
                                                          "contentHash": {"type": "string"}}}}},
}

EXAMPLE_CARD = {
    "uuid": "8f0c6d3e-4b7a-4a59-9d1e-3c2b1a0f9e8d",
    "summary": "No 25-OH vitamin D result in the last 365 days for a patient on anastrozole",
    "detail": "Patients on an aromatase inhibitor lose bone; ...",
    "indicator": "info",
    "source": {"label": "Bone Health CDS", "url": "https://doi.org/10.1210/jc.2011-0385",
               "topic": {"system": "https://bone-health-cds.example.org/rules", "code": "vitamin-d-missing",
                         "display": "No recent 25-OH vitamin D on an aromatase inhibitor"}},
    "suggestions": [{"label": "Order 25-OH vitamin D", "uuid": "1d2c3b4a-5e6f-4a7b-8c9d-0e1f2a3b4c5d",
                     "isRecommended": True, "actions": [{
                         "type": "create", "description": "Order serum 25-hydroxyvitamin D (D2+D3)",
                         "resource": {"resourceType": "ServiceRequest", "status": "draft", "intent": "proposal",
                                      "code": {"coding": [{"system": "http://loinc.org", "code": "62292-8"}]},
                                      "subject": {"reference": "Patient/p1"}}}]}],
    "selectionBehavior": "at-most-one",
    "overrideReasons": [{"system": "https://bone-health-cds.example.org/override-reasons",
                         "code": "patient-declined", "display": "Patient declined"}],
}
EXAMPLE_REQUEST = {
    "hook": "patient-view", "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
    "context": {"userId": "Practitioner/1", "patientId": "p1"},
    "prefetch": {"patient": {"resourceType": "Patient", "id": "p1", "gender": "male", "birthDate": "1960-01-01"},
                 "estradiol": None, "vitaminD": None, "dxa": None,
                 "medications": {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": {
                     "resourceType": "MedicationRequest", "id": "m1", "status": "active", "intent": "order",
                     "subject": {"reference": "Patient/p1"}, "medicationCodeableConcept": {"coding": [{
                         "system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "84857",
                         "display": "anastrozole"}]}}}]}},
}
EXAMPLE_FEEDBACK = {"feedback": [{"card": "8f0c6d3e-4b7a-4a59-9d1e-3c2b1a0f9e8d", "outcome": "overridden",
                                  "overrideReason": {"reason": {"code": "patient-declined"}},
                                  "outcomeTimestamp": "2026-11-22T10:00:00Z"}]}

SERVICE_ID = {"name": "service_id", "in": "path", "required": True,
              "schema": {"type": "string", "enum": SERVICE_IDS},
              "description": "The service's id, as listed by discovery."}

PATHS: dict[str, Any] = {
    "/cds-services": {"get": {
        "operationId": "discovery", "tags": ["CDS Hooks"], "summary": "Discovery: the services offered",
        "security": [{"clientJWT": []}],
        "responses": {"200": _json("Discovery", None, "The services, with their prefetch templates."),
                      "401": UNAUTHORIZED, "500": SERVER_ERROR}}},
    "/cds-services/{service_id}": {"post": {
        "operationId": "callService", "tags": ["CDS Hooks"], "summary": "Call a service for a hook",
        "security": [{"clientJWT": []}], "parameters": [SERVICE_ID],
        "requestBody": {"required": True, "content": {JSON: {"schema": _ref("HookRequest"),
                                                             "example": EXAMPLE_REQUEST}}},
        "responses": {
            "200": _json("CardsResponse", {"cards": [EXAMPLE_CARD]}, "Cards (an empty list when there is no advice)."),
            "400": _error("The request is malformed: the diagnostics name the field.", "context.patientId is required",
                          "required"),
            "401": UNAUTHORIZED,
            "404": _error("No such service.", "no CDS service with id 'x'", "not-found"),
            "412": _error("Data the rules need was neither prefetched nor fetchable.",
                          "prefetch data missing for dxa and no fhirServer to fetch it from", "not-found"),
            "413": _error("The body or a Bundle is larger than the service accepts.",
                          "request body is 6000000 bytes, more than the limit of 5000000", "too-costly"),
            "500": SERVER_ERROR,
            "503": _error("The audit trail cannot record the call, so it is not answered.",
                          "audit store unavailable", "transient")}}},
    "/cds-services/{service_id}/feedback": {"post": {
        "operationId": "feedback", "tags": ["CDS Hooks"], "summary": "Feedback on cards: accepted or overridden",
        "security": [{"clientJWT": []}], "parameters": [SERVICE_ID],
        "requestBody": {"required": True, "content": {JSON: {"schema": _ref("Feedback"),
                                                             "example": EXAMPLE_FEEDBACK}}},
        "responses": {"200": _json("FeedbackAccepted", {"accepted": 1}, "The number of feedback items accepted."),
                      "400": _error("The feedback is malformed.", "feedback must be a non-empty array"),
                      "401": UNAUTHORIZED,
                      "404": _error("No such service.", "no CDS service with id 'x'", "not-found"),
                      "413": _error("The body is too large.", "request body is too large", "too-costly"),
                      "500": SERVER_ERROR,
                      "503": _error("The feedback cannot be stored now.", "audit store unavailable", "transient")}}},
    "/health": {"get": {
        "operationId": "health", "tags": ["Operations"], "summary": "Liveness, and the rule pack in force",
        "responses": {"200": _json("Health", {"status": "ok", "rulePack": {
            "id": "bone-health-ai", "version": "0.1.0", "contentHash": "9f2c..."}}), "500": SERVER_ERROR}}},
    "/openapi.json": {"get": {
        "operationId": "openapi", "tags": ["Operations"], "summary": "This document",
        "responses": {"200": {"description": "The OpenAPI document.",
                              "content": {JSON: {"schema": {"type": "object"}}}}}}},
    "/metrics": {"get": {
        "operationId": "metrics", "tags": ["Operations"], "summary": "Prometheus metrics (text exposition format)",
        "responses": {"200": {"description": "Requests, latency, cards and errors.",
                              "content": {"text/plain": {"schema": {"type": "string"}}}},
                      "404": _error("Metrics are turned off (CDS_METRICS_ENABLED=false).", "not found",
                                    "not-found")}}},
}

# ---------------------------------------------------------------------------------------------------------
# AUDITOR API: the paths under /audit/api (and their schemas) are added here when that feature is merged.
AUDIT_PATHS: dict[str, Any] = {}
AUDIT_SCHEMAS: dict[str, Any] = {}
# ---------------------------------------------------------------------------------------------------------


def document(version: str = "0.1.0", discovery: dict[str, Any] | None = None) -> dict[str, Any]:
    """The document; ``discovery`` (this service's discovery answer) becomes the example of GET /cds-services."""
    doc = copy.deepcopy({
        "openapi": "3.1.0",
        "info": {"title": "Bone Health CDS", "version": version,
                 "description": "A CDS Hooks 2.0 service giving bone-health advice for patients on aromatase "
                                "inhibitors. Every call under /cds-services carries a client JWT "
                                "(Authorization: Bearer), as CDS Hooks requires."},
        "tags": [{"name": "CDS Hooks"}, {"name": "Operations"}, {"name": "Audit"}],
        "paths": {**PATHS, **AUDIT_PATHS},
        "components": {
            "schemas": {**SCHEMAS, **AUDIT_SCHEMAS},
            "securitySchemes": {"clientJWT": {
                "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                "description": "A JWT signed by a trusted CDS client (ES384/RS384): iss, aud = the exact URL "
                               "called, exp, iat, jti; header kid, typ JWT."}},
        },
    })
    if discovery is not None:
        doc["paths"]["/cds-services"]["get"]["responses"]["200"]["content"][JSON]["example"] = discovery
    return doc


@bp.get("/openapi.json")
def openapi_json():
    from . import __version__

    return jsonify(document(__version__, discovery_document(current_app.extensions["cds.pack"])))


def init_app(app: Any) -> None:
    app.register_blueprint(bp)
