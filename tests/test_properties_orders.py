"""Property-based tests over whole hook calls (no HTTP, no network): random and absurd MedicationRequests —
codes, text, statuses, subjects, contained Medications, references — in the record and as draft orders,
next to results that would make every rule fire for a patient on an aromatase inhibitor.

The call goes through ``HookService.call`` (envelope, prefetch, relevance filter, FHIR validation, facts,
rules, cards). Properties: it answers cards or raises a ``CdsError`` (a 4xx), never anything else; and a
card about a patient on an aromatase inhibitor needs an order, for this patient, with a usable status,
that names one — an order for another patient, a cancelled or entered-in-error order, or an unusable
code is never enough.
"""

from __future__ import annotations

import datetime as dt
import json
import math

from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from cds.call.service import HookService
from cds.decide.evaluate import Evaluator
from cds.errors import CdsError
from cds.rules import pack as rulepack

PACK = rulepack.load()
SERVICE = HookService(Evaluator(PACK))
NOW = dt.datetime(2026, 11, 22, 12, tzinfo=dt.UTC)
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
ATC = "http://www.whocc.no/atc"
MEDS = PACK.valuesets["medications"]
AI = MEDS["aromatase_inhibitor"]["ingredients"]
AI_NAMES = sorted(AI)
AI_CODES = sorted({c for codes in AI.values() for c in [*codes.get("rxnorm", []), *codes.get("atc", [])]})
OTHER_CODES = sorted(
    {
        c
        for cls, spec in MEDS.items()
        if cls != "aromatase_inhibitor"
        for codes in spec["ingredients"].values()
        for c in codes.get("rxnorm", [])
    }
)
USABLE = {"active", "on-hold", "draft"}
#: every card-giving rule except this one needs "on an aromatase inhibitor"
NOT_AI_RULES = {"bone-at-risk-from-low-density"}

junk = st.one_of(
    st.none(),
    st.integers(-(10**20), 10**20),
    st.floats(allow_nan=True),
    st.booleans(),
    st.text(max_size=8),
    st.lists(st.integers(), max_size=2),
    st.just({}),
)
codes = st.one_of(
    st.sampled_from(AI_CODES),
    st.sampled_from(OTHER_CODES),
    st.text(max_size=8),
    st.sampled_from(["", "0", "84857 ", " 84857", "L02BG03x"]),
)
systems = st.sampled_from([RXNORM, ATC, "http://snomed.info/sct", "", None, RXNORM.upper()])
texts = st.one_of(
    st.none(),
    st.sampled_from(
        [f"{n} 1 mg tablet" for n in AI_NAMES]
        + [n.upper() for n in AI_NAMES]
        + ["tamoxifen", "vitamin D", "", "anastrazole (misspelt)"]
    ),
    st.text(max_size=20),
)


def coding(system, code, display):
    out = {}
    for key, value in (("system", system), ("code", code), ("display", display)):
        if value is not None:
            out[key] = value
    return out


codeable = st.one_of(
    st.builds(
        lambda cs, t: {k: v for k, v in {"coding": cs, "text": t}.items() if v is not None},
        st.one_of(st.lists(st.builds(coding, systems, codes, texts), max_size=3), junk),
        texts,
    ),
    junk,
)
statuses = st.one_of(
    st.sampled_from(
        [
            "active",
            "on-hold",
            "draft",
            "cancelled",
            "completed",
            "entered-in-error",
            "stopped",
            "unknown",
            "ACTIVE",
            "",
        ]
    ),
    junk,
)
subjects = st.one_of(
    st.sampled_from(
        [
            {"reference": "Patient/p1"},
            {"reference": "Patient/p2"},
            {"reference": "p1"},
            {"reference": "https://x.example/fhir/Patient/p2"},
            {"display": "no reference"},
        ]
    ),
    junk,
)
timings = st.one_of(
    st.none(),
    st.fixed_dictionaries(
        {
            "frequency": st.one_of(st.integers(-3, 10**12), junk),
            "period": st.one_of(st.floats(), junk),
            "periodUnit": st.sampled_from(["d", "wk", "mo", "x", ""]),
        }
    ),
)


