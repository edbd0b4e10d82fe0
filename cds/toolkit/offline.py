"""Evaluating a FHIR Bundle offline (no server, no network): used by ``cds evaluate`` and the fixture tests.

A fixture bundle holds a patient's record; for the order hooks, its MedicationRequests and ServiceRequests
with status ``draft`` are taken as the hook's draft orders (the first draft is the selection for
order-select).
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from pathlib import Path
from typing import Any

from cds.errors import InvalidFhir
from cds.fhir import references

ORDER_TYPES = ("MedicationRequest", "ServiceRequest")
USER_ID = "Practitioner/example"


def load_bundle(path: str | Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise InvalidFhir(f"{path}: cannot read: {exc.strerror}") from exc
    except json.JSONDecodeError as exc:
        raise InvalidFhir(f"{path}: not JSON (line {exc.lineno}: {exc.msg})") from exc
    if not isinstance(data, dict) or data.get("resourceType") != "Bundle":
        raise InvalidFhir(f"{path}: not a FHIR Bundle")
    return data


def split_bundle(bundle: dict[str, Any], hook: str) -> tuple[str, list[dict], list[dict]]:
    """Return ``(patient_id, record_resources, draft_orders)`` from a fixture bundle."""
    resources = [e["resource"] for e in bundle.get("entry", []) if isinstance(e, dict) and "resource" in e]
    patient = next((r for r in resources if r.get("resourceType") == "Patient"), None)
    patient_id = (patient or {}).get("id") or "unknown"
    drafts: list[dict] = []
    record: list[dict] = []
    for r in resources:
        if hook != "patient-view" and r.get("resourceType") in ORDER_TYPES and r.get("status") == "draft":
            drafts.append(r)
        else:
            record.append(r)
    return patient_id, record, drafts


def as_bundle(resources: list[dict], bundle_type: str = "collection") -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": bundle_type, "entry": [{"resource": r} for r in resources]}


def hook_context(hook: str, patient_id: str, drafts: list[dict[str, Any]],
                 user_id: str = USER_ID) -> dict[str, Any]:
    """The hook's ``context``: user and patient, and for the order hooks the draft orders (order-select
    selects the first)."""
    context: dict[str, Any] = {"userId": user_id, "patientId": patient_id}
    if hook != "patient-view":
        context["draftOrders"] = as_bundle(drafts)
    if hook == "order-select":
        context["selections"] = [f"{d['resourceType']}/{d.get('id')}" for d in drafts[:1]]
    return context


def hook_request(bundle: dict[str, Any], hook: str, *, prefetch: dict[str, Any] | None = None,
                 templates: dict[str, str] | None = None) -> dict[str, Any]:
    """A spec-shaped hook request for a fixture bundle, each prefetch key answered from the record."""
    patient_id, record, drafts = split_bundle(bundle, hook)
    context = hook_context(hook, patient_id, drafts)
    if prefetch is None:
        prefetch = prefetch_from_record(record, templates)
    return {"hook": hook, "hookInstance": str(uuid.uuid4()), "context": context, "prefetch": prefetch}


def _codes(resource: dict[str, Any]) -> set[str]:
    codings = ((resource.get("code") or {}).get("coding")) or []
    return {f"{c.get('system', '')}|{c.get('code', '')}" for c in codings if isinstance(c, dict)}


def _search(record: list[dict], query: str) -> dict[str, Any]:
    """Answer a prefetch search (``Type?param=a,b&...``) from the record: the parameters the templates use
    (``code`` as ``system|code`` tokens, ``status``, ``_include=Type:medication``) are applied, the patient
    parameter is implied (a fixture holds one patient's record)."""
    resource_type, _, params = query.partition("?")
    wanted: dict[str, set[str]] = {}
    for part in params.split("&"):
        name, _, value = part.partition("=")
        wanted[name] = set(value.split(",")) if value else set()
    found = [r for r in record if r.get("resourceType") == resource_type
             and ("code" not in wanted or _codes(r) & wanted["code"])
             and ("status" not in wanted or r.get("status") in wanted["status"])]
    if any(inc.endswith(":medication") for inc in wanted.get("_include", ())):
        targets = [references.parse((r.get("medicationReference") or {}).get("reference")) for r in found]
        ids = {t.id for t in targets if t is not None and not t.contained and t.type in (None, "Medication")}
        found += [r for r in record if r.get("resourceType") == "Medication" and r.get("id") in ids]
    return as_bundle(found, "searchset")


def prefetch_from_record(record: list[dict], templates: dict[str, str] | None = None) -> dict[str, Any]:
    """Answer every prefetch key from the record, each with what its template asks for.

    ``templates`` defaults to the packaged rule pack's discovery templates. A read (``Patient/{{...}}``)
    gets the resource or ``None``; a search gets a searchset Bundle of the matching resources.
    """
    if templates is None:
        from cds.hooks.services import prefetch_templates
        from cds.rules.pack import load

        templates = prefetch_templates(load())
    out: dict[str, Any] = {}
    for key, template in templates.items():
        if "?" not in template:
            resource_type = template.partition("/")[0]
            out[key] = next((r for r in record if r.get("resourceType") == resource_type), None)
        else:
            out[key] = _search(record, template)
    return out


def parse_at(value: str | None) -> dt.datetime:
    if not value:
        return dt.datetime.now(dt.UTC)
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError as exc:
        raise ValueError(f"--at {value!r} is not an ISO date (YYYY-MM-DD)") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
