"""The one way a fixture bundle becomes the hook request an EHR would send. Pure code (no network).

Used by the golden fixture tests (``tests/fixture_check.py``), ``cds evaluate`` (``cds.toolkit.offline``),
``cds request`` and ``cds replay``, so the golden tests prove what the command line sends.

A fixture bundle holds one patient's record; for the order hooks, its MedicationRequests and
ServiceRequests with status ``draft`` are the draft orders (the first is the selection for order-select).
``build_hook_request`` takes the bundle, the service's entry in the discovery document, a prefetch mode and
a date shift, and returns the JSON body:

* ``hookInstance`` a fresh UUID; ``context`` with ``userId``, ``patientId`` and, for the order hooks,
  ``draftOrders`` (a ``collection`` Bundle) and, for order-select, ``selections`` (the first draft);
* ``prefetch`` answering the service's templates from the record (``cds.toolkit.prefetch_answer``):
  ``full`` answers every key, ``partial`` omits the keys named (or every second key when none is named),
  ``none`` sends no prefetch at all; a resource filed under another patient is sent only with
  ``misfiled=True`` (``unsent`` names what the default leaves out);
* every date in the bundle moved by ``shift_days`` first (``cds.toolkit.dateshift``).
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from cds.errors import InvalidFhir
from cds.hooks.services import SERVICES
from cds.toolkit.dateshift import days_between, shift_dates
from cds.toolkit.prefetch_answer import answer_all, filed_elsewhere

HOOKS = tuple(dict.fromkeys(hook for _, hook, _ in SERVICES))  # the hooks this service answers
ORDER_TYPES = ("MedicationRequest", "ServiceRequest")
USER_ID = "Practitioner/example"
PREFETCH_MODES = ("full", "partial", "none")


def choose_service(discovery: Mapping[str, Any], hook: str, service_id: str | None = None) -> dict[str, Any]:
    """The discovery entry for ``service_id``, or the first service for ``hook``; ValueError if none."""
    services = [s for s in discovery.get("services", []) if isinstance(s, dict)]
    if service_id:
        found = next((s for s in services if s.get("id") == service_id), None)
        if found is None:
            raise ValueError(
                f"the discovery document lists no service {service_id!r} "
                f"(it has: {', '.join(str(s.get('id')) for s in services) or 'none'})"
            )
        if found.get("hook") != hook:
            raise ValueError(f"service {service_id!r} answers {found.get('hook')!r}, not {hook!r}")
        return found
    found = next((s for s in services if s.get("hook") == hook), None)
    if found is None:
        raise ValueError(f"the discovery document lists no service for hook {hook!r}")
    return found


def prefetch_keys_sent(templates: Iterable[str], mode: str, omit: Iterable[str] = ()) -> list[str]:
    keys = list(templates)
    if mode == "none":
        return []
    if mode == "full":
        return keys
    omitted = set(omit) or set(keys[1::2])
    return [k for k in keys if k not in omitted]


def build_hook_request(
    bundle: dict[str, Any],
    hook: str,
    service: Mapping[str, Any],
    *,
    prefetch: str = "full",
    omit: Iterable[str] = (),
    shift_days: int = 0,
    misfiled: bool = False,
) -> dict[str, Any]:
    """The hook request for ``bundle`` to ``service`` (its discovery entry: ``prefetch`` templates)."""
    if prefetch not in PREFETCH_MODES:
        raise ValueError(f"prefetch mode must be one of {', '.join(PREFETCH_MODES)}")
    if hook not in HOOKS:
        raise ValueError(f"unknown hook {hook!r} (one of {', '.join(HOOKS)})")
    if shift_days:
        bundle = shift_dates(bundle, shift_days)
    patient_id, record, drafts = split_bundle(bundle, hook)
    context = hook_context(hook, patient_id, drafts)
    body: dict[str, Any] = {"hook": hook, "hookInstance": str(uuid.uuid4()), "context": context}
    templates = service.get("prefetch") or {}
    if prefetch != "none" and templates:
        answered = answer_all(templates, record, context, misfiled=misfiled)
        body["prefetch"] = {k: answered[k] for k in prefetch_keys_sent(templates, prefetch, omit)
                            if k in answered}
    return body


def unsent(bundle: dict[str, Any], hook: str) -> list[str]:
    """What of the bundle's record ``build_hook_request`` does not send by default, one line each: the
    resources filed under another patient (no FHIR search for this patient returns them)."""
    patient_id, record, _ = split_bundle(bundle, hook)
    return [
        f"{r.get('resourceType')}/{r.get('id')} (filed under another patient: no search for this patient "
        "returns it)"
        for r in filed_elsewhere(record, patient_id)
    ]


# -- fixture bundles ---------------------------------------------------------------------------------------


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


# -- fixture sidecars -------------------------------------------------------------------------------------


def sidecar_path(fixture: str | Path) -> Path:
    path = Path(fixture)
    return (
        path.with_name(path.name[: -len(".json")] + ".expected.json")
        if path.name.endswith(".json")
        else path.with_name(path.name + ".expected.json")
    )


def load_sidecar(fixture: str | Path) -> dict[str, Any] | None:
    """The fixture's ``<name>.expected.json``, or None when it has none. ValueError when it is malformed."""
    path = sidecar_path(fixture)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: cannot read the expectations: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("hook"), str):
        raise ValueError(f"{path}: expected an object with at least a 'hook'")
    return data


def parse_date(value: str, what: str) -> dt.date:
    try:
        return dt.date.fromisoformat(str(value)[:10])
    except ValueError as exc:
        raise ValueError(f"{what} {value!r} is not an ISO date (YYYY-MM-DD)") from exc


def shift_for(at: str | None, server_date: dt.date | None, enabled: bool = True) -> int:
    """Days to move a fixture written for ``at`` so that it holds on ``server_date`` (default: today, UTC)."""
    if not enabled or not at:
        return 0
    today = server_date or dt.datetime.now(dt.UTC).date()
    return days_between(parse_date(at, "at"), today)
