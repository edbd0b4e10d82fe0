"""Cards that learn from the clinician's answer, over real HTTP on SQLite and PostgreSQL: a card overridden
with a reason is quiet for its period unless the evidence changes; an accepted test order, or one pending in
the record, keeps its "due" card quiet; a card shown once in an encounter is not shown again there;
critical cards are never quiet by default; a site can turn it all off; feedback from another patient's or
another client's card silences nothing; every quiet card is in its call's audit record, chained.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import os
import subprocess
import sys
import uuid
from typing import Any

import pytest
import requests
import yaml
from audit_support import AUDITOR_TOKEN, BEARER
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select, update
from support import PUBLIC_JWKS, TEST_ISS, make_token

from cds.ledger.schema import audit_record
from cds.review.verify import verify_all
from cds.rules.pack import DEFAULT_DIR

PV = "bone-health-patient-view"
SIGN = "bone-health-order-sign"
REASONS = "https://bone-health-cds.example.org/override-reasons"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
LOINC = "http://loinc.org"
OTHER_ISS = "https://other-ehr.example.org/cds-client"
TODAY = dt.date.today()


def _day(days_ago: int) -> str:
    return (TODAY - dt.timedelta(days=days_ago)).isoformat()


def _obs(pid: str, oid: str, code: str, value: float, unit: str, days_ago: int) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": oid, "status": "final",
            "code": {"coding": [{"system": LOINC, "code": code}]}, "subject": {"reference": f"Patient/{pid}"},
            "effectiveDateTime": _day(days_ago),
            "valueQuantity": {"value": value, "unit": unit, "system": "http://unitsofmeasure.org",
                              "code": unit}}


def _ai(pid: str, mid: str = "ai-1", code: str = "84857", name: str = "anastrozole",
        status: str = "active") -> dict[str, Any]:
    return {"resourceType": "MedicationRequest", "id": mid, "status": status, "intent": "order",
            "subject": {"reference": f"Patient/{pid}"}, "authoredOn": _day(400),
            "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": code, "display": name}]}}


def _order(pid: str, sid: str, system: str, code: str, *, status: str = "active",
           days_ago: int = 10) -> dict[str, Any]:
    return {"resourceType": "ServiceRequest", "id": sid, "status": status, "intent": "order",
            "subject": {"reference": f"Patient/{pid}"}, "authoredOn": _day(days_ago),
            "code": {"coding": [{"system": system, "code": code}]}}


def _bundle(*resources: dict[str, Any]) -> dict[str, Any] | None:
    return {"resourceType": "Bundle", "type": "searchset",
            "entry": [{"resource": r} for r in resources]} if resources else None


def body(pid: str, *, sex: str = "female", estradiol: float | None = None, vitamin_d: float | None = None,
         meds: list[dict[str, Any]] | None = None, pending: Any = "absent", user: str = "Practitioner/dr-1",
         encounter: str | None = None, hook: str = "patient-view",
         drafts: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A patient on anastrozole with a recent normal DXA and calcium: one "25-OH vitamin D missing" card
    (info) unless ``vitamin_d`` is given; a man with ``estradiol`` gets the low-estradiol card when low."""
    labs = [_obs(pid, "ca-1", "17861-6", 9.4, "mg/dL", 30)]
    if sex == "male":
        labs.append(_obs(pid, "t-1", "2986-8", 500, "ng/dL", 30))
    context: dict[str, Any] = {"userId": user, "patientId": pid}
    if encounter:
        context["encounterId"] = encounter
    if drafts is not None:
        context["draftOrders"] = {"resourceType": "Bundle", "type": "collection",
                                  "entry": [{"resource": d} for d in drafts]}
    prefetch: dict[str, Any] = {
        "patient": {"resourceType": "Patient", "id": pid, "gender": sex, "birthDate": "1958-03-04"},
        "estradiol": _bundle(_obs(pid, "e2-1", "2243-4", estradiol, "pg/mL", 20)) if estradiol else None,
        "vitaminD": _bundle(_obs(pid, "vd-1", "62292-8", vitamin_d, "ng/mL", 5)) if vitamin_d else None,
        "monitoring": _bundle(*labs),
        "dxa": _bundle(_obs(pid, "dxa-1", "38267-1", -0.2, "{T-score}", 200)),
        "medications": _bundle(*(meds if meds is not None else [_ai(pid)])),
    }
    if pending != "absent":
        prefetch["pendingOrders"] = pending
    return {"hook": hook, "hookInstance": str(uuid.uuid4()), "context": context, "prefetch": prefetch}


