"""The class guarantee of ``cds.decide.underway``, over generated patients and whole hook calls:

    no suggestion orders what is already active (same ingredient or class), in active orders or draft orders.

Every boundary fixture whose answer suggests creating an order is a base patient (so every rule that
suggests an order is covered, today's and tomorrow's). Hypothesis adds to it an order of the same kind as
one of those suggestions: any ingredient of the drug class, coded by RxNorm, by ATC, by name in the text
only (any case) or through a contained Medication, as an active or on-hold order of the record (started any
time, or with no start) or as a draft order; or, for a test, a draft ServiceRequest with any code of that
order kind. The answer goes through the HTTP endpoint as an EHR's would. Properties: no suggested resource
is of the kind added (classified here from the value sets' codes, independently of the service); and a
card of a rule that suggested that kind before and still answers says what it no longer offers.
"""

from __future__ import annotations

import copy
import datetime as dt
import functools
import json

import pytest
from fixture_check import SERVICE, Recorder, all_fixtures, expected_for
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from support import make_test_app

from cds.hooks.services import discovery_document
from cds.rules import pack as rulepack
from cds.toolkit.request import build_hook_request, choose_service

PACK = rulepack.load()
VS = PACK.valuesets
SYSTEMS = VS["systems"]
MEDS = VS["medications"]
ORDERS = VS["orders"]


@functools.cache
def app():
    """One app for the module, made inside a test (the autouse fixture sets its public URL)."""
    return make_test_app({"TESTING": True}, audit_sink=Recorder())


def kind_of(resource: dict) -> str | None:
    """A suggested resource's drug class or order kind, from its codes (the value sets, read here)."""
    if resource.get("resourceType") == "MedicationRequest":
        codings = (resource.get("medicationCodeableConcept") or {}).get("coding") or []
        for cls, spec in MEDS.items():
            for codes in spec["ingredients"].values():
                for c in codings:
                    system = {SYSTEMS["rxnorm"]: "rxnorm", SYSTEMS["atc"]: "atc"}.get(c.get("system"))
                    if system and c.get("code") in (codes.get(system) or {}):
                        return cls
    if resource.get("resourceType") == "ServiceRequest":
        for c in (resource.get("code") or {}).get("coding") or []:
            for kind, spec in ORDERS.items():
                if any(
                    SYSTEMS[key] == c.get("system") and c.get("code") in codes for key, codes in spec.items()
                ):
                    return kind
    return None


def call(bundle: dict, expected: dict) -> list[dict]:
    hook = expected.get("hook", "order-sign")
    APP = app()
    APP.config["NOW"] = dt.datetime.fromisoformat(expected.get("at", "2026-11-22")).replace(tzinfo=dt.UTC)
    service = choose_service(discovery_document(APP.extensions["cds.pack"]), hook, SERVICE[hook])
    body = build_hook_request(bundle, hook, service, misfiled=True)
    response = APP.test_client().post(f"/cds-services/{SERVICE[hook]}", json=body)
    assert response.status_code == 200, response.get_data(as_text=True)[:300]
    return response.get_json()["cards"]


def suggested(cards: list[dict]) -> list[tuple[str, str]]:
    """(rule, kind) of every create action of every suggestion."""
    return [
        (c["source"]["topic"]["code"], kind_of(a["resource"]))
        for c in cards
        for s in c.get("suggestions", [])
        for a in s["actions"]
        if a["type"] == "create" and kind_of(a["resource"])
    ]


@functools.cache
def bases() -> list[tuple[str, dict, dict, list[tuple[str, str]]]]:
    out = []
    for path in all_fixtures():
        expected = expected_for(path)
        if expected.get("site_config") or expected.get("status", 200) != 200:
            continue
        bundle = json.loads(path.read_text(encoding="utf-8"))
        made = suggested(call(bundle, expected))
        if made:
            out.append((f"{path.parent.name}/{path.stem}", bundle, expected, made))
    return out


