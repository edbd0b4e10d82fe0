"""The hook request and feedback envelopes: validated before anything else reads them. Pure code.

The bodies are checked against the CDS Hooks models (``cds/hooks/models.py``): ``hook``, ``hookInstance``
(a canonical UUID), ``context`` with the fields its hook defines, ``fhirServer`` whenever
``fhirAuthorization`` is sent; feedback items with their card, outcome and timestamp, at most
``MAX_FEEDBACK_ITEMS`` of them. First the whole body is searched for strings that cannot be stored (a lone
surrogate, a NUL character): nothing of such a request reaches the audit trail. Every failure is an
``EnvelopeError`` whose ``field`` names the field (``context.patientId``, ``feedback[0].outcome``); a
message never echoes what the client sent, beyond a short escaped excerpt of a wrong ``hook``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError

from cds.errors import EnvelopeError
from cds.hooks.models import (
    HOOK_REQUESTS,
    MAX_FEEDBACK_ITEMS,
    MAX_SERVICE_ID,
    PATTERN_MESSAGES,
    Feedback,
    text_problem,
)


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


def parse_hook_request(body: Any, expected_hook: str) -> HookRequest:
    _an_object(body)
    hook = body.get("hook")
    if hook is None:
        raise EnvelopeError("hook is required", field="hook")
    if not isinstance(hook, str):
        raise EnvelopeError("hook must be a string", field="hook")
    if hook != expected_hook:
        raise EnvelopeError(f"hook {_excerpt(hook)} does not match this service, which answers "
                            f"{expected_hook!r}", field="hook")
    check_storable(body)
    _validate(HOOK_REQUESTS[hook], body)
    context = body["context"]
    patient_id = context["patientId"].strip().removeprefix("Patient/")
    fhir_server = body.get("fhirServer")
    prefetch = body.get("prefetch")
    return HookRequest(hook=hook, hook_instance=body["hookInstance"], context=context, patient_id=patient_id,
                       fhir_server=fhir_server.rstrip("/") if fhir_server else None,
                       fhir_authorization=body.get("fhirAuthorization"), prefetch=prefetch,
                       has_prefetch=prefetch is not None)


def parse_feedback(body: Any) -> list[dict[str, Any]]:
    """Validate a feedback body; return its items."""
    _an_object(body)
    items = body.get("feedback")
    if isinstance(items, list) and len(items) > MAX_FEEDBACK_ITEMS:  # refused before reading them
        raise EnvelopeError(f"feedback holds {len(items)} items, more than the {MAX_FEEDBACK_ITEMS} accepted "
                            "in one call", field="feedback")
    check_storable(body)
    _validate(Feedback, body)
    return list(items)


def check_service_id(service_id: str) -> None:
    """The service id in a URL: before it is looked up, logged or recorded."""
    if len(service_id) > MAX_SERVICE_ID:
        raise EnvelopeError(f"service id is {len(service_id)} characters long, more than the "
                            f"{MAX_SERVICE_ID} accepted", field="service")
    problem = text_problem(service_id)
    if problem:
        raise EnvelopeError(f"service id {problem}", field="service")


def check_storable(value: Any) -> None:
    """Refuse a body holding a string (or key) that cannot be stored, naming where it is.

    orjson writes the whole body in one C pass, refusing any string holding a surrogate and writing NUL as
    ``\\u0000``: when it writes the body and no ``\\u0000`` is in the text, every string is storable.
    Otherwise the body is walked, to name where the problem is (or to find none)."""
    try:
        if b"\\u0000" not in orjson.dumps(value):
            return
    except (orjson.JSONEncodeError, TypeError):
        pass
    found = _unstorable(value)
    if found is not None:
        where, problem = found
        path = _path(tuple(reversed(where)))
        raise EnvelopeError(f"{path} {problem}", field=path)


# -- helpers -------------------------------------------------------------------------------------------

def _an_object(body: Any) -> None:
    if not isinstance(body, dict):
        raise EnvelopeError("the request body must be a JSON object", field="(body)")


def _excerpt(value: str, limit: int = 40) -> str:
    """A short, escaped excerpt of client text, safe to echo and to store."""
    shown = value if len(value) <= limit else value[:limit] + "..."
    return json.dumps(shown)  # ASCII only: escapes surrogates and control characters


def _unstorable(value: Any) -> tuple[list[str | int], str] | None:
    """The path (innermost first) and problem of the first string that cannot be stored, or None."""
    if isinstance(value, str):
        problem = text_problem(value)
        return ([], problem) if problem else None
    if isinstance(value, dict):
        for key, item in value.items():
            problem = text_problem(key)
            if problem:
                return [key], "is a key that " + problem
            found = _unstorable(item)
            if found is not None:
                found[0].append(key)
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = _unstorable(item)
            if found is not None:
                found[0].append(index)
                return found
    return None


def _path(loc: tuple[str | int, ...]) -> str:
    """``("feedback", 0, "card")`` as ``feedback[0].card``; odd keys quoted and escaped."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.isidentifier() and part.isascii() and len(part) <= 64:
            out += f".{part}" if out else part
        else:
            out += f"[{_excerpt(part)}]"
    return out or "(body)"


_TYPE_MESSAGES = {
    "string_type": "must be a string",
    "string_unicode": "must be valid Unicode text (it holds a lone surrogate)",
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
    "dict_type": "must be an object",
    "list_type": "must be an array",
    "int_type": "must be an integer",
    "bool_type": "must be true or false",
}


def _message(error: Any) -> str:
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind == "missing" or (kind in _TYPE_MESSAGES and error.get("input") is None):
        return "is required"
    if kind in _TYPE_MESSAGES:
        return _TYPE_MESSAGES[kind]
    if kind == "string_too_long":
        return f"must be at most {ctx['max_length']} characters long"
    if kind == "string_too_short":
        return "must not be empty"
    if kind == "too_long":
        return f"must hold at most {ctx['max_length']} items"
    if kind == "too_short":
        return "must not be empty"
    if kind == "string_pattern_mismatch":
        return PATTERN_MESSAGES.get(str(ctx.get("pattern")), "is not in the expected form")
    if kind == "literal_error":
        return f"must be {ctx['expected']}"
    if "field" in ctx:  # one of the models' own rules: the message is written for the field
        return str(error["msg"])
    return str(error["msg"]).rstrip(".").lower()


def _validate(model: type[BaseModel], body: dict[str, Any]) -> None:
    try:
        model.model_validate(body)
    except ValidationError as exc:
        issues = []
        for error in exc.errors(include_url=False):
            ctx = error.get("ctx") or {}
            inner = tuple(str(ctx["field"]).split(".")) if "field" in ctx else ()
            path = _path(tuple(error["loc"]) + inner)
            issues.append((path, f"{path} {_message(error)}"))
        (first_path, first), rest = issues[0], issues[1:]
        rest = rest[:9]
        raise EnvelopeError(first, field=first_path, details=[text for _, text in rest],
                            detail_fields=[path for path, _ in rest]) from None
