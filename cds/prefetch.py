"""Prefetch: what the client sent, per key, and what must be fetched from its FHIR server.

Per key of the discovery document's prefetch templates:

* absent            the client did not try          -> fetch it
* ``null``          the client found nothing        -> no data, do not fetch
* OperationOutcome  the client's query failed       -> fetch it
* Bundle/resource   the client's data               -> use it

Fetching is delegated to a ``fetch`` callable (``cds.fhir_client``); without one, or without a
``fhirServer``, a key that must be fetched makes the call fail with ``DataUnavailable`` (HTTP 412)
naming the keys. Provenance per key (client / fetched / empty / failed) goes to the audit record.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .envelope import HookRequest
from .errors import DataUnavailable

TOKEN = re.compile(r"\{\{\s*([A-Za-z.]+)\s*\}\}")

#: fetch(request, key, query) -> Bundle or resource dict, or None when the server has nothing
Fetch = Callable[[HookRequest, str, str], Any]


@dataclass
class Gathered:
    data: dict[str, Any] = field(default_factory=dict)  # key -> Bundle/resource dict (or None)
    provenance: dict[str, str] = field(default_factory=dict)  # key -> client | fetched | empty | failed


def render_template(template: str, request: HookRequest) -> str:
    """Fill ``{{context.x}}`` and ``{{userXId}}`` tokens from the request."""
    user = str(request.context.get("userId", ""))
    user_type, _, user_id = user.partition("/")

    def value(match: re.Match[str]) -> str:
        token = match.group(1)
        if token == "context.patientId":
            return request.patient_id
        if token.startswith("context."):
            found = request.context.get(token[len("context."):])
            if isinstance(found, str | int | float) and not isinstance(found, bool):
                return str(found)
            raise DataUnavailable(f"prefetch token {{{{{token}}}}} has no primitive value in the context",
                                  field=token)
        wanted = {"userPractitionerId": "Practitioner", "userPractitionerRoleId": "PractitionerRole",
                  "userPatientId": "Patient", "userRelatedPersonId": "RelatedPerson"}.get(token)
        if wanted and user_type == wanted:
            return user_id
        raise DataUnavailable(f"prefetch token {{{{{token}}}}} cannot be filled from this request", field=token)

    return TOKEN.sub(value, template)


def is_operation_outcome(value: Any) -> bool:
    return isinstance(value, dict) and value.get("resourceType") == "OperationOutcome"


def gather(request: HookRequest, templates: Mapping[str, str], fetch: Fetch | None) -> Gathered:
    out = Gathered()
    sent = request.prefetch or {}
    missing: list[str] = []
    for key, template in templates.items():
        if key in sent and sent[key] is None:
            out.data[key], out.provenance[key] = None, "empty"
        elif key in sent and not is_operation_outcome(sent[key]):
            out.data[key], out.provenance[key] = sent[key], "client"
        else:
            missing.append(key)
    if not missing:
        return out
    if fetch is None or not request.fhir_server:
        for key in missing:
            out.provenance[key] = "failed"
        raise DataUnavailable(
            f"prefetch data missing for {', '.join(missing)} and no fhirServer to fetch it from",
            field="prefetch", details=[f"{key}: not sent by the client" for key in missing])
    for key in missing:
        query = render_template(templates[key], request)
        out.data[key] = fetch(request, key, query)
        out.provenance[key] = "fetched" if out.data[key] is not None else "empty"
    return out
