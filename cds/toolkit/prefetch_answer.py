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

__all__ = ["answer", "answer_all", "fill", "filed_elsewhere", "matches", "searchset"]


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


def _token_match(wanted: str, found: set[tuple[str, str]]) -> bool:
    pairs, codes = _wanted(wanted)
    return any(code in codes or (system, code) in pairs for system, code in found)


def _refers_to(resource: dict[str, Any], patient_id: str, index: ReferenceIndex | None = None) -> bool:
    """Whether the resource's subject is the patient (no subject: the record is the patient's)."""
    return patient_verdict(subject_reference(resource), patient_id, index) == MINE


def filed_elsewhere(record: Iterable[dict[str, Any]], patient_id: str) -> list[dict[str, Any]]:
    """The record's resources filed under another patient: no search for ``patient_id`` returns them."""
    return [r for r in record if r.get("resourceType") != "Patient" and not _refers_to(r, patient_id)]


def matches(resource: dict[str, Any], params: Iterable[tuple[str, str]], *, misfiled: bool = False) -> bool:
    for name, value in params:
        name = name.split(":", 1)[0]
        if name in ("patient", "subject"):
            if not misfiled and not _refers_to(resource, value.removeprefix("Patient/")):
                return False
        elif name == "code":
            concept = resource.get("code") or resource.get("medicationCodeableConcept")
            if not _token_match(value, _tokens(concept)):
                return False
        elif name in ("status", "intent"):
            if str(resource.get(name)) not in value.split(","):
                return False
        elif name == "category":
            if not _token_match(value, _tokens(resource.get("category"))):
                return False
        elif name == "_id":
            if str(resource.get("id")) not in value.split(","):
                return False
    return True


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


def answer(query: str, record: list[dict[str, Any]], *, misfiled: bool = False) -> dict[str, Any] | None:
    """The record's answer to one filled query: a resource, ``None``, or a searchset Bundle."""
    path, _, qs = query.partition("?")
    path = unquote(path.strip("/"))
    if not qs and path.count("/") == 1:
        rtype, rid = path.split("/")
        return next((r for r in record if r.get("resourceType") == rtype and str(r.get("id")) == rid), None)
    params = parse_qsl(qs, keep_blank_values=True)
    found = [r for r in record if r.get("resourceType") == path and matches(r, params, misfiled=misfiled)]
    return searchset(found + _included(found, record, [v for k, v in params if k == "_include"]))


def answer_all(templates: Mapping[str, str], record: list[dict[str, Any]], context: Mapping[str, Any], *,
               misfiled: bool = False) -> dict[str, Any]:
    """Every key of ``templates`` answered from ``record``; a key whose template cannot be filled from
    ``context`` is left out (the service then fetches it, or answers 412)."""
    out: dict[str, Any] = {}
    for key, template in templates.items():
        try:
            query = fill(template, context)
        except DataUnavailable:
            continue
        out[key] = answer(query, record, misfiled=misfiled)
    return out
