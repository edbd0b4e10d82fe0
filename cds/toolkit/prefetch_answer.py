"""Answering a service's prefetch templates from a patient's record, as an EHR would. Pure code.

The one way the toolkit builds a ``prefetch`` (``cds.toolkit.request.build_hook_request``, behind the golden
fixture tests, ``cds evaluate``, ``cds request`` and ``cds replay``). Each template is filled with the
project's one token grammar (``cds.hooks.tokens``, which the service renders its own templates with); a key
whose template cannot be filled is left out, as the specification asks of a client. The filled query is
answered from the record:

* a read ``Type/id`` -> that resource, or ``null`` when the record has none;
* a search ``Type?param=value&...`` -> a ``searchset`` Bundle of the record's resources of that type that
  match every parameter this module understands: ``patient``/``subject`` (a reference to the patient),
  ``code`` (token list ``system|code,code``), ``status``, ``intent`` and ``category`` (token lists), and
  ``_id``; ``_include=MedicationRequest:medication`` adds the Medications the matches refer to. Other
  parameters (``date``, ``_sort``, ``_count``...) do not filter: every resource of the type is returned,
  which a service must tolerate anyway.

A resource filed under another patient (its ``subject``/``patient`` names someone else) is never in an
answer, as with a real FHIR server, unless ``misfiled=True``: then the record is taken as the EHR holds it,
misfiled results included (the fixtures that test the service's defence against them need that).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl, unquote

from cds.errors import DataUnavailable
from cds.fhir.references import MINE, ReferenceIndex, parse, patient_verdict, subject_reference
from cds.hooks.tokens import fill

__all__ = ["ReadPlan", "answer", "answer_all", "fill", "filed_elsewhere", "matches", "searchset"]


def _tokens(concept: Any) -> set[tuple[str, str]]:
    concepts = concept if isinstance(concept, list) else [concept]
    out = set()
    for c in concepts:
        if isinstance(c, dict):
            for coding in c.get("coding") or []:
                if isinstance(coding, dict) and coding.get("code") is not None:
                    out.add((str(coding.get("system") or ""), str(coding["code"])))
    return out


@functools.lru_cache(maxsize=256)
def _wanted(wanted: str) -> tuple[frozenset[tuple[str, str]], frozenset[str]]:
    """A token list ``system|code,code,|code`` as (the system-and-code pairs, the codes of any system)."""
    pairs: set[tuple[str, str]] = set()
    codes: set[str] = set()
    for item in wanted.split(","):
        system, _, code = item.rpartition("|")
        if system:
            pairs.add((system, code))
        else:
            codes.add(code)
    return frozenset(pairs), frozenset(codes)


def _refers_to(resource: dict[str, Any], patient_id: str, index: ReferenceIndex | None = None) -> bool:
    """Whether the resource's subject is the patient (no subject: the record is the patient's)."""
    return patient_verdict(subject_reference(resource), patient_id, index) == MINE


def filed_elsewhere(record: Iterable[dict[str, Any]], patient_id: str) -> list[dict[str, Any]]:
    """The record's resources filed under another patient: no search for ``patient_id`` returns them."""
    return [r for r in record if r.get("resourceType") != "Patient" and not _refers_to(r, patient_id)]


class _Facets:
    """What the search parameters read of a record's resources, each worked out once per resource (a record
    is searched by every template; without this, each search parsed each resource's subject and codings
    again: the most of building a request)."""

    def __init__(self, record: list[dict[str, Any]]) -> None:
        self.record = record
        self.by_type: dict[Any, list[dict[str, Any]]] = {}
        for r in record:
            self.by_type.setdefault(r.get("resourceType"), []).append(r)
        self._tokens: dict[tuple[int, str], set[tuple[str, str]]] = {}
        self._mine: dict[tuple[int, str], bool] = {}
        self._by_code: dict[tuple[Any, str], dict[str, list[int]]] = {}

    def candidates(self, rtype: Any, params: list[tuple[str, str]]) -> list[dict[str, Any]]:
        """The resources of ``rtype`` that can match ``params``, in record order: those holding one of the
        codes of each ``code``/``category`` parameter (by an index of the type's codes), else all of them.
        ``matches`` still decides each one."""
        of_type = self.by_type.get(rtype, [])
        kept: set[int] | None = None  # positions in of_type; None: all
        for name, value in params:
            element = name.split(":", 1)[0]
            if element not in ("code", "category") or not of_type:
                continue
            index = self._code_index(rtype, element)
            pairs, codes = _wanted(value)
            hits: set[int] = set()
            for code in codes | {c for _, c in pairs}:
                hits.update(index.get(code, ()))
            kept = hits if kept is None else kept & hits
        return of_type if kept is None else [of_type[n] for n in sorted(kept)]

    def _code_index(self, rtype: Any, element: str) -> dict[str, list[int]]:
        key = (rtype, element)
        index = self._by_code.get(key)
        if index is None:
            index = self._by_code[key] = {}
            for n, resource in enumerate(self.by_type.get(rtype, ())):
                for _, code in self.tokens(resource, element):
                    index.setdefault(code, []).append(n)
        return index

    def tokens(self, resource: dict[str, Any], element: str) -> set[tuple[str, str]]:
        key = (id(resource), element)
        found = self._tokens.get(key)
        if found is None:
            if element == "code":
                concept = resource.get("code") or resource.get("medicationCodeableConcept")
            else:
                concept = resource.get(element)
            found = self._tokens[key] = _tokens(concept)
        return found

    def mine(self, resource: dict[str, Any], patient_id: str) -> bool:
        key = (id(resource), patient_id)
        found = self._mine.get(key)
        if found is None:
            found = self._mine[key] = _refers_to(resource, patient_id)
        return found


