"""Prefetch: what the client sent, per key, and what must be fetched from its FHIR server.

Per key of the discovery document's prefetch templates:

* absent                      the client did not try          -> fetch it
* ``null``                    the client found nothing        -> no data, do not fetch
* OperationOutcome            the client's query failed       -> fetch it
* Bundle with a ``next`` link the client sent the first page  -> fetch the remaining pages
* Bundle/resource             the client's data               -> use it

Fetching is delegated to a ``Fetch`` (``cds.call.fhir_client.FhirClient``). When a key cannot be obtained (no
``fhirServer``, the server not allowed, down, refusing, answering garbage) the call fails with
``DataUnavailable`` (HTTP 412) naming every such key and why. The rules need every key, so partial data is
never evaluated: complete data or an honest 412. An ``optional`` key (one the rules do not read, that can
only ever silence a card: ``pendingOrders``) is fetched last, and when it cannot be obtained its provenance
is ``failed`` and the call goes on without it. When the call's budget runs out while fetching (see
``cds.call.budget``), fetching stops there: the key being fetched and those not fetched yet are
``failed`` and the call's ``BudgetExceeded`` (503) is raised. A Patient resource (sent or fetched) must be
the patient of ``context.patientId``; another patient's is refused with a 412 naming the key, never
evaluated.

Provenance per key goes to the audit record, and is complete before any error is raised:
``client`` (sent by the client and used as sent), ``fetched`` (the service asked the FHIR server, including
the remaining pages of a paged Bundle the client sent), ``empty`` (no data: ``null`` from the client or a read
answered 404), ``failed`` (could not be obtained). The network is behind ``Fetch``; what is gathered
(``Gathered``) is plain data of the FHIR stage (``cds/fhir/gathered.py``), read by the decision core.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any, Protocol

from cds.errors import BudgetExceeded, DataUnavailable, FhirServerError, FhirServerNotAllowed
from cds.fhir.gathered import Gathered, is_operation_outcome, next_link
from cds.hooks import tokens
from cds.hooks.envelope import HookRequest


class Fetch(Protocol):
    def __call__(self, request: HookRequest, key: str, query: str) -> Any:
        """Run ``query`` (a rendered template) against ``request.fhir_server``: every page of a search as one
        searchset Bundle, the resource of a read, or ``None`` when a read finds nothing. Raises
        ``DataUnavailable`` (usually ``FhirServerError``) naming the key when it cannot."""

    def complete(self, request: HookRequest, key: str, bundle: dict[str, Any]) -> dict[str, Any]:
        """Return a client-sent searchset Bundle with the pages behind its ``next`` link added."""


def render_template(template: str, request: HookRequest) -> str:
    """Fill the template's tokens from the request (``cds.hooks.tokens``), each value URL-encoded.

    Raises ``DataUnavailable`` naming the token when it cannot be filled (no such context field, a field that
    is not a primitive, or a user token that does not match the type of ``context.userId``).
    """
    return tokens.fill(template, request.context, patient_id=request.patient_id)


def gather(request: HookRequest, templates: Mapping[str, str], fetch: Fetch | None,
           out: Gathered | None = None, *, optional: Collection[str] = ()) -> Gathered:
    """Every key's data, from the client or fetched; ``DataUnavailable`` (412) when any cannot be obtained.

    Fills ``out`` when given, so that a caller still holds the provenance of every key when this raises.
    """
    out = Gathered() if out is None else out
    sent = request.prefetch or {}
    wanted: dict[str, str] = {}  # key -> why the service must ask the FHIR server
    for key in templates:
        if key not in sent:
            wanted[key] = "not sent by the client"
        elif sent[key] is None:
            out.data[key], out.provenance[key] = None, "empty"
        elif is_operation_outcome(sent[key]):
            wanted[key] = "the client's query failed (it sent an OperationOutcome)"
        elif next_link(sent[key]):
            wanted[key] = "the client sent one page of a paged Bundle"
        else:
            out.data[key], out.provenance[key] = sent[key], "client"
    _check_patients(request, out)  # before any fetch: another patient's data is not completed either
    if wanted:  # the optional keys last: their failure never stops a key the rules need
        wanted = dict(sorted(wanted.items(), key=lambda item: item[0] in optional))
        _fetch_all(request, templates, fetch, wanted, sent, out, optional)
        _check_patients(request, out)
    out.data = {key: out.data[key] for key in templates if key in out.data}  # template order, either way
    return out


def _patients(data: Any) -> list[dict[str, Any]]:
    """The Patient resources in a prefetch value: itself, or the entries of a Bundle."""
    if not isinstance(data, dict):
        return []
    if data.get("resourceType") == "Patient":
        return [data]
    if data.get("resourceType") == "Bundle" and isinstance(data.get("entry"), list):
        found = [e.get("resource") for e in data["entry"] if isinstance(e, dict)]
        return [r for r in found if isinstance(r, dict) and r.get("resourceType") == "Patient"]
    return []


def _check_patients(request: HookRequest, out: Gathered) -> None:
    """A Patient under any key (or in a Bundle under it) must be the context's patient (no id given, or
    another id: 412)."""
    for key, data in out.data.items():
        if any(patient.get("id") != request.patient_id for patient in _patients(data)):
            out.provenance[key] = "failed"
            raise DataUnavailable(f"prefetch.{key} holds a Patient resource that is not the patient of "
                                  "context.patientId; it was not used", field=f"prefetch.{key}")


def _fetch_all(request: HookRequest, templates: Mapping[str, str], fetch: Fetch | None,
               wanted: dict[str, str], sent: Mapping[str, Any], out: Gathered,
               optional: Collection[str] = ()) -> None:
    if fetch is None or not request.fhir_server:
        why = "no fhirServer in the request" if fetch is not None else "this service has no FHIR client"
        for key in wanted:
            out.provenance[key] = "failed"
        wanted = {key: reason for key, reason in wanted.items() if key not in optional}
        if not wanted:
            return
        raise DataUnavailable(
            f"prefetch data could not be obtained for {', '.join(wanted)}: {why} to fetch it from",
            field=_field(list(wanted)),
            details=[f"prefetch.{key}: {reason}; {why}" for key, reason in wanted.items()])
    failures: dict[str, str] = {}
    kind: type[DataUnavailable] = DataUnavailable
    stopped: DataUnavailable | None = None
    for key in wanted:
        if stopped is not None:
            out.provenance[key] = "failed"
            if key in optional:
                continue
            failures[key] = f"not fetched, because the FHIR server already failed: {stopped.message}"
            continue
        try:
            if next_link(sent.get(key)):
                data = fetch.complete(request, key, sent[key])
            else:
                data = fetch(request, key, render_template(templates[key], request))
        except BudgetExceeded:
            for left in list(wanted)[list(wanted).index(key):]:
                out.provenance[left] = "failed"
            raise
        except DataUnavailable as exc:
            out.provenance[key] = "failed"
            if key in optional:
                continue
            failures[key] = exc.message
            kind = type(exc) if kind is DataUnavailable else kind
            server_wide = isinstance(exc, FhirServerError) and exc.server_wide
            if isinstance(exc, FhirServerNotAllowed) or server_wide:
                stopped = exc
            continue
        out.data[key] = data
        out.provenance[key] = "empty" if data is None else "fetched"
    if failures:
        if isinstance(stopped, FhirServerNotAllowed):
            kind = FhirServerNotAllowed  # a refused server is the answer, whatever else failed first
        first = next(iter(failures.values()))
        raise kind(f"prefetch data could not be obtained for {', '.join(failures)}: {first}",
                   field=_field(list(failures)),
                   details=[f"prefetch.{key}: {reason}" for key, reason in failures.items()])


def _field(keys: list[str]) -> str:
    return f"prefetch.{keys[0]}" if len(keys) == 1 else "prefetch"
