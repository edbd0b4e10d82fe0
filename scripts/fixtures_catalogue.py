"""The fixture catalogue: per rule, records just inside (``in-``) and just outside (``out-``) each boundary.

Read by ``scripts/build_fixtures.py``; ``b`` is that module (resource builders, ``record``, ``fixture``).
Card tuples are ``(rule, indicator, summary_contains, extra)`` where ``extra`` may hold ``actions`` (the
exact list of suggestion action types, in order) and ``detail_contains``.
"""

from __future__ import annotations

from typing import Any

import fixtures_ai_course  # the AI course: first estradiol check, menopausal status, SERMs, 49765-1
import fixtures_dxa  # the DXA half of the catalogue
import fixtures_newrules  # testosterone, calcium and the order-time checks
import fixtures_underway  # treatment already under way; each order-time card's label and summary
import fixtures_values  # values as laboratories and DXA systems report them
from fixtures_common import card, fix

MALE_ONLY_E2 = "low-estradiol-on-ai"


def define(b: Any) -> None:
    _aromatase_inhibitor(b)
    _other_medications(b)
    _low_estradiol(b)
    fixtures_dxa.define(b)
    _escalation(b)
    _vitamin_d(b)
    _estradiol_due(b)
    _gaps(b)
    fixtures_values.define(b)
    fixtures_newrules.define(b)
    fixtures_ai_course.define(b)
    fixtures_underway.define(b)


def _aromatase_inhibitor(b: Any) -> None:
    rule = "on-aromatase-inhibitor"
    mr = b.med_request
    cases = {
        "in-rxnorm-ingredient-anastrozole": (mr("ai-1", rxnorm="84857", display="anastrozole"), "rxnorm"),
        "in-rxnorm-product-letrozole": (
            mr("ai-1", rxnorm="200064", display="letrozole 2.5 MG Oral Tablet"),
            "rxnorm",
        ),
        "in-atc-exemestane": (mr("ai-1", atc="L02BG06"), "atc"),
        "in-contained-medication": (
            mr(
                "ai-1",
                contained={
                    "resourceType": "Medication",
                    "id": "med",
                    "code": {"coding": [{"system": b.RXNORM, "code": "310261"}]},
                },
            ),
            "rxnorm (contained Medication)",
        ),
        "in-ingredient-name-only": (mr("ai-1", text="Anastrozole 1 mg tablet"), "ingredient name in text"),
        "in-on-hold": (mr("ai-1", rxnorm="84857", status="on-hold"), "rxnorm"),
    }
    for name, (order, how) in cases.items():
        fix(b, rule, name, b.record(ai=order), fired=[rule], derived=[{"t": "on_ai", "matched_by": how}])
    fix(
        b,
        rule,
        "in-referenced-medication",
        b.record(
            ai=[
                mr("ai-1", medication_ref="Medication/ana"),
                b.medication("ana", "199224", "anastrozole 1 MG Oral Tablet"),
            ]
        ),
        fired=[rule],
        derived=[{"t": "on_ai", "matched_by": "rxnorm (Medication/ana)"}],
    )
    fix(
        b,
        rule,
        "in-draft-order",
        b.record(ai=b.anastrozole(status="draft")),
        fired=[rule],
        derived=[{"t": "on_ai", "draft": True}],
    )
    for status in ("stopped", "entered-in-error", "completed"):
        fix(
            b,
            rule,
            f"out-{status}",
            b.record(ai=b.anastrozole(status=status)),
            not_fired=[rule],
            not_cards=["evaluation-gaps"],
        )
    fix(
        b,
        rule,
        "out-tamoxifen",
        b.record(ai=mr("tam", rxnorm="10324", display="tamoxifen")),
        not_fired=[rule],
    )