@pytest.fixture
def two_clients(tmp_path) -> str:
    trusted = tmp_path / "two-clients.json"
    trusted.write_text(json.dumps({"clients": [{"iss": iss, "jwks": copy.deepcopy(PUBLIC_JWKS)}
                                               for iss in (TEST_ISS, OTHER_ISS)]}))
    return str(trusted)


@pytest.fixture
def serve(db_url, make_app, live_server, two_clients):
    """``serve(**settings)``: the service over real HTTP (trusting two clients), and the app."""

    def start(**overrides: Any):
        app = make_app(db_url, TRUSTED_CLIENTS=two_clients, **overrides)
        return Service(live_server(app), app)

    return start


class Service:
    def __init__(self, base: str, app: Any):
        self.base, self.app = base, app

    def post(self, path: str, payload: dict[str, Any], iss: str = TEST_ISS) -> requests.Response:
        url = f"{self.base}{path}"
        return requests.post(url, json=payload, timeout=60,
                             headers={"Authorization": f"Bearer {make_token(url, iss=iss)}"})

    def cards(self, payload: dict[str, Any], service: str = PV, iss: str = TEST_ISS) -> list[dict[str, Any]]:
        res = self.post(f"/cds-services/{service}", payload, iss)
        assert res.status_code == 200, res.text
        return res.json()["cards"]

    def feedback(self, items: list[dict[str, Any]], service: str = PV,
                 iss: str = TEST_ISS) -> requests.Response:
        return self.post(f"/cds-services/{service}/feedback", {"feedback": items}, iss)

    def record(self, hook_instance: str) -> dict[str, Any]:
        with self.app.extensions["cds.audit"].engine.connect() as conn:
            row = conn.execute(select(audit_record.c.content)
                               .where(audit_record.c.hook_instance == hook_instance)).one()
        return json.loads(row.content)


def rules_of(cards: list[dict[str, Any]]) -> set[str]:
    return {c["source"]["topic"]["code"] for c in cards}


def override(card: dict[str, Any], code: str = "patient-declined") -> dict[str, Any]:
    """An override as the CDS Hooks sandbox sends it from its menu: the reason's code and system only."""
    return {"card": card["uuid"], "outcome": "overridden",
            "outcomeTimestamp": dt.datetime.now(dt.UTC).isoformat(),
            "overrideReason": {"reason": {"code": code, "system": REASONS}}}


def card_of(cards: list[dict[str, Any]], rule: str) -> dict[str, Any]:
    return next(c for c in cards if c["source"]["topic"]["code"] == rule)


# -- the reasons on the cards ------------------------------------------------------------------------------

def test_every_card_offers_the_reasons_its_rule_declares(serve):
    service = serve()
    cards = service.cards(body("p-reasons"))
    reasons = card_of(cards, "vitamin-d-missing")["overrideReasons"]
    assert [r["code"] for r in reasons] == ["result-elsewhere", "already-addressed", "patient-declined",
                                            "not-relevant", "next-visit"]
    assert all(r["system"] == REASONS and r["display"] for r in reasons)


# -- overridden with a reason ------------------------------------------------------------------------------

