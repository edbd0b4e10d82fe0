"""CDS Hooks 2.0 request and response bodies, declared once (pydantic 2). Pure code.

The envelope (``cds/hooks/envelope.py``) validates requests with these models and the OpenAPI document
(``cds/hooks/schemas.py``) is generated from them, so the two cannot drift apart.

Requests are read as real clients send them: extra fields are kept, ``patientId`` may carry a
``Patient/`` prefix, FHIR resources (prefetch, ``draftOrders``) are only checked for their shape here and
validated by ``cds/fhir/parse.py``, which tolerates the sloppy Bundles EHR simulators send. Every string
that can reach the audit trail has a bounded length and must be valid Unicode text without NUL (a lone
surrogate cannot be encoded, and PostgreSQL refuses NUL in text). Responses are closed: a field the
service does not declare here makes the schema, and the test that checks real answers against it, fail.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WithJsonSchema,
    WrapValidator,
)
from pydantic import model_validator as _model_validator
from pydantic_core import PydanticCustomError

#: bounds on what a request may carry (the audit columns are sized for these)
MAX_SERVICE_ID = 128
MAX_ID = 256  # userId, patientId, encounterId, a selection, a suggestion id
MAX_URL = 2048
MAX_CODE = 128
MAX_SYSTEM = 1024
MAX_DISPLAY = 1024
MAX_COMMENT = 4000
MAX_TIMESTAMP = 64
MAX_TOKEN = 16384
MAX_SELECTIONS = 1000
MAX_SUGGESTIONS = 100
MAX_FEEDBACK_ITEMS = 100

#: JSON Schema patterns (ECMA and Rust regex alike); ASCII classes only, as ``\d`` is Unicode-wide
UUID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
DATE_TIME_PATTERN = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,9})?)?(Z|[+-][0-9]{2}:[0-9]{2})?$"
)
URL_PATTERN = r"^https?://"
NOT_BLANK = r"\S"
#: a Patient id, perhaps with the ``Patient/`` prefix some clients send
PATIENT_ID_PATTERN = r"^\s*(Patient/)?[^/]*[^/\s][^/]*$"
REFERENCE_PATTERN = r"/"
#: the diagnostics for a string that does not match its pattern
PATTERN_MESSAGES = {
    UUID_PATTERN: "must be a UUID in canonical form (8-4-4-4-12 hexadecimal digits)",
    DATE_TIME_PATTERN: "must be a date-time such as 2026-11-22T10:00:00Z",
    URL_PATTERN: "must be an http(s) URL",
    NOT_BLANK: "must not be blank",
    PATIENT_ID_PATTERN: "must be a Patient id",
    REFERENCE_PATTERN: "must be a reference like 'MedicationRequest/103'",
}


def text_problem(value: str) -> str | None:
    """Why ``value`` cannot be stored as text (a lone surrogate, a NUL character), or None."""
    if "\x00" in value:
        return "must not contain NUL characters"
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "must be valid Unicode text (it holds a lone surrogate)"
    return None


def _storable(value: str) -> str:
    problem = text_problem(value)
    if problem:
        raise PydanticCustomError("text", problem)
    return value


def _a_date_time(value: str) -> str:
    try:
        dt.datetime.fromisoformat(value)
    except ValueError:
        raise PydanticCustomError("date_time", "must be a date-time that exists (month 1-12, day, hour 0-23"
                                  " ...)") from None
    return value


_Storable = AfterValidator(_storable)


def _text(max_length: int, pattern: str | None = None) -> StringConstraints:
    return StringConstraints(max_length=max_length, pattern=pattern)


#: strings that may reach the audit trail: bounded, storable (see ``text_problem``)
Uuid = Annotated[str, _text(36, UUID_PATTERN), _Storable]
Ident = Annotated[str, _text(MAX_ID, NOT_BLANK), _Storable]
Code = Annotated[str, _text(MAX_CODE), _Storable]
System = Annotated[str, _text(MAX_SYSTEM), _Storable]
Display = Annotated[str, _text(MAX_DISPLAY), _Storable]
Comment = Annotated[str, _text(MAX_COMMENT), _Storable]
Url = Annotated[str, _text(MAX_URL, URL_PATTERN), _Storable]
Scope = Annotated[str, _text(MAX_URL), _Storable]
Token = Annotated[str, _text(MAX_TOKEN, NOT_BLANK), _Storable]
DateTime = Annotated[str, _text(MAX_TIMESTAMP, DATE_TIME_PATTERN), _Storable, AfterValidator(_a_date_time)]
PatientId = Annotated[str, _text(MAX_ID, PATIENT_ID_PATTERN), _Storable]
Reference = Annotated[str, _text(MAX_ID, REFERENCE_PATTERN), _Storable]
ResponseUuid = Annotated[str, StringConstraints(pattern=UUID_PATTERN)]

_REF = "#/components/schemas/"
#: a FHIR resource, or null (a prefetch value): checked by ``cds/fhir/parse.py``, documented as a Resource
PrefetchValue = Annotated[Any, WithJsonSchema({"anyOf": [{"$ref": _REF + "Resource"}, {"type": "null"}]})]
BundleEntries = Annotated[
    list[Any],
    WithJsonSchema({"type": "array", "items": {"type": "object", "properties": {"resource": {
        "$ref": _REF + "Resource"}}}}),
]


class _Request(BaseModel):
    """A request body part: JSON types exactly (no coercion), fields this service does not read kept."""

    model_config = ConfigDict(strict=True, extra="allow")


def _omitted_not_null(schema: dict[str, Any]) -> None:
    """A response leaves an optional field out rather than sending null: say so in its JSON Schema."""
    for prop in schema.get("properties", {}).values():
        branches = prop.get("anyOf", [])
        if prop.get("default", ...) is None and {"type": "null"} in branches:
            prop.pop("default")
            rest = [b for b in prop.pop("anyOf") if b != {"type": "null"}]
            prop.update(rest[0] if len(rest) == 1 else {"anyOf": rest})


class _Response(BaseModel):
    """A response body part: only the declared fields; optional ones are left out, never null."""

    model_config = ConfigDict(strict=True, extra="forbid", json_schema_extra=_omitted_not_null)


# -- FHIR, kept loose -----------------------------------------------------------------------------------

class Resource(_Request):
    """Any FHIR R4 resource (JSON); validated by the service itself, which names the field at fault."""

    resourceType: Annotated[str, StringConstraints(min_length=1)]
    id: str | None = None


class Bundle(_Request):
    """A FHIR Bundle; ``type`` may be missing (some EHRs leave it out of ``draftOrders``)."""

    resourceType: Literal["Bundle"]
    type: str | None = None
    entry: BundleEntries | None = None


class Coding(_Request):
    system: System | None = None
    code: Code | None = None
    display: Display | None = None


# -- the hook request -----------------------------------------------------------------------------------

class FhirAuthorization(_Request):
    access_token: Token
    token_type: Annotated[str, StringConstraints(max_length=16), WithJsonSchema({"const": "Bearer"})]
    expires_in: int | None = None
    scope: Scope | None = None
    subject: Ident | None = None
    patient: Ident | None = None

    @_model_validator(mode="after")
    def _bearer(self) -> FhirAuthorization:
        if self.token_type.lower() != "bearer":
            raise PydanticCustomError("bearer", "must be 'Bearer'", {"field": "token_type"})
        return self


def _references(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    try:
        return handler(value)
    except ValidationError:  # one message for the list, as for its items
        raise PydanticCustomError(
            "references", f"must list at most {MAX_SELECTIONS} references like 'MedicationRequest/103'"
        ) from None


Selections = Annotated[list[Reference], Field(max_length=MAX_SELECTIONS), WrapValidator(_references)]


class PatientViewContext(_Request):
    """The patient-view context; ``selections`` and ``draftOrders``, when a client sends them with this
    hook, are read (and checked) as the order hooks' are."""

    userId: Ident
    patientId: PatientId
    encounterId: Ident | None = None
    selections: Selections | None = None
    draftOrders: Bundle | None = None


