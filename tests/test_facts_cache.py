"""The facts cache (cds/decide/derived.py, CDS_FACTS_CACHE_SIZE) over the real app: the same call again is
a hit with the same cards; any change to what facts are made from (a value, a unit, a date, a status, a
resource added or removed, the evaluation date, the rule pack) is a miss, and the cards are those of an
app without the cache."""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
from typing import Any

import pytest
import yaml
from builders import hook_body, med, obs, patient
from support import NOW

from cds import create_app
from cds.decide.derived import DerivedCache

HOOK = "patient-view"
SERVICE = "/cds-services/bone-health-patient-view"


def record() -> list[dict[str, Any]]:
    return [patient(), med(mid="mr1"), obs("2243-4", 19, "pg/mL", "2026-10-01", oid="e1"),
            obs("62292-8", 35, "ng/mL", "2026-10-01", oid="v1")]


def _plain(value: Any) -> Any:
    """A card without what is the call's own (uuids, signed links)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if k not in ("uuid", "links")}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


@pytest.fixture
def apps(auth_config, authed_client, tmp_path):
    """(cached app, its client, an app without the facts cache, its client)."""
    cached = create_app({**auth_config, "NOW": NOW, "FACTS_CACHE_SIZE": 100})
    plain = create_app({**auth_config, "DATABASE_URL": f"sqlite:///{tmp_path}/plain.sqlite3", "NOW": NOW,
                        "FACTS_CACHE_SIZE": 0})
    return cached, authed_client(cached), plain, authed_client(plain)


def cards(client, body) -> list[dict[str, Any]]:
    response = client.post(SERVICE, json=body)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()["cards"]


def topics(found: list[dict[str, Any]]) -> dict[str, str]:
    return {c["source"]["topic"]["code"]: c["indicator"] for c in found}


def test_the_same_call_again_is_a_hit_with_the_same_cards(apps):
    cached, http, _, _ = apps
    cache = cached.extensions["cds.service"].derived_cache
    first = cards(http, hook_body(HOOK, record=record()))
    assert (cache.hits, cache.misses, len(cache)) == (0, 1, 1)
    second = cards(http, hook_body(HOOK, record=record()))  # a new hookInstance, the same record
    assert (cache.hits, cache.misses) == (1, 1)
    assert topics(first)["low-estradiol-on-ai"] == "warning"
    assert _plain(second) == _plain(first)
    assert {c["uuid"] for c in first}.isdisjoint({c["uuid"] for c in second})  # cards are the call's own


def test_a_hit_skips_validation_and_facts(apps, monkeypatch):
    cached, http, _, _ = apps
    cards(http, hook_body(HOOK, record=record()))
    evaluator = cached.extensions["cds.evaluator"]

    def fail(*args, **kwargs):
        raise AssertionError("facts built again on a hit")

    monkeypatch.setattr(evaluator, "facts", fail)
    monkeypatch.setattr(evaluator, "run_facts", fail)
    again = cards(http, hook_body(HOOK, record=record()))
    assert "low-estradiol-on-ai" in topics(again)


def _set(index: int, path: tuple[str, ...], value: Any):
    def change(resources: list[dict[str, Any]]) -> None:
        target = resources[index]
        for part in path[:-1]:
            target = target[part]
        target[path[-1]] = value

    return change


def _detail(words: str):
    return lambda found: any(words in c["detail"] for c in found)


def _topic(code: str, indicator: str | None = None, present: bool = True):
    def check(found: list[dict[str, Any]]) -> bool:
        shown = topics(found)
        return (code in shown and indicator in (None, shown[code])) if present else code not in shown

    return check


CHANGES = {
    # each: what is changed in the record, and what on the cards tells the change was seen
    "value": (_set(2, ("valueQuantity", "value"), 25), _topic("low-estradiol-on-ai", present=False)),
    "unit": (lambda r: r[2]["valueQuantity"].update(unit="pmol/L", code="pmol/L"),
             _topic("low-estradiol-on-ai", "critical")),
    "unit code": (_set(2, ("valueQuantity", "code"), "pmol/L"), _topic("low-estradiol-on-ai", "critical")),
    "unit text": (_set(2, ("valueQuantity", "unit"), "pmol/L"), _detail("(reported as 19 pmol/L)")),
    "date": (_set(2, ("effectiveDateTime",), "2024-01-01"), _topic("estradiol-monitoring-due")),
    "status": (_set(2, ("status",), "entered-in-error"), _topic("low-estradiol-on-ai", present=False)),
    "added": (lambda r: r.append(obs("2243-4", 30, "pg/mL", "2026-11-01", oid="e2")),
              _topic("low-estradiol-on-ai", present=False)),
    "removed": (lambda r: r.pop(2), _topic("low-estradiol-on-ai", present=False)),
    "drug stopped": (_set(1, ("status",), "stopped"), _topic("low-estradiol-on-ai", present=False)),
}


@pytest.mark.parametrize("change", CHANGES, ids=list(CHANGES))
def test_a_changed_record_is_a_miss_with_the_right_cards(apps, change):
    cached, http, _, plain_http = apps
    cache = cached.extensions["cds.service"].derived_cache
    first = cards(http, hook_body(HOOK, record=record()))
    assert topics(first)["low-estradiol-on-ai"] == "warning"
    edit, seen = CHANGES[change]
    assert not seen(first)
    changed = record()
    edit(changed)
    misses = cache.misses
    got = cards(http, hook_body(HOOK, record=changed))
    assert cache.misses == misses + 1, "a changed record must not be served from the cache"
    assert seen(got), topics(got)
    assert _plain(got) == _plain(cards(plain_http, hook_body(HOOK, record=changed)))
    # and the first record is still itself: a hit with its own cards
    hits = cache.hits
    assert _plain(cards(http, hook_body(HOOK, record=record()))) == _plain(first)
    assert cache.hits == hits + 1


def test_another_evaluation_date_is_a_miss(apps):
    cached, http, plain, plain_http = apps
    cache = cached.extensions["cds.service"].derived_cache
    today = topics(cards(http, hook_body(HOOK, record=record())))
    later = NOW + dt.timedelta(days=400)  # the results are over a year old by then
    cached.config["NOW"] = plain.config["NOW"] = later
    misses = cache.misses
    got = cards(http, hook_body(HOOK, record=record()))
    assert cache.misses == misses + 1
    assert set(topics(got)) - set(today) == {"estradiol-monitoring-due", "vitamin-d-missing"}
    assert _plain(got) == _plain(cards(plain_http, hook_body(HOOK, record=record())))
    cached.config["NOW"] = NOW + dt.timedelta(hours=6)  # the same day, another hour: facts read the date
    misses = cache.misses
    assert topics(cards(http, hook_body(HOOK, record=record()))) == today
    assert cache.misses == misses


def test_another_rule_pack_is_a_miss_even_on_a_shared_cache(auth_config, authed_client, tmp_path):
    site = tmp_path / "site.yaml"
    site.write_text(yaml.safe_dump({"thresholds": {"estradiol_low_pg_ml": 18}}))  # 19 pg/mL is not low
    default = create_app({**auth_config, "NOW": NOW})
    other = create_app({**auth_config, "NOW": NOW, "SITE_CONFIG": str(site)})
    shared = DerivedCache(100)
    for app in (default, other):
        service = app.extensions["cds.service"]
        app.extensions["cds.service"] = dataclasses.replace(service, derived_cache=shared)
    assert "low-estradiol-on-ai" in topics(cards(authed_client(default), hook_body(HOOK, record=record())))
    got = topics(cards(authed_client(other), hook_body(HOOK, record=record())))
    assert (shared.hits, shared.misses) == (0, 2)
    assert "low-estradiol-on-ai" not in got


def test_other_patient_selections_and_drafts_are_misses(apps):
    cached, http, _, plain_http = apps
    cache = cached.extensions["cds.service"].derived_cache
    sign = "/cds-services/bone-health-order-sign"
    draft = med("84857", "anastrozole", status="draft", mid="d1")
    bodies = [
        hook_body("order-sign", record=record(), drafts=[draft]),
        hook_body("order-sign", record=record(), drafts=[{**draft, "id": "d2"}]),
        hook_body("order-sign", record=record(), drafts=[]),
        hook_body("order-sign", pid="p2", record=[{**r, "subject": {"reference": "Patient/p2"}}
                                                 if "subject" in r else {**r, "id": "p2"} for r in record()]),
    ]
    answers = []
    for body in bodies:
        misses = cache.misses
        response = http.post(sign, json=body)
        assert response.status_code == 200, response.get_data(as_text=True)
        assert cache.misses == misses + 1
        answers.append(response.get_json()["cards"])
        assert _plain(answers[-1]) == _plain(plain_http.post(sign, json=body).get_json()["cards"])
    assert len(cache) == len(bodies)


def test_the_kept_entry_is_never_changed_by_the_calls_that_read_it(apps):
    cached, http, _, _ = apps
    cache = cached.extensions["cds.service"].derived_cache
    cards(http, hook_body(HOOK, record=record()))
    (entry,) = cache._items.values()
    snapshot = copy.deepcopy(entry)
    for _ in range(3):
        cards(http, hook_body(HOOK, record=record()))
    assert cache.hits == 3
    assert entry == snapshot


def test_malformed_or_unkeyable_records_are_never_kept(apps):
    cached, http, _, _ = apps
    cache = cached.extensions["cds.service"].derived_cache
    bad = record()
    bad[2]["valueQuantity"]["value"] = "19"  # a decimal sent as a string: malformed FHIR, both times
    for _ in range(2):
        response = http.post(SERVICE, json=hook_body(HOOK, record=bad))
        assert response.status_code == 400
        assert "valueQuantity.value" in response.get_data(as_text=True)
    assert len(cache) == 0
    nan = record()
    nan[2]["valueQuantity"]["value"] = float("nan")  # has no exact digest (orjson would write null)
    first = http.post(SERVICE, json=hook_body(HOOK, record=nan))
    second = http.post(SERVICE, json=hook_body(HOOK, record=nan))
    assert first.status_code == second.status_code
    assert len(cache) == 0 and cache.hits == 0


def test_the_cache_is_bounded_and_can_be_turned_off(auth_config, authed_client):
    small = create_app({**auth_config, "NOW": NOW, "FACTS_CACHE_SIZE": 3})
    http = authed_client(small)
    for i in range(8):
        changed = record()
        changed[2]["valueQuantity"]["value"] = 10 + i
        cards(http, hook_body(HOOK, record=changed))
    cache = small.extensions["cds.service"].derived_cache
    assert (len(cache), cache.misses) == (3, 8)
    off = create_app({**auth_config, "NOW": NOW, "FACTS_CACHE_SIZE": 0})
    http = authed_client(off)
    for _ in range(2):
        cards(http, hook_body(HOOK, record=record()))
    assert len(off.extensions["cds.service"].derived_cache) == 0
