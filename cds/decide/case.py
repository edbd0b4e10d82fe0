"""One hook call as evaluation sees it: built once from the validated request and the gathered prefetch, then
read, never changed, by every stage after it (facts, rules, cards). Pure code.

    HookRequest + Gathered + evaluation time --build_case--> Case --Evaluator.evaluate--> Evaluation

The CLI builds a ``Case`` directly from a fixture's already parsed resources.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from cds.fhir import parse as fhir_parse
from cds.fhir.gathered import Gathered
from cds.fhir.references import ReferenceIndex
from cds.hooks.envelope import HookRequest


def _empty() -> Mapping[str, Any]:
    return MappingProxyType({})


@dataclass(frozen=True)
class Case:
    """Everything one evaluation reads. Mappings are read-only views; nothing downstream mutates them."""

    hook: str
    patient_id: str | None
    now: dt.datetime
    #: the hook context as the client sent it, with ``patientId`` (``{context.x}`` placeholders read it)
    context: Mapping[str, Any] = field(default_factory=_empty)
    #: the parsed FHIR resources of the patient's record (prefetch, client-sent or fetched)
    resources: tuple[Any, ...] = ()
    #: the parsed draft orders the rules read, and each one's JSON by ``Type/id`` (for update/delete actions)
    drafts: tuple[Any, ...] = ()
    drafts_by_ref: Mapping[str, dict[str, Any]] = field(default_factory=_empty)
    #: ``context.selections`` (order-select): references of the orders the user just selected
    selections: frozenset[str] = frozenset()
    service_id: str | None = None
    hook_instance: str | None = None
    #: per prefetch key: client | fetched | empty | failed
    provenance: Mapping[str, str] = field(default_factory=_empty)
    #: the fullUrls of the call's Bundles, to resolve ``urn:uuid`` references (``cds.fhir.references``)
    references: ReferenceIndex | None = None


def build_case(service_id: str, request: HookRequest, gathered: Gathered, now: dt.datetime, *,
               relevant: Callable[[Any], bool], max_entries: int | None = None,
               cache: fhir_parse.ModelCache | None = None, parse: bool = True) -> Case:
    """Parse what the rules read (prefetch resources, draft orders) and freeze the call into a ``Case``.

    Raises ``InvalidFhir`` naming the resource when a used resource does not validate. With ``parse``
    false (the call's facts are already derived, ``cds.decide.derived``) nothing is validated or indexed
    again: the case carries the context and the draft orders' JSON, which the cards read."""
    resources: list[Any] = []
    for key, data in gathered.data.items() if parse else ():
        resources += fhir_parse.parse_all(data, where=f"prefetch.{key}", max_entries=max_entries,
                                          relevant=relevant, cache=cache)
    drafts: list[Any] = []
    drafts_by_ref: dict[str, dict[str, Any]] = {}
    for where, raw in fhir_parse.used_resources(request.draft_orders, where="context.draftOrders",
                                                max_entries=max_entries):
        if isinstance(raw, dict) and relevant(raw):
            if parse:
                drafts.append(fhir_parse.parse_resource(raw, where=where, cache=cache))
            drafts_by_ref[f"{raw['resourceType']}/{raw.get('id')}"] = raw
    return Case(
        hook=request.hook,
        patient_id=request.patient_id,
        now=now,
        context=MappingProxyType({**request.context, "patientId": request.patient_id}),
        resources=tuple(resources),
        drafts=tuple(drafts),
        drafts_by_ref=MappingProxyType(drafts_by_ref),
        selections=frozenset(request.selections),
        service_id=service_id,
        hook_instance=request.hook_instance,
        provenance=MappingProxyType(dict(gathered.provenance)),
        references=ReferenceIndex.of([*gathered.data.values(), request.draft_orders]) if parse else None,
    )