def test_the_bases_cover_every_rule_that_suggests_an_order():
    """Every active card rule whose card (or a variant) suggests creating something the value sets can name
    as ordered (a drug class or an order kind; a referral is neither) has a base patient."""

    def creates(card: dict) -> bool:
        options = [card, *(card.get("variants") or [])]
        return any(
            a.get("type") == "create" and kind_of(a["resource"])
            for o in options
            for s in o.get("suggestions") or []
            for a in s.get("actions") or []
        )

    suggesting = {r.id for r in PACK.active_rules if r.card and creates(r.card)}
    covered = {rule for _, _, _, made in bases() for rule, _ in made}
    assert suggesting and suggesting <= covered, suggesting - covered


@st.composite
def medication_order(draw, cls: str, pid: str, at: dt.date, sex: str | None = None) -> dict:
    """Any ingredient of the class (for ``sex``: one its ``only_for_sex`` allows), in any coding shape."""
    ingredient = draw(st.sampled_from(sorted(
        name for name, codes in MEDS[cls]["ingredients"].items()
        if sex is None or sex in codes.get("only_for_sex", [sex]))))
    codes = MEDS[cls]["ingredients"][ingredient]
    shapes = (
        ["text"]
        + [s for s in ("rxnorm", "atc") if codes.get(s)]
        + (["contained"] if codes.get("rxnorm") or codes.get("atc") else [])
    )
    shape = draw(st.sampled_from(shapes))
    draft = draw(st.booleans())
    mr: dict = {
        "resourceType": "MedicationRequest",
        "id": f"held-{draw(st.integers(0, 999))}",
        "status": "draft" if draft else draw(st.sampled_from(["active", "on-hold"])),
        "intent": "order",
        "subject": {"reference": f"Patient/{pid}"},
    }
    started = draw(st.one_of(st.none(), st.integers(0, 800)))
    if started is not None:
        mr["authoredOn"] = (at - dt.timedelta(days=started)).isoformat()
    names = [ingredient, *(codes.get("names") or [])]
    if shape == "text":
        name = draw(st.sampled_from(names))
        name = draw(st.sampled_from([name, name.upper(), name.lower(), name.title()]))
        mr["medicationCodeableConcept"] = {
            "text": f"{name} {draw(st.sampled_from(['1000 IU', '50 mg', '']))}"
        }
        return mr
    system = shape if shape != "contained" else ("rxnorm" if codes.get("rxnorm") else "atc")
    code = draw(st.sampled_from(sorted(codes[system])))
    concept = {"coding": [{"system": SYSTEMS[system], "code": code}]}
    if shape == "contained":
        mr["contained"] = [{"resourceType": "Medication", "id": "med", "code": concept}]
        mr["medicationReference"] = {"reference": "#med"}
    else:
        mr["medicationCodeableConcept"] = concept
    return mr


@st.composite
def service_order(draw, kind: str, pid: str) -> dict:
    spec = ORDERS[kind]
    key = draw(st.sampled_from(sorted(spec)))
    code = draw(st.sampled_from(sorted(spec[key])))
    return {
        "resourceType": "ServiceRequest",
        "id": f"held-{draw(st.integers(0, 999))}",
        "status": "draft",
        "intent": "order",
        "subject": {"reference": f"Patient/{pid}"},
        "code": {"coding": [{"system": SYSTEMS[key], "code": code}]},
    }


