"""The hook request envelope: validated before anything else reads it. Pure code.

Checks what CDS Hooks 2.0 requires of a request (``hook``, ``hookInstance``, ``context`` with the fields its
hook defines, ``fhirServer`` whenever ``fhirAuthorization`` is sent) and returns a ``HookRequest``. Every
failure is an ``EnvelopeError`` whose message names the field.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from cds.errors import EnvelopeError

#: per hook: required context fields and their JSON types, then optional ones
HOOK_CONTEXT: dict[str, tuple[dict[str, type], dict[str, type]]] = {
    "patient-view": ({"userId": str, "patientId": str}, {"encounterId": str}),
    "order-select": ({"userId": str, "patientId": str, "selections": list, "draftOrders": dict},
                     {"encounterId": str}),
    "order-sign": ({"userId": str, "patientId": str, "draftOrders": dict}, {"encounterId": str}),
}

_JSON_NAMES = {str: "a string", list: "an array", dict: "an object"}


@dataclass(frozen=True)
class HookRequest:
    hook: str
    hook_instance: str
    context: dict[str, Any]
    patient_id: str
    fhir_server: str | None = None
    fhir_authorization: dict[str, Any] | None = field(default=None, repr=False)
    prefetch: dict[str, Any] | None = None
    has_prefetch: bool = False

    @property
    def selections(self) -> list[str]:
        return list(self.context.get("selections") or [])

    @property
    def draft_orders(self) -> dict[str, Any] | None:
        return self.context.get("draftOrders")


def _require(obj: dict[str, Any], name: str, kind: type, where: str) -> Any:
    if name not in obj or obj[name] is None:
        raise EnvelopeError(f"{where}{name} is required", field=f"{where}{name}")
    value = obj[name]
    if not isinstance(value, kind) or (kind is str and not value.strip()):
        raise EnvelopeError(f"{where}{name} must be {_JSON_NAMES[kind]}"
                            + (" (non-empty)" if kind is str else ""), field=f"{where}{name}")
    return value


def parse_hook_request(body: Any, expected_hook: str) -> HookRequest:
    if not isinstance(body, dict):
        raise EnvelopeError("the request body must be a JSON object", field="(body)")
    hook = _require(body, "hook", str, "")
    if hook != expected_hook:
        raise EnvelopeError(f"hook {hook!r} does not match this service, which answers {expected_hook!r}",
                            field="hook")
    instance = _require(body, "hookInstance", str, "")
    try:
        uuid.UUID(instance)
    except ValueError as exc:
        raise EnvelopeError("hookInstance must be a UUID", field="hookInstance") from exc
    context = _require(body, "context", dict, "")
    required, optional = HOOK_CONTEXT[hook]
    for name, kind in required.items():
        _require(context, name, kind, "context.")
    for name, kind in optional.items():
        if context.get(name) is not None:
            _require(context, name, kind, "context.")
    selections = context.get("selections")
    if selections is not None:
        if not isinstance(selections, list) or not all(isinstance(s, str) and "/" in s for s in selections):
            raise EnvelopeError("context.selections must list references like 'MedicationRequest/103'",
                                field="context.selections")
    drafts = context.get("draftOrders")
    if drafts is not None and (not isinstance(drafts, dict) or drafts.get("resourceType") != "Bundle"):
        raise EnvelopeError("context.draftOrders must be a FHIR Bundle", field="context.draftOrders")
    patient_id = context["patientId"].strip()
    if patient_id.startswith("Patient/"):
        patient_id = patient_id[len("Patient/"):]
    if not patient_id or "/" in patient_id:
        raise EnvelopeError("context.patientId must be a Patient id", field="context.patientId")
    fhir_server = body.get("fhirServer")
    if fhir_server is not None and (not isinstance(fhir_server, str) or
                                    not fhir_server.startswith(("http://", "https://"))):
        raise EnvelopeError("fhirServer must be an http(s) URL", field="fhirServer")
    auth = body.get("fhirAuthorization")
    if auth is not None:
        if not isinstance(auth, dict):
            raise EnvelopeError("fhirAuthorization must be an object", field="fhirAuthorization")
        if fhir_server is None:
            raise EnvelopeError("fhirServer is required when fhirAuthorization is sent", field="fhirServer")
        _require(auth, "access_token", str, "fhirAuthorization.")
        token_type = _require(auth, "token_type", str, "fhirAuthorization.")
        if token_type.lower() != "bearer":
            raise EnvelopeError(
                "fhirAuthorization.token_type must be 'Bearer'", field="fhirAuthorization.token_type"
            )
    prefetch = body.get("prefetch")
    if prefetch is not None and not isinstance(prefetch, dict):
        raise EnvelopeError("prefetch must be an object", field="prefetch")
    return HookRequest(hook=hook, hook_instance=instance, context=context, patient_id=patient_id,
                       fhir_server=fhir_server.rstrip("/") if fhir_server else None, fhir_authorization=auth,
                       prefetch=prefetch, has_prefetch=prefetch is not None)


def parse_feedback(body: Any) -> list[dict[str, Any]]:
    """Validate a feedback body; return its items."""
    if not isinstance(body, dict):
        raise EnvelopeError("the request body must be a JSON object", field="(body)")
    items = body.get("feedback")
    if not isinstance(items, list) or not items:
        raise EnvelopeError("feedback must be a non-empty array", field="feedback")
    for i, item in enumerate(items):
        where = f"feedback[{i}]."
        if not isinstance(item, dict):
            raise EnvelopeError(f"feedback[{i}] must be an object", field=f"feedback[{i}]")
        card = _require(item, "card", str, where)
        try:
            uuid.UUID(card)
        except ValueError as exc:
            raise EnvelopeError(f"{where}card must be the card's uuid", field=f"{where}card") from exc
        outcome = _require(item, "outcome", str, where)
        if outcome not in ("accepted", "overridden"):
            raise EnvelopeError(f"{where}outcome must be 'accepted' or 'overridden'", field=f"{where}outcome")
        _require(item, "outcomeTimestamp", str, where)
        if outcome == "accepted":
            accepted = item.get("acceptedSuggestions")
            if (
                not isinstance(accepted, list)
                or not accepted
                or not all(isinstance(a, dict) and isinstance(a.get("id"), str) for a in accepted)
            ):
                raise EnvelopeError(
                    f"{where}acceptedSuggestions must list {{'id': suggestion uuid}} when accepted",
                    field=f"{where}acceptedSuggestions",
                )
        reason = item.get("overrideReason")
        if reason is not None:
            if outcome != "overridden" or not isinstance(reason, dict):
                raise EnvelopeError(f"{where}overrideReason is only for an overridden card, as an object",
                                    field=f"{where}overrideReason")
            coding = reason.get("reason")
            if coding is not None and not (isinstance(coding, dict) and coding.get("code")):
                raise EnvelopeError(f"{where}overrideReason.reason must be a Coding with a code",
                                    field=f"{where}overrideReason.reason")
            comment = reason.get("userComment")
            if comment is not None and not isinstance(comment, str):
                raise EnvelopeError(f"{where}overrideReason.userComment must be a string",
                                    field=f"{where}overrideReason.userComment")
    return items