def test_an_override_sent_as_the_sandbox_sends_it_quiets_the_card_until_the_evidence_changes(serve):
    service = serve()
    card = card_of(service.cards(body("p-ovr", user="Practitioner/a")), "vitamin-d-missing")
    assert service.feedback([override(card)]).status_code == 200

    again = body("p-ovr", user="Practitioner/b")  # another clinician: the site's scope is the patient
    assert "vitamin-d-missing" not in rules_of(service.cards(again))
    quiet = service.record(again["hookInstance"])["suppression"]["suppressed"]
    assert [q["rule"] for q in quiet] == ["vitamin-d-missing"]
    by = quiet[0]["by"]
    assert by["kind"] == "feedback" and by["outcome"] == "overridden" and by["card"] == card["uuid"]
    assert by["reason"]["code"] == "patient-declined" and by["period"] == "suppress_patient_declined_days"
    until = dt.datetime.fromisoformat(quiet[0]["until"])
    received = dt.datetime.fromisoformat(by["received"])
    assert until - received == dt.timedelta(days=365)

    # a new order of a drug the rule is about: new evidence, the card is back
    letrozole = _ai("p-ovr", "ai-2", "72965", "letrozole")
    back = service.cards(body("p-ovr", user="Practitioner/c", meds=[_ai("p-ovr"), letrozole]))
    assert "vitamin-d-missing" in rules_of(back)


def test_the_plain_dismiss_of_the_sandbox_silences_nothing(serve):
    service = serve()
    card = card_of(service.cards(body("p-dismiss", user="Practitioner/a")), "vitamin-d-missing")
    dismissed = {"card": card["uuid"], "outcome": "overridden",  # no overrideReason at all
                 "outcomeTimestamp": dt.datetime.now(dt.UTC).isoformat()}
    assert service.feedback([dismissed]).status_code == 200
    second = card_of(service.cards(body("p-dismiss", user="Practitioner/b")), "vitamin-d-missing")
    # the same button with a reason from the card's menu does silence it
    assert service.feedback([override(second, "next-visit")]).status_code == 200
    assert "vitamin-d-missing" not in rules_of(service.cards(body("p-dismiss", user="Practitioner/c")))


def test_a_reason_the_card_did_not_offer_silences_nothing(serve):
    service = serve()
    card = card_of(service.cards(body("p-odd", user="Practitioner/a")), "vitamin-d-missing")
    assert service.feedback([override(card, "made-up")]).status_code == 200
    other_system = override(card)
    other_system["overrideReason"]["reason"]["system"] = "https://elsewhere.example.org/reasons"
    assert service.feedback([other_system]).status_code == 200
    second = card_of(service.cards(body("p-odd", user="Practitioner/b")), "vitamin-d-missing")
    assert service.feedback([override(second, "not-relevant")]).status_code == 200  # one it offers
    assert "vitamin-d-missing" not in rules_of(service.cards(body("p-odd", user="Practitioner/c")))


def test_any_change_of_the_evidence_brings_an_overridden_card_back(serve):
    """A low estradiol (warning) overridden: quiet with the same result; back whenever the value moves (an
    amended result, the same Observation), a new result arrives or the result's date changes."""
    service = serve()

    @settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(first=st.floats(min_value=10.5, max_value=19.5).map(lambda v: round(v, 1)),
           change=st.sampled_from(["value", "new-result", "date"]),
           delta=st.integers(min_value=1, max_value=90))
    def check(first: float, change: str, delta: int) -> None:
        pid = f"p-{uuid.uuid4().hex[:8]}"
        cards = service.cards(body(pid, sex="male", estradiol=first, user="Practitioner/a"))
        card = card_of(cards, "low-estradiol-on-ai")
        assert service.feedback([override(card, "estradiol-target-agreed")]).status_code == 200
        assert "low-estradiol-on-ai" not in rules_of(
            service.cards(body(pid, sex="male", estradiol=first, user="Practitioner/b")))
        changed = body(pid, sex="male", estradiol=first, user="Practitioner/c")
        result = changed["prefetch"]["estradiol"]["entry"][0]["resource"]
        if change == "value":  # still low, another value: delta tenths of a pg/mL up, or down
            step = delta / 10
            moved = first + step if first + step < 19.95 else first - step
            result["valueQuantity"]["value"] = round(moved, 1)
        elif change == "new-result":
            result["id"] = f"e2-{uuid.uuid4().hex[:6]}"
        else:
            result["effectiveDateTime"] = _day(20 + delta)
        assert "low-estradiol-on-ai" in rules_of(service.cards(changed))

    check()