@st.composite
def medication_request(draw, mid):
    r = {
        "resourceType": "MedicationRequest",
        "id": mid,
        "status": draw(statuses),
        "intent": draw(st.sampled_from(["order", "plan", "proposal", "x"])),
        "subject": draw(subjects),
    }
    how = draw(st.sampled_from(["concept", "concept", "contained", "reference-missing", "both", "none"]))
    if how in ("concept", "both"):
        r["medicationCodeableConcept"] = draw(codeable)
    if how in ("contained", "both"):
        cid = draw(st.sampled_from(["c1", "c2", ""]))
        r["contained"] = [{"resourceType": "Medication", "id": "c1", "code": draw(codeable)}]
        r["medicationReference"] = {"reference": f"#{cid}"}
    if how == "reference-missing":
        r["medicationReference"] = {"reference": "Medication/not-sent", "display": draw(texts)}
    timing = draw(timings)
    if timing is not None:
        r["dosageInstruction"] = [{"timing": {"repeat": timing}}]
    r["authoredOn"] = draw(
        st.sampled_from(
            ["2026-11-01", "0001-01-01", "9999-12-31", "2026-11-22T23:59:59+14:00", "2026-13-45", "yesterday"]
        )
    )
    return {k: v for k, v in r.items() if v is not None}


def observation(oid, code, value, unit, date):
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "subject": {"reference": "Patient/p1"},
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "effectiveDateTime": date,
        "valueQuantity": {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit},
    }


# results that make the on-AI rules fire: low estradiol (a man), a low and falling DXA, no vitamin D
RESULTS = [
    observation("e1", "2243-4", 9.0, "pg/mL", "2026-10-01"),
    observation("d1", "38267-1", -1.2, "1", "2024-06-01"),
    observation("d2", "38267-1", -2.7, "1", "2026-06-01"),
]


def mentions_ai(raw):
    blob = json.dumps(raw).lower()
    return any(n in blob for n in AI_NAMES) or any(f'"{c.lower()}' in blob for c in AI_CODES)


def usable_for_p1(raw):
    subject = raw.get("subject")
    ref = subject.get("reference") if isinstance(subject, dict) else None
    return not (
        isinstance(ref, str) and ref and ref not in ("Patient/p1", "p1") and not ref.endswith("/Patient/p1")
    )


