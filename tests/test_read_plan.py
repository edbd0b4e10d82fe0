"""The resources a service's prefetch templates can ever select (``ReadPlan``): leaving out what it rejects
changes no answer, for any record and any template, the rule pack's and generated ones."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cds.hooks.services import prefetch_templates
from cds.rules.pack import load
from cds.toolkit.prefetch_answer import ReadPlan, answer_all

PACK_TEMPLATES = prefetch_templates(load())
TYPES = ["Patient", "Observation", "MedicationRequest", "ServiceRequest", "Medication", "Condition",
         "Encounter"]
SYSTEMS = ["http://loinc.org", "http://snomed.info/sct", "http://www.nlm.nih.gov/research/umls/rxnorm", ""]
#: the pack's own codes, and a few no template names
CODES = ["2243-4", "1989-3", "38267-1", "2986-8", "17861-6", "312681000", "77080", "199224", "8867-4", "x|y",
         "laboratory", "vital-signs", "2243-4 ", ""]
CONTEXT = {"userId": "Practitioner/u1", "patientId": "p1"}

_coding = st.fixed_dictionaries({}, optional={"system": st.sampled_from(SYSTEMS),
                                              "code": st.one_of(st.sampled_from(CODES), st.integers(0, 3),
                                                                st.none())})
_concept = st.one_of(st.fixed_dictionaries({"coding": st.lists(_coding, max_size=3)}),
                     st.fixed_dictionaries({"text": st.just("free text")}), st.just("a string"),
                     st.lists(st.fixed_dictionaries({"coding": st.lists(_coding, max_size=2)}), max_size=2))
_subject = st.sampled_from(["Patient/p1", "p1", "Patient/p2", "urn:uuid:p1", "Group/g1", "#c1"])


@st.composite
def _resource(draw: Any) -> dict[str, Any]:
    rtype = draw(st.sampled_from(TYPES))
    out: dict[str, Any] = {"resourceType": rtype, "id": draw(st.sampled_from(["p1", "a", "b", "m1", "c"]))}
    for name in ("code", "medicationCodeableConcept", "category"):
        if draw(st.booleans()):
            out[name] = draw(_concept)
    if draw(st.booleans()):
        out[draw(st.sampled_from(["subject", "patient"]))] = {"reference": draw(_subject)}
    if draw(st.booleans()):
        out["status"] = draw(st.sampled_from(["active", "completed", "draft", "final", "on-hold"]))
    if draw(st.booleans()):
        out["intent"] = draw(st.sampled_from(["order", "plan"]))
    if rtype == "MedicationRequest" and draw(st.booleans()):
        out["medicationReference"] = {"reference": draw(st.sampled_from(["Medication/m1", "#m1", "m1"]))}
    return out


def _code_list(draw: Any) -> str:
    items = draw(st.lists(st.tuples(st.sampled_from(SYSTEMS), st.sampled_from(CODES)), min_size=1,
                          max_size=4))
    return ",".join(f"{s}|{c}" if s else c for s, c in items)


@st.composite
def _template(draw: Any) -> str:
    rtype = draw(st.sampled_from(TYPES))
    if draw(st.integers(0, 5)) == 0:
        return f"{rtype}/{{{{context.patientId}}}}"
    params = [f"{draw(st.sampled_from(['patient', 'subject']))}={{{{context.patientId}}}}"] \
        if draw(st.booleans()) else []
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["code", "code:in", "category", "status", "intent", "_include", "date"]))
        if kind in ("code", "code:in", "category"):
            params.append(f"{kind}={_code_list(draw)}")
        elif kind == "status":
            params.append("status=active,on-hold,completed")
        elif kind == "intent":
            params.append("intent=order")
        elif kind == "_include":
            params.append("_include=MedicationRequest:medication")
        else:
            params.append("date=ge2020-01-01")
    return f"{rtype}?{'&'.join(params)}" if params else rtype


def _same_answers(templates: dict[str, str], record: list[dict[str, Any]]) -> None:
    plan = ReadPlan(templates)
    kept = [r for r in record if plan.may_select(r)]
    for misfiled in (False, True):
        assert answer_all(templates, kept, CONTEXT, misfiled=misfiled) == \
            answer_all(templates, record, CONTEXT, misfiled=misfiled)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_resource(), max_size=12))
def test_the_packs_templates_answer_the_same_without_what_the_plan_rejects(record):
    _same_answers(PACK_TEMPLATES, record)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), _template(), min_size=1, max_size=4),
       st.lists(_resource(), max_size=10))
def test_any_templates_answer_the_same_without_what_the_plan_rejects(templates, record):
    _same_answers(templates, record)


def test_the_plan_rejects_what_no_template_of_the_pack_names():
    plan = ReadPlan(PACK_TEMPLATES)
    heart_rate = {"resourceType": "Observation", "id": "hr",
                  "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]}}
    estradiol = {"resourceType": "Observation", "id": "e2",
                 "code": {"coding": [{"system": "http://loinc.org", "code": "2243-4"}]}}
    assert not plan.may_select(heart_rate) and plan.may_select(estradiol)
    assert not plan.may_select({"resourceType": "Encounter", "id": "e"})
    assert plan.may_select({"resourceType": "MedicationRequest", "id": "m"})  # searched without a code
    assert plan.may_select({"resourceType": "Patient", "id": "p"})  # read by id
    assert plan.may_select({"resourceType": "Medication", "id": "m"})  # the medications' _include


def test_a_template_whose_type_or_codes_are_tokens_keeps_everything_it_could_name():
    assert ReadPlan({"a": "{{context.kind}}?patient={{context.patientId}}"}).may_select(
        {"resourceType": "Encounter"})
    plan = ReadPlan({"a": "Observation?code={{context.code}}&patient={{context.patientId}}"})
    assert plan.may_select({"resourceType": "Observation", "code": {"coding": [{"code": "anything"}]}})
    assert not plan.may_select({"resourceType": "Condition"})