# -- critical cards -----------------------------------------------------------------------------------------

def test_a_critical_card_is_never_quiet_by_default(serve):
    service = serve()
    cards = service.cards(body("p-crit", sex="male", estradiol=5, user="Practitioner/a"))
    card, info = card_of(cards, "low-estradiol-on-ai"), card_of(cards, "vitamin-d-missing")
    assert card["indicator"] == "critical" and info["indicator"] == "info"
    answers = [override(card, "not-relevant"), override(info, "not-relevant")]
    assert service.feedback(answers).status_code == 200
    again = body("p-crit", sex="male", estradiol=5, user="Practitioner/a", encounter="enc-1")
    first = rules_of(service.cards(again))
    assert "low-estradiol-on-ai" in first and "vitamin-d-missing" not in first  # only the info card quiet
    assert "low-estradiol-on-ai" in rules_of(service.cards({**again, "hookInstance": str(uuid.uuid4())}))


def test_a_site_may_allow_a_shorter_period_for_critical_cards(serve, tmp_path):
    site = tmp_path / "site.yaml"
    site.write_text(yaml.safe_dump({"thresholds": {"suppress_critical_days": 7}}))
    service = serve(SITE_CONFIG=str(site))
    card = card_of(service.cards(body("p-crit7", sex="male", estradiol=5, user="Practitioner/a")),
                   "low-estradiol-on-ai")
    assert service.feedback([override(card, "not-relevant")]).status_code == 200
    again = body("p-crit7", sex="male", estradiol=5, user="Practitioner/b")
    assert "low-estradiol-on-ai" not in rules_of(service.cards(again))
    quiet = service.record(again["hookInstance"])["suppression"]["suppressed"][0]
    until = dt.datetime.fromisoformat(quiet["until"])
    assert until - dt.datetime.fromisoformat(quiet["by"]["received"]) == dt.timedelta(days=7)  # not 365


# -- accepted, and already ordered --------------------------------------------------------------------------

def test_an_accepted_order_keeps_the_card_quiet_until_the_result_arrives(serve):
    service = serve()
    card = card_of(service.cards(body("p-acc", user="Practitioner/a")), "vitamin-d-missing")
    suggestion = card["suggestions"][0]
    assert suggestion["actions"][0]["resource"]["resourceType"] == "ServiceRequest"
    accepted = {"card": card["uuid"], "outcome": "accepted",
                "acceptedSuggestions": [{"id": suggestion["uuid"]}],
                "outcomeTimestamp": dt.datetime.now(dt.UTC).isoformat()}
    assert service.feedback([accepted]).status_code == 200
    again = body("p-acc", user="Practitioner/b")
    assert "vitamin-d-missing" not in rules_of(service.cards(again))
    by = service.record(again["hookInstance"])["suppression"]["suppressed"][0]["by"]
    assert by["outcome"] == "accepted" and by["ordered"] == ["vitamin_d_test"]
    # the result arrives, and it is low: the advice it calls for is shown
    resulted = service.cards(body("p-acc", user="Practitioner/c", vitamin_d=12))
    assert "vitamin-d-low" in rules_of(resulted) and "vitamin-d-missing" not in rules_of(resulted)


def test_a_pending_order_in_the_record_keeps_its_due_card_quiet(serve):
    service = serve()
    pending = _bundle(_order("p-pend", "sr-vd", LOINC, "62292-8", status="on-hold"))
    call = body("p-pend", pending=pending)
    assert "vitamin-d-missing" not in rules_of(service.cards(call))
    suppression = service.record(call["hookInstance"])["suppression"]
    assert suppression["pendingOrders"] == "known"
    by = suppression["suppressed"][0]["by"]
    assert by["kind"] == "pendingOrder" and by["orders"] == ["ServiceRequest/sr-vd"]
    until = dt.datetime.fromisoformat(suppression["suppressed"][0]["until"])
    assert until.date() == TODAY - dt.timedelta(days=10) + dt.timedelta(days=90)