class OrderSignContext(PatientViewContext):
    draftOrders: Bundle


class OrderSelectContext(PatientViewContext):
    selections: Selections
    draftOrders: Bundle


class _HookRequest(_Request):
    hook: str
    hookInstance: Uuid
    fhirServer: Url | None = None
    fhirAuthorization: FhirAuthorization | None = None
    context: PatientViewContext
    prefetch: dict[str, PrefetchValue] | None = None
    extension: dict[str, Any] | None = None

    @_model_validator(mode="after")
    def _server_for_authorization(self) -> _HookRequest:
        if self.fhirAuthorization is not None and self.fhirServer is None:
            raise PydanticCustomError("server_required", "is required when fhirAuthorization is sent",
                                      {"field": "fhirServer"})
        return self


class PatientViewRequest(_HookRequest):
    hook: Literal["patient-view"]
    context: PatientViewContext


class OrderSelectRequest(_HookRequest):
    hook: Literal["order-select"]
    context: OrderSelectContext


class OrderSignRequest(_HookRequest):
    hook: Literal["order-sign"]
    context: OrderSignContext


#: the request model per hook
HOOK_REQUESTS: dict[str, type[_HookRequest]] = {
    "patient-view": PatientViewRequest,
    "order-select": OrderSelectRequest,
    "order-sign": OrderSignRequest,
}


