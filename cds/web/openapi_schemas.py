"""Schemas and examples of the OpenAPI document (``cds/web/openapi.py``): CDS Hooks 2.0 bodies, FHIR kept
loose.

A FHIR resource is any object with a ``resourceType``: the service validates FHIR itself
(``cds/fhir/parse.py``) and answers 400 naming the field; the document only says where resources go.
"""

from __future__ import annotations

from typing import Any

from cds.hooks.services import SERVICES

REF = "#/components/schemas/"
JSON = "application/json"
HOOKS = sorted({hook for _, hook, _ in SERVICES})
SERVICE_IDS = [sid for sid, _, _ in SERVICES]


def schema_ref(name: str) -> dict[str, str]:
    return {"$ref": REF + name}


def json_response(schema: str, example: Any = None, description: str = "") -> dict[str, Any]:
    media: dict[str, Any] = {"schema": schema_ref(schema)}
    if example is not None:
        media["example"] = example
    return {"description": description or schema, "content": {JSON: media}}


def error_response(description: str, example_message: str, code: str = "invalid") -> dict[str, Any]:
    example = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": code, "diagnostics": example_message}],
    }
    return json_response("OperationOutcome", example, description)


UNAUTHORIZED = {
    "description": "The client's JWT is missing or not trusted. The body is empty by design.",
    "headers": {"WWW-Authenticate": {"schema": {"type": "string"}, "description": "Bearer"}},
}
SERVER_ERROR = error_response(
    "The service failed; the body never holds a stack trace.",
    "internal error; the request was not processed",
    "exception",
)

CODING = {
    "type": "object",
    "properties": {"system": {"type": "string"}, "code": {"type": "string"}, "display": {"type": "string"}},
}

SCHEMAS: dict[str, Any] = {
    "Coding": CODING,
    "Resource": {
        "type": "object",
        "required": ["resourceType"],
        "properties": {"resourceType": {"type": "string", "minLength": 1}, "id": {"type": "string"}},
        "additionalProperties": True,
        "description": "Any FHIR R4 resource (JSON).",
    },
    "Bundle": {
        "type": "object",
        "required": ["resourceType"],
        "additionalProperties": True,
        "properties": {
            "resourceType": {"const": "Bundle"},
            "type": {"type": "string"},
            "entry": {
                "type": "array",
                "items": {"type": "object", "properties": {"resource": schema_ref("Resource")}},
            },
        },
    },
    "OperationOutcome": {
        "type": "object",
        "required": ["resourceType", "issue"],
        "properties": {
            "resourceType": {"const": "OperationOutcome"},
            "issue": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "required": ["severity", "code"],
                    "properties": {
                        "severity": {"enum": ["fatal", "error", "warning", "information"]},
                        "code": {"type": "string"},
                        "diagnostics": {"type": "string"},
                        "expression": {"type": "array", "items": {"type": "string"}},
                    },
                },
            },
        },
    },
    "Service": {
        "type": "object",
        "required": ["id", "hook", "description"],
        "properties": {
            "id": {"type": "string"},
            "hook": {"type": "string"},
            "title": {"type": "string"},
            "description": {"type": "string"},
            "prefetch": {"type": "object", "additionalProperties": {"type": "string"}},
            "usageRequirements": {"type": "string"},
        },
    },
    "Discovery": {
        "type": "object",
        "required": ["services"],
        "properties": {"services": {"type": "array", "items": schema_ref("Service")}},
    },
    "HookRequest": {
        "type": "object",
        "required": ["hook", "hookInstance", "context"],
        "properties": {
            "hook": {"type": "string", "enum": HOOKS},
            "hookInstance": {"type": "string", "format": "uuid"},
            "fhirServer": {"type": "string", "format": "uri"},
            "fhirAuthorization": {
                "type": "object",
                "required": ["access_token", "token_type"],
                "properties": {
                    "access_token": {"type": "string"},
                    "token_type": {"const": "Bearer"},
                    "expires_in": {"type": "integer"},
                    "scope": {"type": "string"},
                    "subject": {"type": "string"},
                    "patient": {"type": "string"},
                },
            },
            "context": {
                "type": "object",
                "required": ["userId", "patientId"],
                "properties": {
                    "userId": {"type": "string", "minLength": 1},
                    "patientId": {"type": "string", "minLength": 1},
                    "encounterId": {"type": "string"},
                    "selections": {"type": "array", "items": {"type": "string"}},
                    "draftOrders": schema_ref("Bundle"),
                },
            },
            "prefetch": {
                "type": "object",
                "additionalProperties": {"anyOf": [schema_ref("Resource"), {"type": "null"}]},
            },
        },
    },
    "Action": {
        "type": "object",
        "required": ["type"],
        "properties": {
            "type": {"enum": ["create", "update", "delete"]},
            "description": {"type": "string"},
            "resource": schema_ref("Resource"),
            "resourceId": {"type": "string"},
        },
    },
    "Suggestion": {
        "type": "object",
        "required": ["label"],
        "properties": {
            "label": {"type": "string"},
            "uuid": {"type": "string", "format": "uuid"},
            "isRecommended": {"type": "boolean"},
            "actions": {"type": "array", "items": schema_ref("Action")},
        },
    },
    "Link": {
        "type": "object",
        "required": ["label", "url", "type"],
        "properties": {
            "label": {"type": "string"},
            "url": {"type": "string"},
            "type": {"enum": ["absolute", "smart"]},
            "appContext": {"type": "string"},
            "autolaunchable": {"type": "boolean"},
        },
    },
    "Card": {
        "type": "object",
        "required": ["summary", "indicator", "source"],
        "properties": {
            "uuid": {"type": "string", "format": "uuid"},
            "summary": {"type": "string", "maxLength": 139},
            "detail": {"type": "string"},
            "indicator": {"enum": ["info", "warning", "critical"]},
            "source": {
                "type": "object",
                "required": ["label"],
                "properties": {
                    "label": {"type": "string"},
                    "url": {"type": "string"},
                    "icon": {"type": "string"},
                    "topic": schema_ref("Coding"),
                },
            },
            "suggestions": {"type": "array", "items": schema_ref("Suggestion")},
            "selectionBehavior": {"enum": ["at-most-one", "any"]},
            "overrideReasons": {"type": "array", "items": schema_ref("Coding")},
            "links": {"type": "array", "items": schema_ref("Link")},
        },
    },
    "CardsResponse": {
        "type": "object",
        "required": ["cards"],
        "properties": {
            "cards": {"type": "array", "items": schema_ref("Card")},
            "systemActions": {"type": "array", "items": schema_ref("Action")},
        },
    },
    "Feedback": {
        "type": "object",
        "required": ["feedback"],
        "properties": {
            "feedback": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "required": ["card", "outcome", "outcomeTimestamp"],
                    "properties": {
                        "card": {"type": "string", "format": "uuid"},
                        "outcome": {"enum": ["accepted", "overridden"]},
                        "outcomeTimestamp": {"type": "string"},
                        "acceptedSuggestions": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["id"],
                                "properties": {"id": {"type": "string"}},
                            },
                        },
                        "overrideReason": {
                            "type": "object",
                            "properties": {"reason": schema_ref("Coding"), "userComment": {"type": "string"}},
                        },
                    },
                },
            }
        },
    },
    "FeedbackAccepted": {
        "type": "object",
        "required": ["accepted"],
        "properties": {"accepted": {"type": "integer", "minimum": 1}},
    },
    "Health": {
        "type": "object",
        "required": ["status", "rulePack"],
        "properties": {
            "status": {"type": "string"},
            "rulePack": {
                "type": "object",
                "required": ["id", "version", "contentHash"],
                "properties": {
                    "id": {"type": "string"},
                    "version": {"type": "string"},
                    "contentHash": {"type": "string"},
                },
            },
        },
    },
}