def _other_medications(b: Any) -> None:
    mr = b.med_request
    rule = "on-testosterone-therapy"
    fix(
        b,
        rule,
        "in-testosterone-cypionate",
        b.record(trt=mr("trt", rxnorm="835840", display="testosterone cypionate 200 MG/ML")),
        cards=[card("testosterone-against-target", "info", "within the target range")],
        fired=[rule],
        derived=[{"t": "on_trt", "ingredient": "testosterone"}],
    )
    fix(
        b,
        rule,
        "out-testosterone-stopped",
        b.record(trt=mr("trt", rxnorm="835840", status="stopped")),
        not_fired=[rule],
    )
    rule = "on-bone-protective-therapy"
    for name, order in {
        "in-denosumab": mr("bp", rxnorm="993452", display="denosumab 60 MG/ML"),
        "in-alendronate-atc": mr("bp", atc="M05BA04"),
        "in-raloxifene": mr("bp", rxnorm="1490065"),
        "in-teriparatide": mr("bp", rxnorm="1435115"),
    }.items():
        fix(b, rule, name, b.record(bp=order), fired=[rule])
    fix(
        b,
        rule,
        "out-zoledronic-acid-completed",
        b.record(bp=mr("bp", rxnorm="77655", status="completed")),
        not_fired=[rule],
    )


def _low_estradiol(b: Any) -> None:
    rule = MALE_ONLY_E2
    e2 = b.estradiol
    for name, value, unit, indicator in [
        ("in-19.9-pg-ml-warning", 19.9, "pg/mL", "warning"),
        ("in-10.0-pg-ml-warning", 10.0, "pg/mL", "warning"),
        ("in-9.9-pg-ml-critical", 9.9, "pg/mL", "critical"),
        ("in-73-pmol-l-warning", 73, "pmol/L", "warning"),
        ("in-37-pmol-l-warning", 37, "pmol/L", "warning"),
        ("in-36-pmol-l-critical", 36, "pmol/L", "critical"),
    ]:
        fix(b, rule, name, b.record(e2=e2(value, unit)), cards=[card(rule, indicator, "Low estradiol")])
    for name, value, unit in [("out-20.0-pg-ml", 20.0, "pg/mL"), ("out-74-pmol-l", 74, "pmol/L")]:
        fix(b, rule, name, b.record(e2=e2(value, unit)), not_cards=[rule])
    fix(b, rule, "out-woman-5-pg-ml", b.record(sex="female", e2=e2(5)), not_cards=[rule])
    fix(
        b,
        rule,
        "out-latest-entered-in-error",
        b.record(e2=[e2(8, days_ago=10, rid="e2-new", status="entered-in-error"), e2(32, days_ago=90)]),
        not_cards=[rule],
    )
    fix(
        b,
        rule,
        "out-latest-preliminary",
        b.record(e2=[e2(8, days_ago=10, rid="e2-new", status="preliminary"), e2(32, days_ago=90)]),
        not_cards=[rule],
    )
    fix(
        b,
        rule,
        "in-latest-amended-low",
        b.record(e2=[e2(15, days_ago=10, rid="e2-new", status="amended"), e2(32, days_ago=90)]),
        cards=[card(rule, "warning", "15.0 pg/mL")],
    )
    fix(
        b,
        rule,
        "in-draft-ai-suggests-update-and-delete",
        b.record(ai=b.anastrozole(status="draft"), e2=e2(12)),
        cards=[card(rule, "warning", "anastrozole", actions=["update", "delete"])],
    )
    fix(
        b,
        rule,
        "in-draft-ai-order-select",
        b.record(ai=b.anastrozole(status="draft"), e2=e2(12)),
        hook="order-select",
        cards=[card(rule, "warning", "anastrozole", actions=["update", "delete"])],
    )
    fix(
        b,
        rule,
        "out-unknown-unit-reported",
        b.record(e2=e2(15, "ng/dL"), ai=b.anastrozole(started=b.LONG_COURSE)),
        cards=[card("evaluation-gaps", "info", "could not use", detail_contains="ng/dL"),
               card("estradiol-monitoring-due", "info", "", detail_contains="ng/dL")],
        not_cards=[rule],
    )