@st.composite
def patients(draw):
    kinds = sorted({kind for _, _, _, made in bases() for _, kind in made})
    kind = draw(st.sampled_from(kinds))  # each kind as often as any other, whatever the number of bases
    name, bundle, expected, made = draw(
        st.sampled_from([b for b in bases() if any(k == kind for _, k in b[3])])
    )
    rule = draw(st.sampled_from(sorted({r for r, k in made if k == kind})))
    bundle = copy.deepcopy(bundle)
    pid = next(e["resource"]["id"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")
    at = dt.date.fromisoformat(expected.get("at", "2026-11-22"))
    order = draw(medication_order(kind, pid, at) if kind in MEDS else service_order(kind, pid))
    # patient-view carries no draft orders: there, only an order of the record can be under way
    assume(
        expected.get("hook") != "patient-view"
        or order.get("status") not in ("draft", None)
        and order["resourceType"] == "MedicationRequest"
    )
    bundle["entry"].append(
        {"fullUrl": f"urn:uuid:00000000-0000-4000-8000-{len(bundle['entry']):012d}", "resource": order}
    )
    return name, bundle, expected, rule, kind, order


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(patients())
def test_no_suggestion_orders_what_is_already_under_way(case):
    name, bundle, expected, rule, kind, order = case
    shape = (
        "contained"
        if "contained" in order
        else "text"
        if "text" in order.get("medicationCodeableConcept", {})
        else "coded"
    )
    event(f"{kind}, {shape}, {order['status']}")
    cards = call(bundle, expected)
    again = [(r, k) for r, k in suggested(cards) if k == kind]
    assert not again, f"{name}: {kind} suggested again by {again} beside {json.dumps(order)}"
    still = [c for c in cards if c["source"]["topic"]["code"] == rule]
    for card in still:
        assert "Not offered:" in card["detail"], f"{name}: {rule} left out its {kind} suggestion silently"


@pytest.mark.parametrize("status", ["stopped", "completed", "cancelled", "entered-in-error"])
def test_an_order_no_longer_under_way_does_not_hold_a_suggestion(status):
    """The boundary: a vitamin D supplement that is stopped or finished leaves cholecalciferol offered."""
    path = next(
        p for p in all_fixtures() if p.parent.name == "vitamin-d-low" and p.stem == "in-19.9-ng-ml-deficient"
    )
    bundle, expected = json.loads(path.read_text(encoding="utf-8")), expected_for(path)
    pid = next(e["resource"]["id"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")
    bundle["entry"].append(
        {
            "resource": {
                "resourceType": "MedicationRequest",
                "id": "old-d3",
                "status": status,
                "intent": "order",
                "subject": {"reference": f"Patient/{pid}"},
                "authoredOn": "2026-01-01",
                "medicationCodeableConcept": {"coding": [{"system": SYSTEMS["atc"], "code": "A11CC05"}]},
            }
        }
    )
    made = suggested(call(bundle, expected))
    assert ("vitamin-d-low", "vitamin_d_supplement") in made


def _ingredient_orders() -> list[tuple[str, str]]:
    return [(cls, ing) for cls, spec in sorted(MEDS.items()) for ing in sorted(spec["ingredients"])]


@settings(max_examples=120, deadline=None)
@given(held=st.sampled_from(sorted(MEDS)), offered=st.sampled_from(_ingredient_orders()),
       status=st.sampled_from(["active", "on-hold", "draft", "stopped", "completed"]), draft=st.booleans(),
       sex=st.sampled_from(["female", "male"]), data=st.data())
def test_every_drug_class_holds_its_own_and_no_other(held, offered, status, draft, sex, data):
    """Below the rules, for every class of the value sets (bone-directed drugs included, which no card
    suggests today): an order of any ingredient of a class, under way in any coding shape, makes a suggestion
    of any ingredient of the same class redundant, and of another class never."""
    from cds.decide.facts import Context, build_facts
    from cds.decide.underway import Underway
    from cds.fhir.parse import parse_resource

    at = dt.date(2026, 11, 22)
    # any ingredient of the class that counts for this patient's sex (a SERM is no bone-protective therapy
    # for a woman: tests/test_ai_course.py), in any shape
    order = data.draw(medication_order(held, "p1", at, sex))
    order["status"] = "draft" if draft else status
    patient = {"resourceType": "Patient", "id": "p1", "gender": sex, "birthDate": "1960-01-01"}
    models = [parse_resource(patient, where="test")]
    drafts = [parse_resource(order, where="test")] if draft else []
    if not draft:
        models.append(parse_resource(order, where="test"))
    ctx = Context(patient_id="p1", now=dt.datetime(2026, 11, 22, tzinfo=dt.UTC))
    facts = build_facts(models, drafts, ctx, VS).facts
    codes = MEDS[offered[0]]["ingredients"][offered[1]]
    system = "rxnorm" if codes.get("rxnorm") else "atc"
    coding = [{"system": SYSTEMS[system], "code": sorted(codes[system])[0]}] if codes.get(system) else []
    suggestion = {"resourceType": "MedicationRequest", "status": "draft", "intent": "proposal",
                  "medicationCodeableConcept": {"coding": coding, "text": offered[1]}}
    holding = Underway(facts, VS).blocking(suggestion)
    under_way = draft or status in VS["under_way_statuses"]
    assert (holding is not None) == (under_way and held == offered[0]), (held, order, offered, status, draft)
