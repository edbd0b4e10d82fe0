"""Answering a service's prefetch templates from a patient's record, as an EHR would. Pure code.

Used by ``cds request`` and ``cds replay`` to build the ``prefetch`` of a hook request from a fixture
bundle and the service's discovery entry. Each template is filled (``{{context.patientId}}``,
``{{userPractitionerId}}``...) and answered from the record:

* a read ``Type/id`` -> that resource, or ``null`` when the record has none;
* a search ``Type?param=value&...`` -> a ``searchset`` Bundle of the record's resources of that type that
  match every parameter this module understands: ``patient``/``subject`` (a reference to the patient),
  ``code`` (token list ``system|code,code``), ``status``, ``intent`` and ``category`` (token lists), and
  ``_id``. Other parameters (``date``, ``_sort``, ``_count``...) do not filter: every resource of the type
  is returned, which a service must tolerate anyway.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl

from cds.fhir.references import MINE, ReferenceIndex, patient_verdict, subject_reference

TOKEN = re.compile(r"\{\{\s*([A-Za-z.]+)\s*\}\}")
USER_TOKENS = {
    "userPractitionerId": "Practitioner",
    "userPractitionerRoleId": "PractitionerRole",
    "userPatientId": "Patient",
    "userRelatedPersonId": "RelatedPerson",
}


def fill(template: str, context: Mapping[str, Any]) -> str:
    """The template with its tokens replaced from the hook context (unknown tokens left empty)."""
    user_type, _, user_id = str(context.get("userId", "")).partition("/")

    def value(match: re.Match[str]) -> str:
        token = match.group(1)
        if token.startswith("context."):
            found = context.get(token[len("context.") :])
            return str(found) if isinstance(found, str | int | float) else ""
        if USER_TOKENS.get(token) == user_type:
            return user_id
        return ""

    return TOKEN.sub(value, template)


def _tokens(concept: Any) -> set[tuple[str, str]]:
    concepts = concept if isinstance(concept, list) else [concept]
    out = set()
    for c in concepts:
        if isinstance(c, dict):
            for coding in c.get("coding") or []:
                if isinstance(coding, dict) and coding.get("code") is not None:
                    out.add((str(coding.get("system") or ""), str(coding["code"])))
    return out


def _token_match(wanted: str, found: set[tuple[str, str]]) -> bool:
    for item in wanted.split(","):
        system, bar, code = item.rpartition("|")
        if not bar:
            if any(c == code for _, c in found):
                return True
        elif (system, code) in found or (not system and any(c == code for _, c in found)):
            return True
    return False


def _refers_to(resource: dict[str, Any], patient_id: str, index: ReferenceIndex | None = None) -> bool:
    """Whether the resource's subject is the patient (no subject: the record is the patient's)."""
    return patient_verdict(subject_reference(resource), patient_id, index) == MINE


def matches(resource: dict[str, Any], params: Iterable[tuple[str, str]]) -> bool:
    for name, value in params:
        name = name.split(":", 1)[0]
        if name in ("patient", "subject"):
            if not _refers_to(resource, value.removeprefix("Patient/")):
                return False
        elif name == "code":
            concept = resource.get("code") or resource.get("medicationCodeableConcept")
            if not _token_match(value, _tokens(concept)):
                return False
        elif name in ("status", "intent"):
            if str(resource.get(name)) not in value.split(","):
                return False
        elif name == "category":
            if not _token_match(value, _tokens(resource.get("category"))):
                return False
        elif name == "_id":
            if str(resource.get("id")) not in value.split(","):
                return False
    return True


def searchset(resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(resources),
        "entry": [
            {"fullUrl": f"{r['resourceType']}/{r.get('id')}", "resource": r, "search": {"mode": "match"}}
            for r in resources
        ],
    }


def answer(query: str, record: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The record's answer to one filled query: a resource, ``None``, or a searchset Bundle."""
    path, _, qs = query.partition("?")
    path = path.strip("/")
    if not qs and path.count("/") == 1:
        rtype, rid = path.split("/")
        return next((r for r in record if r.get("resourceType") == rtype and str(r.get("id")) == rid), None)
    params = parse_qsl(qs, keep_blank_values=True)
    found = [r for r in record if r.get("resourceType") == path and matches(r, params)]
    return searchset(found)


def answer_all(
    templates: Mapping[str, str], record: list[dict[str, Any]], context: Mapping[str, Any]
) -> dict[str, Any]:
    """Every key of ``templates`` answered from ``record``."""
    return {key: answer(fill(template, context), record) for key, template in templates.items()}
