"""A hook call from envelope to response, with its I/O injected: the spine every HTTP call runs through.

    envelope -> prefetch (client data or fetched) -> FHIR parsing -> facts -> rules -> findings -> cards
             -> audit record

No Flask here: the HTTP layer hands in the parsed body and gets back the response body.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from cds.decide.evaluate import Evaluation, Evaluator
from cds.errors import CdsError, UnknownService
from cds.fhir import parse as fhir_parse
from cds.fhir.prefetch import Fetch, Gathered, gather
from cds.hooks.envelope import HookRequest, parse_hook_request
from cds.hooks.services import hook_of, prefetch_templates

log = logging.getLogger("cds.decide.service")


class AuditSink(Protocol):
    """Where each call's record goes. A sink may also offer ``call_started(service, when) -> marker`` and
    ``call_finished(marker)``: the service calls them around each call, so that a call whose process dies
    before it answers is still counted."""

    def record_call(self, call: CallRecord) -> None: ...


@dataclass
class CallRecord:
    """Everything the audit trail keeps about one hook call (no raw patient id, no token)."""

    service: str
    hook: str | None
    hook_instance: str | None
    patient_id: str | None  # hashed by the audit store before it is written
    client_iss: str | None
    started: dt.datetime
    latency_ms: float
    outcome: str  # ok | 4xx code | 412 | 5xx code
    status: int
    evaluation: Evaluation | None = None
    provenance: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    context: dict[str, Any] = field(default_factory=dict)  # hook context (the audit keeps a few fields)


@dataclass
class HookService:
    evaluator: Evaluator
    source_label: str = "Bone Health CDS"
    max_entries: int | None = None
    fetch: Fetch | None = None
    audit: AuditSink | None = None
    model_cache: fhir_parse.ModelCache | None = None
    #: when set, each card gets a "Why this card?" link to ``explain_url.format(base=..., uuid=...)``
    explain_url: str | None = None

    def call(self, service_id: str, body: Any, *, now: dt.datetime | None = None,
             client_iss: str | None = None, base_url: str | None = None) -> dict[str, Any]:
        started = time.perf_counter()
        when = now or dt.datetime.now(dt.UTC)
        hook = hook_of(service_id)
        request: HookRequest | None = None
        gathered = Gathered()
        evaluation: Evaluation | None = None
        started_hook = getattr(self.audit, "call_started", None)
        marker = started_hook(service_id, when) if started_hook else None
        try:
            if hook is None:
                raise UnknownService(f"no CDS service with id {service_id!r}", field="service")
            request = parse_hook_request(body, hook)
            # gather fills ``gathered`` as it goes, so the audit record has the provenance even on a 412
            gather(request, prefetch_templates(self.evaluator.pack), self.fetch, gathered)
            evaluation = self.evaluate(request, gathered, when)
            self._add_explain_links(evaluation, base_url)
            response = {"cards": evaluation.cards}
            self._record(
                service_id, hook, request, client_iss, when, started, 200, "ok", evaluation, gathered
            )
            return response
        except CdsError as exc:
            outcome = "412" if exc.status == 412 else str(exc.status)
            self._record(
                service_id,
                hook,
                request,
                client_iss,
                when,
                started,
                exc.status,
                outcome,
                evaluation,
                gathered,
                error=exc.message,
            )
            raise
        except Exception:
            self._record(service_id, hook, request, client_iss, when, started, 500, "500", evaluation,
                         gathered, error="internal error; the request was not processed")
            raise
        finally:
            if started_hook:
                self.audit.call_finished(marker)

    def evaluate(self, request: HookRequest, gathered: Gathered, now: dt.datetime) -> Evaluation:
        relevant = self.evaluator.relevant
        resources = []
        for key, data in gathered.data.items():
            resources += fhir_parse.parse_all(data, where=f"prefetch.{key}", max_entries=self.max_entries,
                                              relevant=relevant, cache=self.model_cache)
        drafts_json = {}
        draft_models = []
        for where, raw in fhir_parse.iter_resources(request.draft_orders, where="context.draftOrders",
                                                    max_entries=self.max_entries):
            if isinstance(raw, dict) and fhir_parse.is_used_type(raw.get("resourceType")) and relevant(raw):
                model = fhir_parse.parse_resource(raw, where=where, cache=self.model_cache)
                draft_models.append(model)
                drafts_json[f"{raw['resourceType']}/{raw.get('id')}"] = raw
        return self.evaluator.evaluate(
            resources, draft_models, patient_id=request.patient_id, now=now,
            context={**request.context, "patientId": request.patient_id}, drafts_by_ref=drafts_json,
            selections=request.selections, source_label=self.source_label)

    def _add_explain_links(self, evaluation: Evaluation, base_url: str | None) -> None:
        if not self.explain_url or not base_url:
            return
        for card in evaluation.cards:
            url = self.explain_url.format(base=base_url.rstrip("/"), uuid=card["uuid"])
            card.setdefault("links", []).append({"label": "Why this card?", "url": url, "type": "absolute"})

    def _record(self, service_id: str, hook: str | None, request: HookRequest | None, client_iss: str | None,
                when: dt.datetime, started: float, status: int, outcome: str, evaluation: Evaluation | None,
                gathered: Gathered, error: str | None = None) -> None:
        if self.audit is None:
            return
        record = CallRecord(
            service=service_id,
            hook=hook,
            hook_instance=request.hook_instance if request else None,
            patient_id=request.patient_id if request else None,
            client_iss=client_iss,
            started=when,
            latency_ms=(time.perf_counter() - started) * 1000,
            outcome=outcome,
            status=status,
            evaluation=evaluation,
            provenance=dict(gathered.provenance),
            error=error,
            context=dict(request.context) if request else {},
        )
        self.audit.record_call(record)
