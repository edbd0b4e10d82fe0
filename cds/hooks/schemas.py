"""Schemas and examples of the OpenAPI document (``cds/web/openapi.py``): CDS Hooks 2.0 bodies, FHIR kept
loose.

The CDS Hooks bodies' schemas are generated from the models the service validates requests with
(``cds/hooks/models.py``); only ``Health`` is written here. A FHIR resource is any object with a
``resourceType``: the service validates FHIR itself (``cds/fhir/parse.py``) and answers 400 naming the
field; the document only says where resources go.
"""

from __future__ import annotations

from typing import Any

from pydantic.json_schema import GenerateJsonSchema, models_json_schema

from cds.hooks import models
from cds.hooks.services import SERVICES

REF = "#/components/schemas/"
JSON = "application/json"
SERVICE_IDS = [sid for sid, _, _ in SERVICES]


def schema_ref(name: str) -> dict[str, str]:
    return {"$ref": REF + name}


def json_response(schema: str, example: Any = None, description: str = "") -> dict[str, Any]:
    media: dict[str, Any] = {"schema": schema_ref(schema)}
    if example is not None:
        media["example"] = example
    return {"description": description or schema, "content": {JSON: media}}


def error_response(description: str, example_message: str, code: str = "invalid",
                   field: str | None = None) -> dict[str, Any]:
    issue: dict[str, Any] = {"severity": "error", "code": code, "diagnostics": example_message}
    if field:
        issue["expression"] = [field]
    example = {"resourceType": "OperationOutcome", "issue": [issue]}
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

class _Generator(GenerateJsonSchema):
    """pydantic's JSON Schema, without a title on every property."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False


def model_schemas() -> dict[str, Any]:
    """The schemas of the CDS Hooks bodies, generated from ``cds/hooks/models.py``; ``HookRequest`` is the
    request of any hook, told apart by ``hook``."""
    _, top = models_json_schema(list(models.DOCUMENTED), ref_template=REF + "{model}",
                                schema_generator=_Generator)
    schemas: dict[str, Any] = dict(top["$defs"])
    by_hook = {hook: model.__name__ for hook, model in models.HOOK_REQUESTS.items()}
    schemas["HookRequest"] = {
        "oneOf": [schema_ref(name) for name in by_hook.values()],
        "discriminator": {"propertyName": "hook", "mapping": {h: REF + n for h, n in by_hook.items()}},
        "description": "A hook call; the context fields depend on the hook.",
    }
    return schemas


SCHEMAS: dict[str, Any] = {
    **model_schemas(),
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
            "replay": {
                "type": "object",
                "description": "The token-id store (each token id used once): the database or Redis; "
                               "`fallbackKeys` with CDS_REPLAY_FALLBACK=host.",
                "required": ["store", "state"],
                "properties": {
                    "store": {"type": "string", "enum": ["database", "redis"]},
                    "state": {"type": "string", "enum": ["ok", "unavailable"]},
                    "fallbackKeys": {"type": "integer"},
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
