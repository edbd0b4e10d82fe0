"""One exception tree for the whole service, each mapped to an HTTP status and an OperationOutcome.

    CdsError                          500  error / exception
    ├── ConfigurationError            500  error / processing       (bad setting or rule pack at start-up)
    ├── RulePackError                 500  error / invalid          (a rule file fails its check)
    ├── RequestError                  400  error / invalid          (the request itself is wrong)
    │   ├── MalformedJSON             400  error / structure
    │   ├── EnvelopeError             400  error / required         (hook, hookInstance, context fields)
    │   ├── InvalidFhir               400  error / structure        (a resource fails FHIR R4 validation)
    │   ├── UnknownService            404  error / not-found
    │   ├── NotFound                  404  error / not-found        (an audit record, a card)
    │   ├── LimitExceeded             413  error / too-costly       (body size, bundle entries)
    │   └── ClientTooSlow             408  error / timeout          (the body did not arrive in time:
    │                                                                 cds/web/httpserver.py)
    ├── Unauthorized                  401  error / security         (over HTTP a bare body: nothing that
    │   │                                                             helps an attacker)
    │   └── TokenReplayed             401  error / security         (a token id used before; the issuer
    │                                                                 is named in the log only)
    ├── AuthUnavailable               503  error / transient        (the token-id store cannot be reached)
    ├── BudgetExceeded                503  error / too-costly       (time or work budget of a call used up)
    ├── DataUnavailable               412  error / not-found        (data a rule needs cannot be obtained)
    │   ├── FhirServerNotAllowed      412  error / security         (fhirServer is not in the allow-list)
    │   └── FhirServerError           412  error / not-found        (the fhirServer failed: down, timeout,
    │                                                                 401/403, 5xx, not JSON, not FHIR)
    ├── EngineError                   500  error / exception        (the rules engine failed)
    └── AuditUnavailable              503  error / transient        (neither database nor spool can record)

Each line: the class, its HTTP status, and its OperationOutcome issue's severity / code
(tests/test_docs.py checks the drawing against the classes).

Every error carries a message that names the field or datum at fault; ``to_operation_outcome`` turns
it into the FHIR body (``details`` become further issues, each naming its own field when
``detail_fields`` says which). The service never answers with a stack trace.
"""

from __future__ import annotations

from typing import Any


class CdsError(Exception):
    status = 500
    severity = "error"
    code = "exception"

    def __init__(self, message: str, *, field: str | None = None, details: list[str] | None = None,
                 detail_fields: list[str | None] | None = None):
        super().__init__(message)
        self.message = message
        self.field = field
        self.details = details or []
        self.detail_fields = detail_fields or []

    def to_operation_outcome(self) -> dict[str, Any]:
        return operation_outcome(self.message, severity=self.severity, code=self.code, field=self.field,
                                 details=self.details, detail_fields=self.detail_fields)


class ConfigurationError(CdsError):
    code = "processing"


class RulePackError(CdsError):
    code = "invalid"


class RequestError(CdsError):
    status = 400
    code = "invalid"


class MalformedJSON(RequestError):
    code = "structure"


class EnvelopeError(RequestError):
    code = "required"


class InvalidFhir(RequestError):
    code = "structure"


class UnknownService(RequestError):
    status = 404
    code = "not-found"


class NotFound(RequestError):
    status = 404
    code = "not-found"


class LimitExceeded(RequestError):
    status = 413
    code = "too-costly"


class ClientTooSlow(RequestError):
    status = 408
    code = "timeout"


class Unauthorized(CdsError):
    status = 401
    code = "security"


class TokenReplayed(Unauthorized):
    """A token id (``jti``) used before: a bare 401, the issuer named in the log."""

    def __init__(self, iss: str):
        super().__init__(f"token id (jti) of issuer {iss!r} was used before (replay)")


class AuthUnavailable(CdsError):
    status = 503
    code = "transient"


class BudgetExceeded(CdsError):
    """A call used up its budget (``CALL_BUDGET_SECONDS`` or ``CALL_MAX_RESOURCES``); the message names it."""

    status = 503
    code = "too-costly"


class DataUnavailable(CdsError):
    status = 412
    code = "not-found"


class FhirServerNotAllowed(DataUnavailable):
    code = "security"


class FhirServerError(DataUnavailable):
    """Fetching from the request's ``fhirServer`` failed; ``server_wide`` when other keys would fail too."""

    def __init__(self, message: str, *, field: str | None = None, details: list[str] | None = None,
                 server_wide: bool = False):
        super().__init__(message, field=field, details=details)
        self.server_wide = server_wide


class EngineError(CdsError):
    code = "exception"


class AuditUnavailable(CdsError):
    status = 503
    code = "transient"


def operation_outcome(message: str, *, severity: str = "error", code: str = "processing",
                      field: str | None = None, details: list[str] | None = None,
                      detail_fields: list[str | None] | None = None) -> dict[str, Any]:
    issue: dict[str, Any] = {"severity": severity, "code": code, "diagnostics": message}
    if field:
        issue["expression"] = [field]
    issues = [issue]
    fields = list(detail_fields or [])
    for index, extra in enumerate(details or []):
        more: dict[str, Any] = {"severity": severity, "code": code, "diagnostics": extra}
        if index < len(fields) and fields[index]:
            more["expression"] = [fields[index]]
        issues.append(more)
    return {"resourceType": "OperationOutcome", "issue": issues}
