"""A hook call from envelope to response, with its I/O injected: the spine every HTTP call runs through.

    envelope -> prefetch (client data or fetched) -> FHIR parsing -> facts -> rules -> findings -> cards
             -> audit record

No Flask here: the HTTP layer hands in the parsed body and gets back the response body. The request is
validated and its prefetch gathered, then frozen into one ``Case`` (cds/decide/case.py) that evaluation
reads; what the service talks to (FHIR client, ledger, explanation links) is given when it is built.

``HookService.call`` is the one entry: the web endpoint (cds/web/api.py), ``cds evaluate``
(cds/toolkit/offline.py), the benchmarks and a batch run all call it, each with the ledger it wants
(``cds.ledger.store.AuditStore``, ``cds.ledger.memory.MemoryLedger`` or none).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cds.call.budget import Budget
from cds.call.prefetch import Fetch, gather
from cds.call.suppression import Suppression
from cds.deadline import call_limit
from cds.decide.case import Case, build_case
from cds.decide.derived import DerivedCache, derived_key, derived_size
from cds.decide.evaluate import Evaluation, Evaluator
from cds.errors import CdsError, UnknownService
from cds.fhir import parse as fhir_parse
from cds.fhir.gathered import Gathered
from cds.hooks.envelope import HookRequest, parse_hook_request
from cds.hooks.services import OPTIONAL_KEYS, hook_of, prefetch_templates, rule_keys
from cds.ledger.port import CallRecord, Ledger
from cds.settings import default as setting_default

log = logging.getLogger("cds.call.service")


#: a card's "Why this card?" address from the service's public base URL and the card's uuid
ExplainLink = Callable[[str, str], str]


@dataclass(frozen=True)
class HookService:
    """The hook service with everything it talks to given when it is built: the evaluator, the FHIR client
    (``fetch``), the ledger and the explanation-link builder. Nothing is set on it afterwards."""

    evaluator: Evaluator
    source_label: str = setting_default("SOURCE_LABEL")
    max_entries: int | None = None
    fetch: Fetch | None = None
    #: the ledger (``cds.ledger.port.Ledger``): one ``CallRecord`` per call, answered or refused, and the
    #: started/finished bracket around each call (None: nothing is recorded)
    audit: Ledger | None = None
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
        """The response body (``{"cards": [...]}``) for one hook call; its record goes to the ledger before it
        returns. A refused call raises its ``CdsError`` (its status and OperationOutcome), recorded too.

        ``service_id``: the CDS service called; ``body``: the parsed JSON request; ``now``: the time the call
        is evaluated at (default: the clock); ``client_iss``: the verified caller, kept in the record;
        ``base_url``: the public base of the "Why this card?" links (none without it); ``record_id``: the
        key its record is stored under (default: a new uuid). ``claim``: opaque here, the caller's unit of
        work for its token id, handed to the ledger with the record (``Ledger.record_call``); a reuse found
        there raises ``TokenReplayed`` and that, not the cards, is the call's answer. Nothing else is needed:
        no web, no database, no token (a batch run calls this once per patient)."""
        started = time.perf_counter()
        when = now or dt.datetime.now(dt.UTC)
        record_id = record_id or str(uuid.uuid4())
        ledger = self.audit
        marker = ledger.call_started(service_id, when, record_id) if ledger is not None else None
        answer = _Answer(hook_of(service_id))

        def record() -> None:  # a reuse of the call's token found by the ledger raises: the answer is that
            if ledger is not None:
                record = answer.record(service_id, client_iss, when, started, record_id)
                ledger.record_call(record, claim=claim)

        try:
            try:
                self._answer(service_id, body, when, base_url, answer)
            except CdsError as exc:
                answer.refused(exc.status, "412" if exc.status == 412 else str(exc.status), exc.message)
                record()
                raise
            except Exception:
                answer.refused(500, "500", "internal error; the request was not processed")
                record()
                raise
            record()  # outside the handlers above: a reuse found with the record is not recorded again
        finally:
            if ledger is not None:
                ledger.call_finished(marker)
        assert answer.evaluation is not None
        return {"cards": answer.evaluation.cards}

    def _answer(self, service_id: str, body: Any, when: dt.datetime, base_url: str | None,
                answer: _Answer) -> None:
        """Fill ``answer`` as the call goes (what the record needs is there even when a step raises)."""
        if answer.hook is None:
            raise UnknownService(f"no CDS service with id {service_id!r}", field="service")
        budget = Budget(self.budget_seconds, self.max_resources, max_requests=self.max_fhir_requests)
        request = answer.request = parse_hook_request(body, answer.hook)
        gathered = answer.gathered
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
        answer.evaluation = self.evaluator.evaluate(case, source_label=self.source_label, derived=derived)
        if self.suppression is not None:  # before the links: a quiet card is recorded as computed
            answer.suppression = self.suppression.apply(request, gathered, answer.evaluation, when)
        self._add_explain_links(answer.evaluation, base_url)

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


@dataclass
class _Answer:
    """What one call has found so far: enough for its record whatever step it stopped at."""

    hook: str | None
    request: HookRequest | None = None
    gathered: Gathered = field(default_factory=Gathered)
    evaluation: Evaluation | None = None
    suppression: dict[str, Any] | None = None  # the quiet cards and why (``cds.call.suppression``)
    status: int = 200
    outcome: str = "ok"
    error: str | None = None

    def refused(self, status: int, outcome: str, error: str) -> None:
        self.status, self.outcome, self.error = status, outcome, error

    def record(self, service_id: str, client_iss: str | None, when: dt.datetime, started: float,
               record_id: str) -> CallRecord:
        request = self.request
        return CallRecord(
            service=service_id,
            hook=self.hook,
            hook_instance=request.hook_instance if request else None,
            patient_id=request.patient_id if request else None,
            client_iss=client_iss,
            started=when,
            latency_ms=(time.perf_counter() - started) * 1000,
            outcome=self.outcome,
            status=self.status,
            evaluation=self.evaluation,
            provenance=dict(self.gathered.provenance),
            error=self.error,
            context=dict(request.context) if request else {},
            record_id=record_id,
            suppression=self.suppression,
        )