EXAMPLE_CARD = {
    "uuid": "8f0c6d3e-4b7a-4a59-9d1e-3c2b1a0f9e8d",
    "summary": "No 25-OH vitamin D result in the last 365 days for a patient on anastrozole",
    "detail": "Patients on an aromatase inhibitor lose bone; ...",
    "indicator": "info",
    "source": {
        "label": "Bone Health CDS",
        "url": "https://doi.org/10.1210/jc.2011-0385",
        "topic": {
            "system": "https://bone-health-cds.example.org/rules",
            "code": "vitamin-d-missing",
            "display": "No recent 25-OH vitamin D on an aromatase inhibitor",
        },
    },
    "suggestions": [
        {
            "label": "Order 25-OH vitamin D",
            "uuid": "1d2c3b4a-5e6f-4a7b-8c9d-0e1f2a3b4c5d",
            "isRecommended": True,
            "actions": [
                {
                    "type": "create",
                    "description": "Order serum 25-hydroxyvitamin D (D2+D3)",
                    "resource": {
                        "resourceType": "ServiceRequest",
                        "status": "draft",
                        "intent": "proposal",
                        "code": {"coding": [{"system": "http://loinc.org", "code": "62292-8"}]},
                        "subject": {"reference": "Patient/p1"},
                    },
                }
            ],
        }
    ],
    "selectionBehavior": "at-most-one",
    "overrideReasons": [
        {
            "system": "https://bone-health-cds.example.org/override-reasons",
            "code": "patient-declined",
            "display": "Patient declined",
        }
    ],
}
EXAMPLE_REQUEST = {
    "hook": "patient-view",
    "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
    "context": {"userId": "Practitioner/1", "patientId": "p1"},
    "prefetch": {
        "patient": {"resourceType": "Patient", "id": "p1", "gender": "male", "birthDate": "1960-01-01"},
        "estradiol": None,
        "vitaminD": None,
        "monitoring": None,
        "dxa": None,
        "medications": {
            "resourceType": "Bundle",
            "type": "searchset",
            "entry": [
                {
                    "resource": {
                        "resourceType": "MedicationRequest",
                        "id": "m1",
                        "status": "active",
                        "intent": "order",
                        "subject": {"reference": "Patient/p1"},
                        "medicationCodeableConcept": {
                            "coding": [
                                {
                                    "system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                                    "code": "84857",
                                    "display": "anastrozole",
                                }
                            ]
                        },
                    }
                }
            ],
        },
    },
}
EXAMPLE_FEEDBACK = {
    "feedback": [
        {
            "card": "8f0c6d3e-4b7a-4a59-9d1e-3c2b1a0f9e8d",
            "outcome": "overridden",
            "overrideReason": {"reason": {"code": "patient-declined"}},
            "outcomeTimestamp": "2026-11-22T10:00:00Z",
        }
    ]
}