# -- feedback -------------------------------------------------------------------------------------------

class AcceptedSuggestion(_Request):
    id: Ident


class OverrideReason(_Request):
    reason: Coding | None = None
    userComment: Comment | None = None

    @_model_validator(mode="after")
    def _coded(self) -> OverrideReason:
        if self.reason is not None and not self.reason.code:
            raise PydanticCustomError("code_required", "is required (a Coding with a code)",
                                      {"field": "reason.code"})
        return self


class FeedbackItem(_Request):
    card: Uuid
    outcome: Literal["accepted", "overridden"]
    outcomeTimestamp: DateTime
    acceptedSuggestions: Annotated[list[AcceptedSuggestion], Field(max_length=MAX_SUGGESTIONS)] | None = None
    overrideReason: OverrideReason | None = None

    @_model_validator(mode="after")
    def _consistent(self) -> FeedbackItem:
        if self.outcome == "accepted" and not self.acceptedSuggestions:
            raise PydanticCustomError("accepted", "must list {'id': suggestion uuid} when accepted",
                                      {"field": "acceptedSuggestions"})
        if self.overrideReason is not None and self.outcome != "overridden":
            raise PydanticCustomError("override", "is only for an overridden card",
                                      {"field": "overrideReason"})
        return self


class Feedback(_Request):
    feedback: Annotated[list[FeedbackItem], Field(min_length=1, max_length=MAX_FEEDBACK_ITEMS)]


class FeedbackAccepted(_Response):
    accepted: Annotated[int, Field(ge=1)]


# -- the response ---------------------------------------------------------------------------------------

class Action(_Response):
    type: Literal["create", "update", "delete"]
    description: str | None = None
    resource: Resource | None = None
    resourceId: str | None = None


class Suggestion(_Response):
    label: str
    uuid: ResponseUuid | None = None
    isRecommended: bool | None = None
    actions: list[Action] | None = None


class Link(_Response):
    label: str
    url: str
    type: Literal["absolute", "smart"]
    appContext: str | None = None
    autolaunchable: bool | None = None


class Source(_Response):
    label: str
    url: str | None = None
    icon: str | None = None
    topic: Coding | None = None


class Card(_Response):
    uuid: ResponseUuid | None = None
    summary: Annotated[str, StringConstraints(min_length=1, max_length=139)]
    detail: str | None = None
    indicator: Literal["info", "warning", "critical"]
    source: Source
    suggestions: list[Suggestion] | None = None
    selectionBehavior: Literal["at-most-one", "any"] | None = None
    overrideReasons: list[Coding] | None = None
    links: list[Link] | None = None
    extension: dict[str, Any] | None = None


class CardsResponse(_Response):
    cards: list[Card]
    systemActions: list[Action] | None = None


class Service(_Response):
    id: str
    hook: str
    title: str | None = None
    description: str
    prefetch: dict[str, str] | None = None
    usageRequirements: str | None = None


class Discovery(_Response):
    services: list[Service]


# -- errors ---------------------------------------------------------------------------------------------

class Issue(_Response):
    severity: Literal["fatal", "error", "warning", "information"]
    code: str
    diagnostics: str | None = None
    expression: list[str] | None = None


class OperationOutcome(_Response):
    resourceType: Literal["OperationOutcome"]
    issue: Annotated[list[Issue], Field(min_length=1)]


#: every model the OpenAPI document describes, and the mode it is read in
DOCUMENTED: tuple[tuple[type[BaseModel], Literal["validation", "serialization"]], ...] = (
    (PatientViewRequest, "validation"),
    (OrderSelectRequest, "validation"),
    (OrderSignRequest, "validation"),
    (Resource, "validation"),
    (Feedback, "validation"),
    (FeedbackAccepted, "serialization"),
    (CardsResponse, "serialization"),
    (Discovery, "serialization"),
    (OperationOutcome, "serialization"),
)
