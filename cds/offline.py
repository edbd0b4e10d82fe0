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

from .errors import InvalidFhir

ORDER_TYPES = ("MedicationRequest", "ServiceRequest")


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


def hook_request(bundle: dict[str, Any], hook: str, *, prefetch: dict[str, Any] | None = None) -> dict[str, Any]:
    """A spec-shaped hook request for a fixture bundle, carrying the whole record as prefetch."""
    patient_id, record, drafts = split_bundle(bundle, hook)
    context: dict[str, Any] = {"userId": "Practitioner/example", "patientId": patient_id}
    if hook != "patient-view":
        context["draftOrders"] = as_bundle(drafts)
    if hook == "order-select":
        context["selections"] = [f"{d['resourceType']}/{d.get('id')}" for d in drafts[:1]]
    if prefetch is None:
        prefetch = prefetch_from_record(record)
    return {"hook": hook, "hookInstance": str(uuid.uuid4()), "context": context, "prefetch": prefetch}


def prefetch_from_record(record: list[dict]) -> dict[str, Any]:
    """Answer every prefetch key from the record (the whole record goes in each search key's Bundle)."""
    patient = next((r for r in record if r.get("resourceType") == "Patient"), None)
    observations = [r for r in record if r.get("resourceType") == "Observation"]
    others = [r for r in record if r.get("resourceType") in ("MedicationRequest", "Medication")]
    return {"patient": patient, "estradiol": as_bundle(observations, "searchset"),
            "vitaminD": as_bundle([], "searchset"), "dxa": as_bundle([], "searchset"),
            "medications": as_bundle(others, "searchset")}


def parse_at(value: str | None) -> dt.datetime:
    if not value:
        return dt.datetime.now(dt.UTC)
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError as exc:
        raise ValueError(f"--at {value!r} is not an ISO date (YYYY-MM-DD)") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
