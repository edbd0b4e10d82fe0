"""A hook call from envelope to response, with its I/O injected: the spine every HTTP call runs through.

    envelope -> prefetch (client data or fetched) -> FHIR parsing -> facts -> rules -> findings -> cards
             -> audit record

No Flask here: the HTTP layer hands in the parsed body and gets back the response body. The request is
validated and its prefetch gathered, then frozen into one ``Case`` (cds/decide/case.py) that evaluation
reads; what the service talks to (FHIR client, audit sink, explanation links) is given when it is built.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cds.call.budget import Budget
from cds.call.suppression import Suppression
from cds.deadline import call_limit
from cds.decide.case import Case, build_case
from cds.decide.derived import DerivedCache, derived_key, derived_size
from cds.decide.evaluate import Evaluation, Evaluator
from cds.errors import CdsError, UnknownService
from cds.fhir import parse as fhir_parse
from cds.fhir.prefetch import Fetch, Gathered, gather
from cds.hooks.envelope import HookRequest, parse_hook_request
from cds.hooks.services import OPTIONAL_KEYS, hook_of, prefetch_templates, rule_keys
from cds.ledger.port import AuditSink, CallRecord
from cds.settings import default as setting_default

log = logging.getLogger("cds.call.service")


#: a card's "Why this card?" address from the service's public base URL and the card's uuid
ExplainLink = Callable[[str, str], str]


@dataclass(frozen=True)
class HookService:
    """The hook service with everything it talks to given when it is built: the evaluator, the FHIR client
    (``fetch``), the audit sink and the explanation-link builder. Nothing is set on it afterwards."""

    evaluator: Evaluator
    source_label: str = setting_default("SOURCE_LABEL")
    max_entries: int | None = None
    fetch: Fetch | None = None
    #: receives one ``CallRecord`` per call, answered or refused (None: nothing is recorded)
    audit: AuditSink | None = None
    model_cache: fhir_parse.ModelCache | None = None
    #: facts and firings by the content they are made from (``cds.decide.derived``); None: not kept
    derived_cache: DerivedCache | None = None
    #: when set, each card gets a "Why this card?" link to ``explain_link(base_url, card_uuid)``
    explain_link: ExplainLink | None = None
    #: the budget of one call (``cds.call.budget``): seconds, and resources validated
    budget_seconds: float | None = None
    max_resources: int | None = None
    #: the most GETs one call may send to the FHIR server (pages and retries included)
    max_fhir_requests: int | None = None
    #: keeps quiet the cards the clinician already dealt with (``cds.call.suppression``); None: all show
    suppression: Suppression | None = None

    def call(self, service_id: str, body: Any, *, now: dt.datetime | None = None,
             client_iss: str | None = None, base_url: str | None = None, claim: Any = None,
             record_id: str | None = None) -> dict[str, Any]:
        """The response body for one call; its record goes to the audit sink before it returns. ``claim``:
        the call's token id, stored with the record (a replay found there raises ``TokenReplayed``, and the
        call's answer is that, not its cards). ``record_id``: the key its audit record is stored under."""
        started = time.perf_counter()
        when = now or dt.datetime.now(dt.UTC)
        hook = hook_of(service_id)
        request: HookRequest | None = None
        gathered = Gathered()
        evaluation: Evaluation | None = None
        suppressed: dict[str, Any] | None = None
        budget = Budget(self.budget_seconds, self.max_resources, max_requests=self.max_fhir_requests)
        record_id = record_id or str(uuid.uuid4())
        started_hook = getattr(self.audit, "call_started", None)
        marker = started_hook(service_id, when, record_id) if started_hook else None
        try:
            if hook is None:
                raise UnknownService(f"no CDS service with id {service_id!r}", field="service")
            request = parse_hook_request(body, hook)
            # gather fills ``gathered`` as it goes, so the audit record has the provenance even on a 412
            with call_limit(budget):  # every GET to the FHIR server ends by the call's deadline
                gather(request, prefetch_templates(self.evaluator.pack), self.fetch, gathered,
                       optional=OPTIONAL_KEYS)
            budget.check("fetching prefetch data")
            read = Gathered(rule_keys(gathered.data), gathered.provenance)  # what the rules read
            key = self._derived_key(service_id, request, read, when)
            cache = self.derived_cache
            derived = cache.get(key) if key is not None and cache is not None else None
            case = self.case_for(service_id, request, read, when, budget=budget, parse=derived is None)
            budget.check("validating FHIR resources")
            if derived is None:
                derived = self.evaluator.derive(case)
                if key is not None and cache is not None:
                    cache.put(key, derived, derived_size(derived))
                budget.check("evaluating the rules")
            evaluation = self.evaluator.evaluate(case, source_label=self.source_label, derived=derived)
            if self.suppression is not None:  # before the links: a quiet card is recorded as computed
                suppressed = self.suppression.apply(request, gathered, evaluation, when)
            self._add_explain_links(evaluation, base_url)
        except CdsError as exc:
            outcome = "412" if exc.status == 412 else str(exc.status)
            self._record(service_id, hook, request, gathered, client_iss, when, started, exc.status, outcome,
                         evaluation, error=exc.message, claim=claim, record_id=record_id)
            raise
        except Exception:
            self._record(service_id, hook, request, gathered, client_iss, when, started, 500, "500",
                         evaluation, error="internal error; the request was not processed", claim=claim,
                         record_id=record_id)
            raise
        else:  # outside the handlers above: a replay found with the record is not recorded again
            self._record(service_id, hook, request, gathered, client_iss, when, started, 200, "ok",
                         evaluation, claim=claim, record_id=record_id, suppression=suppressed)
            return {"cards": evaluation.cards}
        finally:
            if started_hook:
                getattr(self.audit, "call_finished")(marker)  # noqa: B009 - only sinks with call_started have it

    def case_for(self, service_id: str, request: HookRequest, gathered: Gathered, now: dt.datetime,
                 budget: Budget | None = None, parse: bool = True) -> Case:
        """The call's ``Case``: the gathered prefetch and the draft orders parsed, once (each resource
        checked against the call's ``budget`` when one is given); not parsed when ``parse`` is false."""
        relevant = self.evaluator.relevant if budget is None or not parse \
            else budget.relevant(self.evaluator.relevant)
        return build_case(service_id, request, gathered, now, relevant=relevant,
                          max_entries=self.max_entries, cache=self.model_cache, parse=parse)

    def _derived_key(self, service_id: str, request: HookRequest, gathered: Gathered,
                     now: dt.datetime) -> bytes | None:
        if self.derived_cache is None or self.derived_cache.max_entries <= 0:
            return None
        return derived_key(pack_hash=self.evaluator.pack.content_hash, service_id=service_id, now=now,
                           patient_id=request.patient_id, selections=frozenset(request.selections),
                           data=gathered.data, provenance=gathered.provenance,
                           draft_orders=request.draft_orders)

    def _add_explain_links(self, evaluation: Evaluation, base_url: str | None) -> None:
        if self.explain_link is None or not base_url:
            return
        for card in evaluation.cards:
            url = self.explain_link(base_url.rstrip("/"), card["uuid"])
            card.setdefault("links", []).append({"label": "Why this card?", "url": url, "type": "absolute"})

    def _record(self, service_id: str, hook: str | None, request: HookRequest | None, gathered: Gathered,
                client_iss: str | None, when: dt.datetime, started: float, status: int, outcome: str,
                evaluation: Evaluation | None, error: str | None = None, claim: Any = None,
                record_id: str | None = None, suppression: dict[str, Any] | None = None) -> None:
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
            claim=claim,
            record_id=record_id,
            suppression=suppression,
        )
        self.audit.record_call(record)
