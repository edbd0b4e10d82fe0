"""Elements validated once and shared (cds/fhir/parse.py SHARED_ELEMENTS) give the same models, and for a
malformed resource the same error, as validating each resource whole."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from builders import med, obs

from cds.errors import InvalidFhir
from cds.fhir import parse as fhir_parse

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def _resources(value: Any):
    """Every FHIR resource of a used type anywhere in ``value`` (Bundles, prefetch, draft orders)."""
    if isinstance(value, dict):
        if fhir_parse.is_used_type(value.get("resourceType")):
            yield value
        for item in value.values():
            yield from _resources(item)
    elif isinstance(value, list):
        for item in value:
            yield from _resources(item)


def _outcome(resource: dict[str, Any]) -> tuple[str, Any]:
    try:
        return "model", fhir_parse.parse_resource(copy.deepcopy(resource), where="r").model_dump()
    except InvalidFhir as exc:
        return "error", (exc.message, exc.field)


def _both(resource: dict[str, Any], monkeypatch) -> tuple[tuple[str, Any], tuple[str, Any]]:
    shared = [_outcome(resource), _outcome(resource)]  # validated, then from the element cache
    assert shared[0] == shared[1]
    with monkeypatch.context() as patch:
        patch.setattr(fhir_parse, "SHARED_ELEMENTS", {})
        whole = _outcome(resource)
    return shared[0], whole


CORPUS = [r for path in sorted(FIXTURES.rglob("*.json")) if not path.name.endswith(".expected.json")
          for r in _resources(json.loads(path.read_text()))]


def test_the_fixture_corpus_is_large_enough_to_mean_something():
    kinds = {r["resourceType"] for r in CORPUS}
    assert len(CORPUS) > 500 and {"Patient", "Observation", "MedicationRequest", "ServiceRequest"} <= kinds


def test_every_fixture_resource_gives_the_same_model_or_error(monkeypatch):
    differ = []
    for resource in CORPUS:
        shared, whole = _both(resource, monkeypatch)
        if shared != whole:
            differ.append((resource.get("resourceType"), resource.get("id"), shared, whole))
    assert not differ, differ[:3]


BROKEN = [None, "text", 12, [], {}, {"coding": "x"}, {"coding": [None]}, {"coding": [{"code": 5}]},
          {"coding": [{"system": "http://loinc.org", "code": "2243-4", "extra": 1}]}, {"text": ""},
          {"reference": 12}, {"versionId": 5}, {"lastUpdated": "yesterday"}, {"coding": [{}]}]


@pytest.mark.parametrize("element", sorted(fhir_parse.SHARED_ELEMENTS))
@pytest.mark.parametrize("value", BROKEN, ids=[json.dumps(b) for b in BROKEN])
def test_a_malformed_shared_element_is_reported_as_before(element, value, monkeypatch):
    base = med() if element == "medicationCodeableConcept" else obs("2243-4", 12, "pg/mL", "2026-10-01")
    broken = {**base, element: value}
    shared, whole = _both(broken, monkeypatch)
    assert shared == whole


def test_a_malformed_resource_beside_valid_shared_elements_is_reported_as_before(monkeypatch):
    resource = obs("2243-4", 12, "pg/mL", "2026-10-01")
    _outcome(resource)  # its code and subject are now in the element cache
    for broken in ({**resource, "status": 7}, {**resource, "effectiveDateTime": "soon"},
                   {**resource, "valueQuantity": {"value": 1, "unit": 3}}):
        shared, whole = _both(broken, monkeypatch)
        assert shared == whole and shared[0] == "error"


def test_the_element_cache_is_bounded(monkeypatch):
    monkeypatch.setattr(fhir_parse, "ELEMENT_CACHE_ENTRIES", 5)
    for i in range(20):
        fhir_parse.parse_resource(obs("2243-4", 12, "pg/mL", "2026-10-01", pid=f"p{i}"), where="r")
    assert len(fhir_parse._ELEMENTS) <= 5