def matches(resource: dict[str, Any], params: Iterable[tuple[str, str]], *, misfiled: bool = False,
            facets: _Facets | None = None) -> bool:
    """Whether ``resource`` matches every search parameter this module understands (``facets``: the
    record's facets, when ``resource`` is one of its resources)."""
    seen = facets or _Facets([])
    for name, value in params:
        name = name.split(":", 1)[0]
        if name in ("patient", "subject"):
            if not misfiled and not seen.mine(resource, value.removeprefix("Patient/")):
                return False
        elif name in ("code", "category"):
            pairs, codes = _wanted(value)
            found = seen.tokens(resource, name)
            if not any(code in codes or (system, code) in pairs for system, code in found):
                return False
        elif name in ("status", "intent"):
            if str(resource.get(name)) not in value.split(","):
                return False
        elif name == "_id":
            if str(resource.get("id")) not in value.split(","):
                return False
    return True


def _params(qs: str) -> list[tuple[str, str]]:
    """``parse_qsl(qs, keep_blank_values=True)``, each ``&``-separated parameter parsed once per process
    (a template's code lists are the same for every patient; only the patient's own parameter differs)."""
    return [pair for part in qs.split("&") for pair in _param(part)]


@functools.lru_cache(maxsize=512)
def _param(part: str) -> tuple[tuple[str, str], ...]:
    return tuple(parse_qsl(part, keep_blank_values=True))


def searchset(resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(resources),
        "entry": [
            {"fullUrl": f"{r['resourceType']}/{r.get('id')}", "resource": r, "search": {"mode": "match"}}
            for r in resources
        ],
    }


def _included(found: list[dict[str, Any]], record: list[dict[str, Any]], includes: list[str]) -> list[dict]:
    """The Medications that ``found`` refers to, for ``_include=MedicationRequest:medication``."""
    if not any(inc.endswith(":medication") for inc in includes):
        return []
    targets = [parse((r.get("medicationReference") or {}).get("reference")) for r in found]
    ids = {t.id for t in targets if t is not None and not t.contained and t.type in (None, "Medication")}
    return [r for r in record if r.get("resourceType") == "Medication" and r.get("id") in ids]


def answer(query: str, record: list[dict[str, Any]], *, misfiled: bool = False,
           facets: _Facets | None = None) -> dict[str, Any] | None:
    """The record's answer to one filled query: a resource, ``None``, or a searchset Bundle (``facets``:
    the record's, shared by the queries of one request)."""
    seen = facets if facets is not None and facets.record is record else _Facets(record)
    path, _, qs = query.partition("?")
    path = unquote(path.strip("/"))
    if not qs and path.count("/") == 1:
        rtype, rid = path.split("/")
        return next((r for r in seen.by_type.get(rtype, ()) if str(r.get("id")) == rid), None)
    params = _params(qs)
    found = [r for r in seen.candidates(path, params) if matches(r, params, misfiled=misfiled, facets=seen)]
    return searchset(found + _included(found, record, [v for k, v in params if k == "_include"]))


def answer_all(templates: Mapping[str, str], record: list[dict[str, Any]], context: Mapping[str, Any], *,
               misfiled: bool = False) -> dict[str, Any]:
    """Every key of ``templates`` answered from ``record``; a key whose template cannot be filled from
    ``context`` is left out (the service then fetches it, or answers 412)."""
    out: dict[str, Any] = {}
    facets = _Facets(record)
    for key, template in templates.items():
        try:
            query = fill(template, context)
        except DataUnavailable:
            continue
        out[key] = answer(query, record, misfiled=misfiled, facets=facets)
    return out


class ReadPlan:
    """Which resources a service's prefetch templates can ever select, whatever the patient: a resource
    ``may_select`` rejects is in no answer ``answer_all`` gives for any record holding it, so leaving it out
    of the record changes no answer (a batch run reads only what the rule pack reads).

    Worked out from the templates as written, conservatively: a read (``Type/{{...}}``) or a search without
    a ``code`` parameter keeps every resource of its type; a search with one keeps the resources holding
    one of the codes its first ``code`` parameter lists (any system); ``_include=X:medication`` keeps every
    Medication; a type or a code list that is itself a token keeps everything it could name."""

    def __init__(self, templates: Mapping[str, str]) -> None:
        self.everything = False
        self.whole: set[str] = set()
        self.codes: dict[str, set[str]] = {}
        for template in templates.values():
            path, _, qs = template.partition("?")
            rtype = unquote(path.strip("/")).split("/", 1)[0]
            if not rtype or "{{" in rtype:
                self.everything = True
                continue
            params = parse_qsl(qs, keep_blank_values=True)
            if any(v.endswith(":medication") for k, v in params if k == "_include"):
                self.whole.add("Medication")
            codes = [v for k, v in params if k.split(":", 1)[0] == "code"]
            if not qs or not codes or "{{" in codes[0]:
                self.whole.add(rtype)
                continue
            pairs, any_system = _wanted(codes[0])
            self.codes.setdefault(rtype, set()).update(any_system | {c for _, c in pairs})

    def may_select(self, resource: Mapping[str, Any]) -> bool:
        rtype = resource.get("resourceType")
        if self.everything or rtype in self.whole:
            return True
        wanted = self.codes.get(rtype) if isinstance(rtype, str) else None
        if not wanted:
            return False
        concept = resource.get("code") or resource.get("medicationCodeableConcept")
        for c in concept if isinstance(concept, list) else (concept,):  # as ``_tokens`` reads them
            if isinstance(c, dict):
                for coding in c.get("coding") or ():
                    if isinstance(coding, dict) and coding.get("code") is not None \
                            and str(coding["code"]) in wanted:
                        return True
        return False