@pytest.mark.parametrize("pending", [
    _bundle(_order("p-other", "sr-dxa", "http://snomed.info/sct", "312681000")),  # another test
    _bundle(_order("p-other", "sr-old", LOINC, "62292-8", days_ago=120)),  # past the pending period
    _bundle(_order("p-other", "sr-done", LOINC, "62292-8", status="completed")),  # not pending
    _bundle(_order("p-someone", "sr-theirs", LOINC, "62292-8")),  # another patient's order
    None,  # the client found none
], ids=["other-test", "too-old", "completed", "another-patient", "none"])
def test_an_order_that_is_not_a_pending_one_for_the_test_silences_nothing(serve, pending):
    service = serve()
    assert "vitamin-d-missing" in rules_of(service.cards(body("p-other", pending=pending)))
    recent = _bundle(_order("p-other", "sr-new", LOINC, "1989-3"))  # a pending order for the test does
    assert "vitamin-d-missing" not in rules_of(service.cards(body("p-other", pending=recent)))


def test_without_the_pending_orders_every_card_shows_and_the_record_says_so(serve):
    service = serve()
    call = body("p-unknown")  # the key not sent (an EHR with the previous discovery), no fhirServer
    res = service.post(f"/cds-services/{PV}", call)
    assert res.status_code == 200 and "vitamin-d-missing" in rules_of(res.json()["cards"])
    record = service.record(call["hookInstance"])
    assert record["provenance"]["pendingOrders"] == "failed"
    assert record["suppression"]["pendingOrders"].startswith("not known")


# -- within one encounter -----------------------------------------------------------------------------------

def test_a_card_shown_and_not_acted_on_is_not_shown_again_in_the_encounter(serve):
    service = serve()
    first = body("p-enc", user="Practitioner/a", encounter="e-1")
    assert "vitamin-d-missing" in rules_of(service.cards(first))
    again = body("p-enc", user="Practitioner/b", encounter="e-1")
    assert "vitamin-d-missing" not in rules_of(service.cards(again))
    by = service.record(again["hookInstance"])["suppression"]["suppressed"][0]["by"]
    assert by["kind"] == "encounter" and by["encounter"] == "e-1"
    # another encounter: shown
    elsewhere = body("p-enc", user="Practitioner/b", encounter="e-2")
    assert "vitamin-d-missing" in rules_of(service.cards(elsewhere))


def test_the_same_user_within_the_window_is_one_encounter(serve):
    service = serve(SUPPRESSION_ENCOUNTER_MINUTES=30)
    assert "vitamin-d-missing" in rules_of(service.cards(body("p-win", user="Practitioner/a")))
    assert "vitamin-d-missing" not in rules_of(service.cards(body("p-win", user="Practitioner/a")))
    assert "vitamin-d-missing" in rules_of(service.cards(body("p-win", user="Practitioner/z")))


def test_without_a_window_only_the_encounter_id_makes_one_encounter(serve):
    service = serve()  # the default window: 0
    assert "vitamin-d-missing" in rules_of(service.cards(body("p-w0", user="Practitioner/a")))
    assert "vitamin-d-missing" in rules_of(service.cards(body("p-w0", user="Practitioner/a")))
    same = body("p-w0", user="Practitioner/a", encounter="e")
    assert "vitamin-d-missing" in rules_of(service.cards(same))
    assert "vitamin-d-missing" not in rules_of(service.cards({**same, "hookInstance": str(uuid.uuid4())}))


def test_a_card_whose_content_changed_is_shown_again_in_the_encounter(serve):
    service = serve()
    first = service.cards(body("p-chg", sex="male", estradiol=15, encounter="e-9"))
    assert "low-estradiol-on-ai" in rules_of(first)
    changed = service.cards(body("p-chg", sex="male", estradiol=16, encounter="e-9"))
    assert "low-estradiol-on-ai" in rules_of(changed)
    same = service.cards(body("p-chg", sex="male", estradiol=16, encounter="e-9"))
    assert "low-estradiol-on-ai" not in rules_of(same)  # shown once with this content