def _escalation(b: Any) -> None:
    rule = "low-estradiol-with-bone-loss"
    d = b.dxa
    loose = ["low-estradiol-on-ai", "falling-bone-density", "bone-density-low-on-ai", "osteopenia-on-ai"]
    falling = [d("dxa-old", "hip", "bmd", 0.950, 750), d("dxa-new", "hip", "bmd", 0.900, 20)]
    fix(
        b,
        rule,
        "in-low-e2-and-falling-bmd",
        b.record(ai=b.anastrozole(status="draft"), e2=b.estradiol(14), dxa=falling),
        cards=[card(rule, "critical", "falling bone density", actions=["update", "delete", "create"])],
        not_cards=loose,
        superseded=["falling-bone-density", "low-estradiol-on-ai"],
    )
    fix(
        b,
        rule,
        "in-low-e2-and-osteoporosis-range",
        b.record(e2=b.estradiol(60, "pmol/L"), dxa=d("dxa-1", "femur", "t_score", -2.6, 100)),
        cards=[card(rule, "critical", "osteoporosis range", actions=["create"])],
        not_cards=loose,
        superseded=["bone-density-low-on-ai", "low-estradiol-on-ai"],
    )
    fix(
        b,
        rule,
        "out-low-e2-and-osteopenia",
        b.record(e2=b.estradiol(14), dxa=d("dxa-1", "femur", "t_score", -2.4, 100)),
        cards=[card("low-estradiol-on-ai", "warning"), card("osteopenia-on-ai", "info")],
        not_cards=[rule],
    )
    fix(
        b,
        rule,
        "out-normal-e2-and-falling-bmd",
        b.record(e2=b.estradiol(20), dxa=falling),
        cards=[card("falling-bone-density", "warning")],
        not_cards=[rule],
    )
    fix(
        b,
        rule,
        "out-woman-low-e2-and-osteoporosis",
        b.record(sex="female", e2=b.estradiol(3), dxa=d("dxa-1", "hip", "t_score", -2.7, 100)),
        cards=[card("bone-density-low-on-ai", "warning")],
        not_cards=[rule, "low-estradiol-on-ai"],
    )


def _vitamin_d(b: Any) -> None:
    rule = "vitamin-d-low"
    v = b.vitamin_d
    for name, value, unit, indicator in [
        ("in-19.9-ng-ml-deficient", 19.9, "ng/mL", "warning"),
        ("in-20.0-ng-ml-insufficient", 20.0, "ng/mL", "info"),
        ("in-29.9-ng-ml-insufficient", 29.9, "ng/mL", "info"),
        ("in-49-nmol-l-deficient", 49, "nmol/L", "warning"),
        ("in-50-nmol-l-insufficient", 50, "nmol/L", "info"),
        ("in-74-nmol-l-insufficient", 74, "nmol/L", "info"),
    ]:
        fix(
            b,
            rule,
            name,
            b.record(vitd=v(value, unit)),
            cards=[card(rule, indicator, "Low 25-OH vitamin D", actions=["create"])],
        )
    for name, value, unit in [("out-30.0-ng-ml", 30.0, "ng/mL"), ("out-75-nmol-l", 75, "nmol/L")]:
        fix(b, rule, name, b.record(vitd=v(value, unit)), not_cards=[rule])
    fix(b, rule, "in-woman-12-ng-ml", b.record(sex="female", vitd=v(12)), cards=[card(rule, "warning")])
    fix(
        b,
        rule,
        "in-supplement-being-ordered-no-suggestion",
        b.record(
            vitd=v(15),
            supp=b.med_request("d3", rxnorm="2418", text="cholecalciferol 1000 IU", status="draft"),
        ),
        cards=[card(rule, "warning", "", actions=[])],
    )
    fix(
        b,
        rule,
        "out-latest-entered-in-error",
        b.record(vitd=[v(8, days_ago=5, rid="vitd-new", status="entered-in-error"), v(38, days_ago=60)]),
        not_cards=[rule],
    )

    rule = "vitamin-d-missing"
    fix(
        b,
        rule,
        "in-no-result",
        b.record(vitd=None),
        cards=[card(rule, "info", "No 25-OH vitamin D", actions=["create"])],
    )
    fix(b, rule, "in-366-days-old", b.record(vitd=v(38, days_ago=366)), cards=[card(rule, "info")])
    fix(b, rule, "out-365-days-old", b.record(vitd=v(38, days_ago=365)), not_cards=[rule])
    fix(
        b,
        rule,
        "out-being-ordered",
        b.record(vitd=None, order=b.service_request("sr-d", b.LOINC, "62292-8", "25-OH vitamin D")),
        not_cards=[rule],
    )
    fix(
        b,
        rule,
        "in-only-result-entered-in-error",
        b.record(vitd=v(38, status="entered-in-error")),
        cards=[card(rule, "info")],
        not_cards=["vitamin-d-low"],
    )


