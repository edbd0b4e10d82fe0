"""The warm-patient cache: a resource seen before (same type, id, version and content) is not validated
again; changed content is never served stale; the cache stays bounded."""

from __future__ import annotations

import copy

import pytest
from builders import hook_body, med, obs, patient
from support import NOW

from cds import create_app
from cds.fhir import parse as fhir_parse
from cds.fhir.parse import ModelCache


@pytest.fixture
def app(auth_config):
    """The app with the facts cache off, so that each call reaches the model cache (tests/test_facts_cache.py
    covers the facts cache)."""
    return create_app({**auth_config, "NOW": NOW, "FACTS_CACHE_SIZE": 0})


def test_same_resource_is_validated_once(monkeypatch):
    cache = ModelCache(100)
    calls = []
    real = fhir_parse.model_for

    def counting(resource_type):
        calls.append(resource_type)
        return real(resource_type)

    monkeypatch.setattr(fhir_parse, "model_for", counting)
    resource = obs("2243-4", 12, "pg/mL", "2026-10-01", oid="e1")
    first = fhir_parse.parse_resource(resource, where="x", cache=cache)
    second = fhir_parse.parse_resource(copy.deepcopy(resource), where="x", cache=cache)
    assert second is first
    assert calls == ["Observation"]
    assert (cache.hits, cache.misses) == (1, 1)


def test_changed_content_is_a_miss_not_a_stale_hit():
    cache = ModelCache(100)
    resource = obs("2243-4", 12, "pg/mL", "2026-10-01", oid="e1")
    first = fhir_parse.parse_resource(resource, where="x", cache=cache)
    changed = copy.deepcopy(resource)
    changed["valueQuantity"]["value"] = 25
    second = fhir_parse.parse_resource(changed, where="x", cache=cache)
    assert float(first.valueQuantity.value) == 12
    assert float(second.valueQuantity.value) == 25


def test_cache_is_bounded():
    cache = ModelCache(10)
    for i in range(50):
        fhir_parse.parse_resource(
            obs("2243-4", i, "pg/mL", "2026-10-01", oid=f"e{i}"), where="x", cache=cache
        )
    assert len(cache) == 10


def test_invalid_resources_are_not_cached():
    cache = ModelCache(10)
    bad = obs("2243-4", 12, "pg/mL", "2026-10-01", oid="bad")
    bad["valueQuantity"]["value"] = "twelve"
    for _ in range(2):
        try:
            fhir_parse.parse_resource(bad, where="x", cache=cache)
        except Exception as exc:  # noqa: BLE001 - the same error both times
            assert "valueQuantity" in str(exc)
    assert len(cache) == 0


def test_warm_repeat_gives_the_same_cards_and_follows_changes(app, call):
    record = [patient(), med(), obs("62292-8", 35, "ng/mL", "2026-10-01", oid="v1"),
              obs("2243-4", 12, "pg/mL", "2026-10-01", oid="e1")]
    cache = app.extensions["cds.service"].model_cache
    first = call(hook_body("patient-view", record=record)).get_json()["cards"]
    misses = cache.misses
    second = call(hook_body("patient-view", record=record)).get_json()["cards"]
    assert cache.misses == misses and cache.hits >= 4
    assert [c["summary"] for c in first] == [c["summary"] for c in second]
    record[3]["valueQuantity"]["value"] = 30  # the lab was amended: no low-estradiol card any more
    third = call(hook_body("patient-view", record=record)).get_json()["cards"]
    assert "low-estradiol-on-ai" in [c["source"]["topic"]["code"] for c in first]
    assert "low-estradiol-on-ai" not in [c["source"]["topic"]["code"] for c in third]


def test_only_the_elements_the_rules_read_are_validated():
    resource = obs("2243-4", 12, "pg/mL", "2026-10-01", oid="e1")
    resource["referenceRange"] = "not even a list"  # invalid, but no rule reads it
    resource["note"] = [{"text": 5}]
    model = fhir_parse.parse_resource(resource, where="x")
    assert float(model.valueQuantity.value) == 12
    resource["status"] = 7  # a read element stays validated
    try:
        fhir_parse.parse_resource(resource, where="x")
        raise AssertionError("expected InvalidFhir")
    except Exception as exc:  # noqa: BLE001
        assert "status" in str(exc)


def test_cache_key_ignores_elements_no_rule_reads():
    cache = ModelCache(10)
    resource = obs("2243-4", 12, "pg/mL", "2026-10-01", oid="e1")
    first = fhir_parse.parse_resource(resource, where="x", cache=cache)
    resource = {**resource, "text": {"status": "generated", "div": "<div>changed narrative</div>"}}
    assert fhir_parse.parse_resource(resource, where="x", cache=cache) is first
