"""A suggestion's resource found valid once is answered from a bounded cache by its exact JSON text
(cds/fhir/parse.py ``outgoing_resource``): the same answer as the check, as a new copy; any change to the
resource is checked again, and an invalid resource is refused every time, in its own words."""

from __future__ import annotations

import copy

import pytest

from cds.fhir import parse as fhir_parse

DRAFT = {
    "resourceType": "ServiceRequest",
    "status": "draft",
    "intent": "proposal",
    "code": {"coding": [{"system": "http://loinc.org", "code": "2986-8"}, {}],
             "text": "Testosterone, total"},
    "subject": {"reference": "Patient/p-1"},
    "category": {"coding": [{"system": "http://snomed.info/sct", "code": "108252007"}]},
}


@pytest.fixture
def checks(monkeypatch) -> list[dict]:
    """Every resource the real check is run on (the cache emptied first)."""
    monkeypatch.setattr(fhir_parse, "_OUTGOING", type(fhir_parse._OUTGOING)())
    seen: list[dict] = []
    real = fhir_parse._checked_outgoing

    def counted(data, *, where):
        seen.append(copy.deepcopy(data))
        return real(data, where=where)

    monkeypatch.setattr(fhir_parse, "_checked_outgoing", counted)
    return seen


def test_the_same_resource_again_is_the_checks_answer_without_checking(checks):
    first, why = fhir_parse.outgoing_resource(copy.deepcopy(DRAFT), where="a")
    assert why is None and first["category"] == [DRAFT["category"]]  # repaired: wrapped in a list
    assert first["code"]["coding"] == [DRAFT["code"]["coding"][0]]  # the empty coding dropped
    again, why_again = fhir_parse.outgoing_resource(copy.deepcopy(DRAFT), where="b")
    assert (again, why_again) == (first, None) and len(checks) == 1
    again["subject"]["reference"] = "Patient/someone-else"  # a copy: the next answer is not touched
    third, _ = fhir_parse.outgoing_resource(copy.deepcopy(DRAFT), where="c")
    assert third == first and len(checks) == 1


def test_a_changed_resource_is_checked_again(checks):
    fhir_parse.outgoing_resource(copy.deepcopy(DRAFT), where="a")
    other = copy.deepcopy(DRAFT)
    other["subject"]["reference"] = "Patient/p-2"
    resource, why = fhir_parse.outgoing_resource(other, where="a")
    assert why is None and resource["subject"]["reference"] == "Patient/p-2" and len(checks) == 2
    reordered = {k: DRAFT[k] for k in reversed(DRAFT)}  # the same JSON in another order: another text
    fhir_parse.outgoing_resource(copy.deepcopy(reordered), where="a")
    assert len(checks) == 3


def test_an_invalid_resource_is_refused_every_time_in_its_own_words(checks):
    bad = {**copy.deepcopy(DRAFT), "authoredOn": "yesterday"}
    answers = [fhir_parse.outgoing_resource(copy.deepcopy(bad), where=f"suggestion {n}") for n in (1, 2)]
    assert [r for r, _ in answers] == [None, None] and len(checks) == 2
    assert answers[0][1].startswith("suggestion 1: not valid FHIR ServiceRequest")
    assert answers[1][1].startswith("suggestion 2: not valid FHIR ServiceRequest")


def test_the_cache_is_bounded(checks, monkeypatch):
    monkeypatch.setattr(fhir_parse, "OUTGOING_CACHE_ENTRIES", 3)
    for n in range(5):
        fhir_parse.outgoing_resource({**copy.deepcopy(DRAFT), "id": f"r{n}"}, where="a")
    assert len(fhir_parse._OUTGOING) == 3
    fhir_parse.outgoing_resource({**copy.deepcopy(DRAFT), "id": "r0"}, where="a")  # fell out: checked again
    assert len(checks) == 6


def test_size_zero_turns_the_cache_off(checks, monkeypatch):
    monkeypatch.setattr(fhir_parse, "OUTGOING_CACHE_ENTRIES", 0)
    for _ in range(2):
        resource, why = fhir_parse.outgoing_resource(copy.deepcopy(DRAFT), where="a")
        assert why is None and resource["category"] == [DRAFT["category"]]
    assert len(checks) == 2 and not fhir_parse._OUTGOING


def test_the_setting_sizes_the_cache(monkeypatch):
    from cds import create_app

    monkeypatch.setattr(fhir_parse, "OUTGOING_CACHE_ENTRIES", fhir_parse.OUTGOING_CACHE_ENTRIES)
    create_app({"SUGGESTION_CACHE_SIZE": 0, "AUDIT": False})
    assert fhir_parse.OUTGOING_CACHE_ENTRIES == 0