def test_order_sign_still_shows_what_is_about_the_orders_being_signed(serve):
    service = serve()
    draft = _ai("p-sign", "draft-ai", status="draft")
    draft["dosageInstruction"] = [{"text": "1 mg daily", "timing": {"repeat": {"frequency": 1, "period": 1,
                                                                              "periodUnit": "d"}}}]

    def sign() -> list[dict[str, Any]]:
        return service.cards(body("p-sign", sex="male", estradiol=15, encounter="e-s", hook="order-sign",
                                  drafts=[copy.deepcopy(draft)]), service=SIGN)

    first = sign()
    assert {"low-estradiol-on-ai", "vitamin-d-missing"} <= rules_of(first)
    second = sign()
    assert "low-estradiol-on-ai" in rules_of(second)  # it changes the draft being signed
    assert "vitamin-d-missing" not in rules_of(second)  # not about the orders: shown once


# -- the site's settings ------------------------------------------------------------------------------------

def test_suppression_off_shows_every_card(serve):
    service = serve(SUPPRESSION="off")
    card = card_of(service.cards(body("p-off", encounter="e-off")), "vitamin-d-missing")
    assert service.feedback([override(card)]).status_code == 200
    pending = _bundle(_order("p-off", "sr-vd", LOINC, "62292-8"))
    call = body("p-off", encounter="e-off", pending=pending)
    assert "vitamin-d-missing" in rules_of(service.cards(call))
    record = service.record(call["hookInstance"])
    assert record["suppression"]["mode"] == "off" and record["suppression"]["suppressed"] == []


def test_scope_clinician_keeps_one_clinicians_answer_to_that_clinician(serve):
    service = serve(SUPPRESSION_SCOPE="clinician")
    card = card_of(service.cards(body("p-scope", user="Practitioner/a")), "vitamin-d-missing")
    assert service.feedback([override(card)]).status_code == 200
    assert "vitamin-d-missing" not in rules_of(service.cards(body("p-scope", user="Practitioner/a")))
    assert "vitamin-d-missing" in rules_of(service.cards(body("p-scope", user="Practitioner/b")))


# -- feedback that is not this patient's or this client's ------------------------------------------------

def test_feedback_on_another_patients_card_silences_nothing(serve):
    service = serve()
    card = card_of(service.cards(body("p-ann", user="Practitioner/a")), "vitamin-d-missing")
    assert service.feedback([override(card)]).status_code == 200
    assert "vitamin-d-missing" in rules_of(service.cards(body("p-bob", user="Practitioner/b")))
    assert "vitamin-d-missing" not in rules_of(service.cards(body("p-ann", user="Practitioner/b")))


def test_feedback_from_another_client_silences_nothing(serve):
    service = serve()
    card = card_of(service.cards(body("p-cli", user="Practitioner/a")), "vitamin-d-missing")
    refused = service.feedback([override(card)], iss=OTHER_ISS)
    assert refused.status_code == 404
    assert "vitamin-d-missing" in rules_of(service.cards(body("p-cli", user="Practitioner/b")))
    # and the other client's own card, overridden by it, keeps quiet only what the patient was shown by it
    theirs = card_of(service.cards(body("p-cli2", user="Practitioner/a"), iss=OTHER_ISS), "vitamin-d-missing")
    assert service.feedback([override(theirs)], iss=OTHER_ISS).status_code == 200
    assert service.feedback([override(theirs)]).status_code == 404  # not this client's card
    mine = card_of(service.cards(body("p-cli", user="Practitioner/c")), "vitamin-d-missing")
    assert service.feedback([override(mine)]).status_code == 200
    assert "vitamin-d-missing" not in rules_of(service.cards(body("p-cli", user="Practitioner/d")))


# -- every quiet card accounted for -----------------------------------------------------------------------

