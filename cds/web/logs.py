"""The service's log: human-readable lines (the default) or one JSON object a line (``LOG_FORMAT=json``),
and one line per hook call and per feedback call that an operator can follow to the audit trail.

Each JSON line has ``timestamp`` (UTC, ISO 8601), ``level``, ``logger`` and ``message``. Every line logged
while a hook call or a feedback call is handled also has the call's ``service``, ``hookInstance`` and
``auditRecord`` (the key of its audit record: ``GET /audit/api/records/<key>``, ``cds audit show <key>``)
once they are known; the line that closes the call adds ``status`` and ``durationMs``. For feedback,
``hookInstance`` and ``auditRecord`` are those of the call that issued the card (a list when the items
name cards of several calls; null when no audited card has the uuid yet).

What a line never holds: a token (the client's JWT, the FHIR access token), a patient identifier, a FHIR
resource. The fields added here are ids this service or the CDS Hooks envelope defines (a ``hookInstance``
is logged only when it is a UUID, as the specification says it is); the messages name services,
statuses and reasons, never request content.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from typing import Any

from flask import Flask, Response, g, has_request_context, request, request_finished

from cds.hooks.models import UUID_PATTERN

log = logging.getLogger("cds.calls")

FORMATS = ("text", "json")
HANDLER_NAME = "cds-log"  # the root handler this module installs (replaced, never doubled)
CALL_ENDPOINTS = {"cds_hooks.call_service": "hook call", "cds_hooks.feedback": "feedback"}
#: the fields of a call, in the order a JSON line has them
CALL_FIELDS = ("service", "hookInstance", "auditRecord")
_UUID = re.compile(UUID_PATTERN)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_LINK = re.compile(r"(/why/[^/\s?\"]*?\.[0-9]+\.)[A-Za-z0-9_-]+")


class CallContext(logging.Filter):
    """Adds the call's fields to every record logged while the call is handled (in its request); takes
    terminal colour codes out of a message (werkzeug colours its request lines), and the signature out of
    a "Why this card?" link an access line names (the link opens the card's page without a login)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "\x1b" in message or "/why/" in message:
            record.msg, record.args = _LINK.sub(r"\g<1>(signature)", _ANSI.sub("", message)), None
        if has_request_context():
            for name, value in g.get("log_fields", {}).items():
                if not hasattr(record, name):
                    setattr(record, name, value)
        return True


def json_formatter() -> logging.Formatter:
    from pythonjsonlogger.json import JsonFormatter

    return JsonFormatter("%(levelname)s %(name)s %(message)s",
                         rename_fields={"levelname": "level", "name": "logger"}, timestamp=True)


def configure(level: str, fmt: str) -> None:
    """Set the root logger's level, and its handler's format: ``text`` keeps whatever handler the process
    has (``logging.basicConfig`` when it has none); ``json`` installs one JSON handler on stderr, which
    adds the call's fields to the lines logged while a call is handled."""
    root = logging.getLogger()
    number = getattr(logging, str(level).upper(), logging.INFO)
    if fmt == "json":
        for old in [h for h in root.handlers if h.get_name() == HANDLER_NAME]:
            root.removeHandler(old)
        handler = logging.StreamHandler(sys.stderr)
        handler.set_name(HANDLER_NAME)
        handler.setFormatter(json_formatter())
        handler.addFilter(CallContext())
        root.addHandler(handler)
        root.setLevel(number)
        return
    logging.basicConfig(level=number)


def hook_instance_of(body: Any) -> str | None:
    """The body's ``hookInstance`` when it is a UUID (anything else is not logged)."""
    value = body.get("hookInstance") if isinstance(body, dict) else None
    return value if isinstance(value, str) and _UUID.fullmatch(value) else None


def issuing_calls(issued: Any) -> dict[str, Any]:
    """The ``hookInstance`` and ``auditRecord`` of the calls that issued the cards feedback names (from the
    feedback store's answer: each item's card as found, or None): one value, a list, or None."""
    found = [card for card in issued or () if card is not None] if isinstance(issued, list) else []

    def one_or_all(values: list[Any]) -> Any:
        distinct = list(dict.fromkeys(v for v in values if isinstance(v, str)))
        return distinct[0] if len(distinct) == 1 else distinct or None

    return {"hookInstance": one_or_all([getattr(c, "hook_instance", None) for c in found]),
            "auditRecord": one_or_all([getattr(c, "record_id", None) for c in found])}


def note(**fields: Any) -> None:
    """Fields of the current call, added to every line logged from now on while it is handled."""
    g.setdefault("log_fields", {}).update(fields)


def _started() -> None:
    kind = CALL_ENDPOINTS.get(request.endpoint or "")
    if kind is not None:
        g.log_started = time.perf_counter()
        service = (request.view_args or {}).get("service_id")
        note(service=service if isinstance(service, str) and len(service) <= 128 else None,
             hookInstance=None, auditRecord=None)


def _finished(sender: Flask, response: Response, **_: Any) -> None:
    kind = CALL_ENDPOINTS.get(request.endpoint or "")
    started = g.get("log_started")
    if kind is None or started is None:
        return
    fields = dict(g.get("log_fields", {}))
    ms = round((time.perf_counter() - started) * 1000, 1)
    status = response.status_code
    record = fields.get("auditRecord")
    where = f"; audit record {record}" if isinstance(record, str) else ""
    level = logging.ERROR if status >= 500 else logging.WARNING if status >= 400 else logging.INFO
    log.log(level, "%s %s%s answered %d in %.0f ms%s", kind, fields.get("service"),
            f" ({fields['hookInstance']})" if isinstance(fields.get("hookInstance"), str) else "", status,
            ms, where, extra={"status": status, "durationMs": ms})


def init_app(app: Flask) -> None:
    """The line that closes each hook call and feedback call (the format is set by ``configure``)."""
    app.before_request(_started)
    request_finished.connect(_finished, app)