def could_be_on_ai(orders):
    return any(
        isinstance(o, dict) and str(o.get("status")) in USABLE and usable_for_p1(o) and mentions_ai(o)
        for o in orders
    )


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    hook=st.sampled_from(["patient-view", "order-select", "order-sign"]),
    record=st.lists(st.integers(0, 5).flatmap(lambda i: medication_request(f"m{i}")), max_size=4),
    drafts=st.lists(st.integers(0, 5).flatmap(lambda i: medication_request(f"d{i}")), max_size=3),
    gender=st.sampled_from(["male", "female", "unknown", None]),
    selection=st.sampled_from(["d0", "d1", "m0", "nothing"]),
)
def test_random_orders_never_crash_and_ai_cards_need_a_usable_ai_order(
    hook, record, drafts, gender, selection
):
    patient = {"resourceType": "Patient", "id": "p1", "birthDate": "1958-03-04"}
    if gender:
        patient["gender"] = gender
    bundle = {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in record]}
    context = {"userId": "Practitioner/dr", "patientId": "p1"}
    if hook != "patient-view":
        context["draftOrders"] = {
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [{"resource": d} for d in drafts],
        }
    if hook == "order-select":
        context["selections"] = [f"MedicationRequest/{selection}"]
    body = {
        "hook": hook,
        "hookInstance": "5f0e3c1c-4a35-4a5e-9a51-2c9b8e9b1f00",
        "context": context,
        "prefetch": {
            "patient": patient,
            "medications": bundle,
            "vitaminD": None,
            "monitoring": None,
            "estradiol": {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": RESULTS[0]}]},
            "dxa": {
                "resourceType": "Bundle",
                "type": "searchset",
                "entry": [{"resource": r} for r in RESULTS[1:]],
            },
        },
    }
    try:
        cards = SERVICE.call(f"bone-health-{hook}", body, now=NOW)["cards"]
    except CdsError as exc:
        assert 400 <= exc.status < 500
        event(f"refused {exc.status}")
        return
    orders = record + (drafts if hook != "patient-view" else [])
    rules = {c["source"]["topic"]["code"] for c in cards}
    event("AI cards" if rules - NOT_AI_RULES else "no AI card")
    if not could_be_on_ai(orders):
        assert not rules - NOT_AI_RULES, (rules, orders)
    for card in cards:
        summary = card["summary"]
        assert 0 < len(summary) < 140
        assert not any(word in summary for word in ("None", "nan", "inf", "(unknown)", "{", "}"))
        named = [n for n in AI_NAMES if n in summary.lower()]
        for name in named:  # a drug named on a card was in a usable order for this patient
            assert any(
                isinstance(o, dict) and str(o.get("status")) in USABLE and usable_for_p1(o)
                for o in orders
                if name in json.dumps(o).lower() or mentions_ai(o)
            )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    value=st.one_of(
        st.floats(allow_nan=True, allow_infinity=True),
        st.integers(-(10**40), 10**40),
        st.sampled_from(["NaN", "Infinity", "-0", "1e999", "9" * 400, "", "12,5"]),
    ),
    unit=st.sampled_from(["pg/mL", "pmol/L", "PG/ML", "", "kg", "{T-score}", "1", None]),
    date=st.sampled_from(
        [
            "0001-01-01",
            "9999-12-31",
            "2026-11-22T23:30:00-11:00",
            "2026-11-23T00:30:00+14:00",
            "2026-02-30",
            "2026",
            "1900-01-01T00:00:00Z",
            "2026-11-22T12:00:00.123456789+05:45",
        ]
    ),
    code=st.sampled_from(["2243-4", "38267-1", "62292-8", "1989-3", "0000-0"]),
)
# found by the search: a decimal sent as the JSON string "-0" was coerced to 0 and made a low-estradiol card
@example(value="-0", unit="pg/mL", date="2026-11-22T23:30:00-11:00", code="2243-4")
@example(value="5", unit="pg/mL", date="2026-11-22", code="2243-4")
def test_absurd_results_next_to_an_ai_order_never_crash_or_make_a_card_from_the_value(
    value, unit, date, code
):
    quantity = {"value": value}
    if unit is not None:
        quantity.update(unit=unit, code=unit, system="http://unitsofmeasure.org")
    result = {
        "resourceType": "Observation",
        "id": "x1",
        "status": "final",
        "subject": {"reference": "Patient/p1"},
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "effectiveDateTime": date,
        "valueQuantity": quantity,
    }
    order = {
        "resourceType": "MedicationRequest",
        "id": "m1",
        "status": "active",
        "intent": "order",
        "subject": {"reference": "Patient/p1"},
        "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": "84857"}]},
    }
    searchset = {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": result}]}
    body = {
        "hook": "patient-view",
        "hookInstance": "5f0e3c1c-4a35-4a5e-9a51-2c9b8e9b1f00",
        "context": {"userId": "Practitioner/dr", "patientId": "p1"},
        "prefetch": {
            "patient": {"resourceType": "Patient", "id": "p1", "gender": "male"},
            "medications": {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": order}]},
            "estradiol": searchset,
            "vitaminD": searchset,
            "dxa": searchset,
            "monitoring": searchset,
        },
    }
    try:
        cards = SERVICE.call("bone-health-patient-view", body, now=NOW)["cards"]
    except CdsError as exc:
        assert 400 <= exc.status < 500
        return
    usable = (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and unit in ("pg/mL", "pmol/L", "PG/ML", "1", "{T-score}")
        and date[:4] not in ("0001", "9999")
    )
    for card in cards:
        topic = card["source"]["topic"]["code"]
        if topic in (
            "low-estradiol-on-ai",
            "low-estradiol-with-bone-loss",
            "falling-bone-density",
            "bone-density-low-on-ai",
            "osteopenia-on-ai",
            "bone-density-osteoporosis-range",
            "bone-density-osteopenia-range",
            "bone-density-ai-treatment-threshold",
        ):
            assert usable, (topic, value, unit, date)
        assert not any(w in card["summary"] for w in ("nan", "inf", "None"))