def test_quiet_cards_are_in_the_chained_record_the_cli_and_the_pages(serve):
    service = serve()
    card = card_of(service.cards(body("p-aud", user="Practitioner/a")), "vitamin-d-missing")
    assert service.feedback([override(card, "next-visit")]).status_code == 200
    again = body("p-aud", user="Practitioner/b")
    assert service.cards(again) == []
    app = service.app
    engine = app.extensions["cds.audit"].engine
    assert verify_all(engine).ok

    env = {**os.environ, "CDS_DATABASE_URL": app.config["DATABASE_URL"],
           "CDS_AUDIT_PATIENT_KEY_SECRET": app.config["AUDIT_PATIENT_KEY_SECRET"],
           "CDS_AUDIT_SPOOL_DIR": app.config["AUDIT_SPOOL_DIR"]}
    shown = subprocess.run([sys.executable, "-m", "cds", "audit", "show", again["hookInstance"]], env=env,
                           capture_output=True, text=True, timeout=300)
    assert shown.returncode == 0, shown.stderr
    assert "quiet [info] No 25-OH vitamin D result" in shown.stdout
    assert "overridden (Will address at the next visit)" in shown.stdout and card["uuid"] in shown.stdout

    record = service.record(again["hookInstance"])
    page = requests.get(f"{service.base}/audit/records/{record['id']}", headers=BEARER, timeout=60)
    assert page.status_code == 200 and 'id="quiet-cards"' in page.text and "vitamin-d-missing" in page.text
    assert "Will address at the next visit" in page.text

    api = f"{service.base}/audit/api/rules/vitamin-d-missing"
    rule = requests.get(api, headers=BEARER, timeout=60).json()
    outcomes = rule["outcomes"]
    assert outcomes["cardsShown"] == 1 and outcomes["overridden"] == 1 and outcomes["suppressed"] == 1
    assert outcomes["overriddenByReason"][0]["code"] == "next-visit"
    assert outcomes["suppressedBy"] == {"feedback": 1} and outcomes["rates"]["suppressed"] == 0.5
    future = requests.get(f"{service.base}/audit/api/rules/vitamin-d-missing?from=2999-01-01", headers=BEARER,
                          timeout=60).json()["outcomes"]
    assert future["cardsShown"] == future["suppressed"] == 0 and future["rates"]["accepted"] is None
    page = requests.get(f"{service.base}/audit/rules/vitamin-d-missing?from={_day(1)}", headers=BEARER,
                        timeout=60)
    assert page.status_code == 200 and 'id="outcome-stats"' in page.text and "quiet by feedback" in page.text
    bad = requests.get(f"{api}?to=soon", headers=BEARER, timeout=60)
    assert bad.status_code == 400 and bad.json()["issue"][0]["expression"] == ["to"]

    # replayed under the same pack, the call's computed cards (the quiet one too) are unchanged
    replayed = subprocess.run([sys.executable, "-m", "cds", "audit", "rerun", "--rules", str(DEFAULT_DIR),
                               "--json"], env=env, capture_output=True, text=True, timeout=300)
    assert replayed.returncode == 0, replayed.stderr
    assert json.loads(replayed.stdout)["calls"] == []

    # the quiet card is inside the chained content: changing it breaks verify
    with engine.begin() as conn:
        stored = conn.execute(select(audit_record.c.content)
                              .where(audit_record.c.id == record["id"])).scalar_one()
        content = json.loads(stored)
        content["suppression"]["suppressed"] = []
        conn.execute(update(audit_record).where(audit_record.c.id == record["id"])
                     .values(content=json.dumps(content)))
    assert not verify_all(engine).ok
    with engine.begin() as conn:  # put back: the database may be shared with the tests that follow
        conn.execute(update(audit_record).where(audit_record.c.id == record["id"]).values(content=stored))
    assert verify_all(engine).ok
    assert AUDITOR_TOKEN  # the pages above were read as an auditor


# -- what one call reads of the patient's past -------------------------------------------------------------