def _estradiol_due(b: Any) -> None:
    rule = "estradiol-monitoring-due"
    e2 = b.estradiol
    fix(
        b,
        rule,
        "in-man-no-estradiol",
        b.record(e2=None, ai=b.anastrozole(started=b.LONG_COURSE)),
        cards=[card(rule, "info", "No estradiol", actions=["create"])],
    )
    long_course = b.anastrozole(started=b.LONG_COURSE)
    fix(b, rule, "in-man-366-days", b.record(e2=e2(32, days_ago=366), ai=long_course),
        cards=[card(rule, "info")])
    fix(b, rule, "out-man-365-days", b.record(e2=e2(32, days_ago=365), ai=long_course), not_cards=[rule])
    fix(b, rule, "out-woman-no-estradiol", b.record(sex="female", e2=None), not_cards=[rule])
    fix(
        b,
        rule,
        "out-being-ordered",
        b.record(e2=None, order=b.service_request("sr-e2", b.LOINC, "2243-4", "Estradiol")),
        not_cards=[rule],
    )
    fix(b, rule, "out-not-on-ai", b.record(ai=None, e2=None), not_cards=[rule])


def _gaps(b: Any) -> None:
    rule = "evaluation-gaps"
    fix(
        b,
        rule,
        "in-unknown-vitamin-d-unit",
        b.record(vitd=b.vitamin_d(40, "mg/dL")),
        cards=[
            card(rule, "info", "could not use", detail_contains="mg/dL"),
            card("vitamin-d-missing", "info"),
        ],
    )
    fix(
        b,
        rule,
        "in-value-missing",
        b.record(vitd=b.vitamin_d(None)),
        cards=[card(rule, "info", "", detail_contains="no numeric value"), card("vitamin-d-missing", "info")],
    )
    fix(
        b,
        rule,
        "in-sex-not-recorded",
        b.record(sex=None, e2=b.estradiol(5)),
        cards=[card(rule, "info", "", detail_contains="sex is not recorded")],
        not_cards=[MALE_ONLY_E2],
    )
    fix(
        b,
        rule,
        "in-age-not-recorded",
        b.record(age=None, dxa=b.dxa("dxa-1", "hip", "t_score", -3.0, 100)),
        cards=[card(rule, "info", "", detail_contains="age is not recorded")],
        not_cards=["bone-density-low-on-ai"],
    )
    fix(
        b,
        rule,
        "in-result-for-another-patient",
        b.record(e2=[b.estradiol(32), b.estradiol(5, rid="e2-other", subject="someone-else")]),
        cards=[card(rule, "info", "", detail_contains="different patient")],
        not_cards=[MALE_ONLY_E2],
    )
    fix(
        b,
        rule,
        "in-dxa-unit-unknown",
        b.record(
            dxa=[
                b.dxa("dxa-bg", "lumbar_spine", "t_score", -0.4, 200),
                {
                    **b.dxa("dxa-x", "hip", "bmd", 900, 100),
                    "valueQuantity": {"value": 900, "unit": "mg/cm2", "system": b.UCUM, "code": "mg/cm2"},
                },
            ]
        ),
        cards=[card(rule, "info", "", detail_contains="mg/cm2")],
    )
    fix(b, rule, "out-not-on-ai", b.record(ai=None, vitd=b.vitamin_d(40, "mg/dL")), not_cards=[rule])
