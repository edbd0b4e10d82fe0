"""A small FHIR server for tests, served over a real socket by pytest-httpserver.

It answers the queries the prefetch templates make — ``Patient/{id}``, ``Observation?patient=&code=`` and
``MedicationRequest?patient=&status=`` — from a record Bundle in ``fixtures/``, pages searches when asked
(``next`` links carrying ``_page``), and answers anything else with a 400 OperationOutcome, as a real
server would for a parameter it does not support.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import re
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from werkzeug import Request, Response

from cds.ledger.memory import MemoryLedger

FIXTURES = Path(__file__).resolve().parent / "data" / "fhir-server"
FHIR_JSON = "application/fhir+json"
NOW = dt.datetime(2025, 11, 1, 12, 0, tzinfo=dt.UTC)
TOKEN = "secret-access-token-7f3a9c"
ANY_PATH = re.compile(r"^/fhir(/.*)?$")


def load(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def outcome(code: str, text: str) -> dict[str, Any]:
    issue = {"severity": "error", "code": code, "diagnostics": text}
    return {"resourceType": "OperationOutcome", "issue": [issue]}


def fhir_response(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body), status=status, content_type=FHIR_JSON)


class FakeFhir:
    """A request handler: ``httpserver.expect_request(ANY_PATH).respond_with_handler(FakeFhir(...))``."""

    SEARCH_PARAMS = {
        "Observation": {"patient", "code"},
        "MedicationRequest": {"patient", "status", "_include"},
        "ServiceRequest": {"patient", "status", "code"},
    }

    def __init__(self, record: dict[str, Any] | None = None, page_size: int | None = None):
        record = record if record is not None else load("pat-1-record.json")
        self.resources = [e["resource"] for e in record["entry"]]
        self.page_size = page_size

    def __call__(self, request: Request) -> Response:
        parts = [p for p in request.path.split("/") if p][1:]  # after /fhir
        if len(parts) == 2 and not request.args:
            return self.read(*parts)
        if len(parts) == 1 and parts[0] in self.SEARCH_PARAMS:
            return self.search(request, parts[0])
        return fhir_response(outcome("not-supported", f"unsupported request {request.path}"), 400)

    def read(self, rtype: str, rid: str) -> Response:
        for resource in self.resources:
            if resource["resourceType"] == rtype and resource["id"] == rid:
                return fhir_response(resource)
        return fhir_response(outcome("not-found", f"{rtype}/{rid} is not known"), 404)

    def search(self, request: Request, rtype: str) -> Response:
        params = {k: v for k, v in request.args.items() if k != "_page"}
        unknown = set(params) - self.SEARCH_PARAMS[rtype]
        if unknown or "patient" not in params or params.get("_include", "MedicationRequest:medication") != \
                "MedicationRequest:medication":
            return fhir_response(outcome("not-supported", f"unsupported parameters {sorted(unknown)}"), 400)
        found = [r for r in self.resources if r["resourceType"] == rtype and self.matches(r, params)]
        if "_include" in params:
            refs = {r.get("medicationReference", {}).get("reference") for r in found}
            found += [r for r in self.resources if f"{r['resourceType']}/{r.get('id')}" in refs]
        page = int(request.args.get("_page", "1"))
        size = self.page_size or max(len(found), 1)
        chunk = found[(page - 1) * size: page * size]
        bundle: dict[str, Any] = {
            "resourceType": "Bundle", "id": str(uuid.uuid4()), "type": "searchset", "total": len(found),
            "link": [{"relation": "self", "url": request.url}],
            "entry": [{"fullUrl": f"{request.host_url}fhir/{r['resourceType']}/{r['id']}", "resource": r,
                       "search": {"mode": "match"}} for r in chunk]}
        if page * size < len(found):
            bundle["link"].append({"relation": "next",
                                   "url": f"{request.base_url}?{urlencode({**params, '_page': page + 1})}"})
        return fhir_response(bundle)

    @staticmethod
    def matches(resource: dict[str, Any], params: dict[str, str]) -> bool:
        if resource.get("subject", {}).get("reference") != f"Patient/{params['patient']}":
            return False
        if "code" in params:
            wanted = {tuple(c.split("|", 1)) if "|" in c else ("", c) for c in params["code"].split(",")}
            codings = {(c.get("system", ""), c.get("code")) for c in resource["code"]["coding"]}
            codes_only = {("", code) for _, code in codings}
            if not (wanted & (codings | codes_only)):
                return False
        if "status" in params and resource.get("status") not in params["status"].split(","):
            return False
        return True


def hook_body(*, prefetch: dict[str, Any] | None = None, fhir_server: str | None = None,
              token: str | None = TOKEN, patient_id: str = "pat-1",
              user: str = "Practitioner/prac-9") -> dict:
    body: dict[str, Any] = {"hook": "patient-view", "hookInstance": str(uuid.uuid4()),
                            "context": {"userId": user, "patientId": patient_id}}
    if fhir_server is not None:
        body["fhirServer"] = fhir_server
        if token is not None:
            body["fhirAuthorization"] = {"access_token": token, "token_type": "Bearer", "expires_in": 300,
                                         "scope": "patient/*.read", "subject": "bone-health-cds"}
    if prefetch is not None:
        body["prefetch"] = copy.deepcopy(prefetch)
    return body


def complete_prefetch() -> dict[str, Any]:
    return load("pat-1-prefetch-complete.json")


def card_signature(cards: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """What must be the same however the data came: rule id, indicator, summary of each card."""
    return sorted((c["source"]["topic"]["code"], c["indicator"], c["summary"]) for c in cards)


RecordingSink = MemoryLedger  # the ledger keeping the call records in ``.calls``