def test_a_call_reads_the_latest_calls_and_the_answered_ones_however_long_the_history(serve, monkeypatch):
    """The cost of one call's history read does not grow with the patient's calls: the latest
    ``RECENT_CALLS`` and those whose cards were answered; an override older than the latest calls still
    keeps its card quiet."""
    from cds.ledger import history

    monkeypatch.setattr(history, "RECENT_CALLS", 3)
    service = serve()
    card = card_of(service.cards(body("p-long", user="Practitioner/a")), "vitamin-d-missing")
    assert service.feedback([override(card)]).status_code == 200
    for _ in range(6):  # more calls than the latest read: the answered one is read all the same
        assert "vitamin-d-missing" not in rules_of(service.cards(body("p-long", user="Practitioner/a")))
    store = service.app.extensions["cds.audit"]
    since = dt.datetime.now(dt.UTC) - dt.timedelta(days=400)
    past = store.card_history("p-long", since)
    assert len({c.record_id for c in past.cards}) == 3 + 1
    assert card["uuid"] in {c.uuid for c in past.cards}
    assert [f.card for f in past.feedback] == [card["uuid"]]
    only_answered = store.card_history("p-long", since, recent=0)  # a call with no encounter rule to apply
    assert {c.record_id for c in only_answered.cards} == {c.record_id for c in past.cards
                                                          if c.uuid == card["uuid"]}


def test_a_card_stays_quiet_through_a_long_encounter(serve, monkeypatch):
    """Shown once in an encounter, a card stays quiet on every later call of it, also when the call that
    showed it is older than the latest calls read (each quiet card carries the encounter on)."""
    from cds.ledger import history

    monkeypatch.setattr(history, "RECENT_CALLS", 2)
    service = serve()
    first = body("p-enc-long", user="Practitioner/a")
    first["context"]["encounterId"] = "enc-long"
    assert "vitamin-d-missing" in rules_of(service.cards(first))
    for _ in range(5):
        again = body("p-enc-long", user="Practitioner/a")
        again["context"]["encounterId"] = "enc-long"
        assert "vitamin-d-missing" not in rules_of(service.cards(again))
    other = body("p-enc-long", user="Practitioner/a")
    other["context"]["encounterId"] = "enc-next"
    assert "vitamin-d-missing" in rules_of(service.cards(other))  # another encounter: shown


def test_an_override_stored_before_its_cards_record_counts_once_the_record_arrives(serve, monkeypatch):
    """A record that waited in a spool may reach the database after the feedback on its cards (stored by
    another process, flagged as for an unknown card). Once it arrives, that feedback is the patient's: the
    overridden card stays quiet, and the patient's history finds it by its own key."""
    from sqlalchemy.exc import OperationalError

    from cds.ledger.schema import audit_feedback

    service = serve()
    store = service.app.extensions["cds.audit"]
    real_append = store.chains.append

    def unavailable(*args: Any, **kwargs: Any) -> Any:
        raise OperationalError("INSERT", {}, Exception("the database went away"))

    monkeypatch.setattr(store.chains, "append", unavailable)
    payload = body("p-late", user="Practitioner/a")
    card = card_of(service.cards(payload), "vitamin-d-missing")  # answered; its record waits in the spool
    assert store.spool.pending()
    # the feedback reaches the database first, as another process would write it
    store.write({"kind": "feedback", "id": str(uuid.uuid4()), "service": PV, "client": TEST_ISS,
                 "item": override(card), "received": dt.datetime.now(dt.UTC).isoformat()})
    with store.engine.connect() as conn:
        row = conn.execute(select(audit_feedback.c.known_card, audit_feedback.c.patient_key)
                           .where(audit_feedback.c.card_uuid == card["uuid"])).one()
    assert row.known_card is False and row.patient_key is None
    monkeypatch.setattr(store.chains, "append", real_append)
    store.kick()
    assert store.wait_drained(120)
    with store.engine.connect() as conn:
        key = conn.execute(select(audit_feedback.c.patient_key)
                           .where(audit_feedback.c.card_uuid == card["uuid"])).scalar_one()
    assert key == service.record(payload["hookInstance"])["patientKey"]
    assert "vitamin-d-missing" not in rules_of(service.cards(body("p-late", user="Practitioner/a")))
    assert verify_all(store.engine).ok
