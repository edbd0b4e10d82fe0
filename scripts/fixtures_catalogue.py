"""The fixture catalogue: per rule, records just inside (``in-``) and just outside (``out-``) each boundary.

Read by ``scripts/build_fixtures.py``; ``b`` is that module (resource builders, ``record``, ``fixture``).
Card tuples are ``(rule, indicator, summary_contains, extra)`` where ``extra`` may hold ``actions`` (the
exact list of suggestion action types, in order) and ``detail_contains``.
"""

from __future__ import annotations

from typing import Any

MALE_ONLY_E2 = "low-estradiol-on-ai"


def define(b: Any) -> None:
    _aromatase_inhibitor(b)
    _other_medications(b)
    _low_estradiol(b)
    _falling(b)
    _bands(b)
    _escalation(b)
    _vitamin_d(b)
    _dxa_due(b)
    _estradiol_due(b)
    _gaps(b)


def card(rule: str, indicator: str, summary: str = "", **extra: Any) -> tuple:
    return (rule, indicator, summary, extra) if extra else (rule, indicator, summary)


def _fix(
    b: Any, rule: str, name: str, resources: list, cards: list = (), not_cards: list = (), **kw: Any
) -> None:
    extra = {}
    for c in cards:
        if len(c) > 3:
            extra[c[0]] = c[3]
    b.fixture(rule, name, resources, cards=[c[:3] for c in cards], not_cards=not_cards, **kw)
    if extra:  # fold the extra checks into the expected card entries
        expected = b.FIXTURES[-1][3]
        for item in expected["cards"]:
            item.update(extra.get(item["rule"], {}))


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
        _fix(b, rule, name, b.record(ai=order), fired=[rule], derived=[{"t": "on_ai", "matched_by": how}])
    _fix(
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
    _fix(
        b,
        rule,
        "in-draft-order",
        b.record(ai=b.anastrozole(status="draft")),
        fired=[rule],
        derived=[{"t": "on_ai", "draft": True}],
    )
    for status in ("stopped", "entered-in-error", "completed"):
        _fix(
            b,
            rule,
            f"out-{status}",
            b.record(ai=b.anastrozole(status=status)),
            not_fired=[rule],
            not_cards=["evaluation-gaps"],
        )
    _fix(
        b,
        rule,
        "out-tamoxifen",
        b.record(ai=mr("tam", rxnorm="10324", display="tamoxifen")),
        not_fired=[rule],
    )


def _other_medications(b: Any) -> None:
    mr = b.med_request
    rule = "on-testosterone-therapy"
    _fix(
        b,
        rule,
        "in-testosterone-cypionate",
        b.record(trt=mr("trt", rxnorm="835840", display="testosterone cypionate 200 MG/ML")),
        fired=[rule],
        derived=[{"t": "on_trt", "ingredient": "testosterone"}],
    )
    _fix(
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
        _fix(b, rule, name, b.record(bp=order), fired=[rule])
    _fix(
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
        _fix(b, rule, name, b.record(e2=e2(value, unit)), cards=[card(rule, indicator, "Low estradiol")])
    for name, value, unit in [("out-20.0-pg-ml", 20.0, "pg/mL"), ("out-74-pmol-l", 74, "pmol/L")]:
        _fix(b, rule, name, b.record(e2=e2(value, unit)), not_cards=[rule])
    _fix(b, rule, "out-woman-5-pg-ml", b.record(sex="female", e2=e2(5)), not_cards=[rule])
    _fix(
        b,
        rule,
        "out-latest-entered-in-error",
        b.record(e2=[e2(8, days_ago=10, rid="e2-new", status="entered-in-error"), e2(32, days_ago=90)]),
        not_cards=[rule],
    )
    _fix(
        b,
        rule,
        "out-latest-preliminary",
        b.record(e2=[e2(8, days_ago=10, rid="e2-new", status="preliminary"), e2(32, days_ago=90)]),
        not_cards=[rule],
    )
    _fix(
        b,
        rule,
        "in-latest-amended-low",
        b.record(e2=[e2(15, days_ago=10, rid="e2-new", status="amended"), e2(32, days_ago=90)]),
        cards=[card(rule, "warning", "15.0 pg/mL")],
    )
    _fix(
        b,
        rule,
        "in-draft-ai-suggests-update-and-delete",
        b.record(ai=b.anastrozole(status="draft"), e2=e2(12)),
        cards=[card(rule, "warning", "anastrozole", actions=["update", "delete"])],
    )
    _fix(
        b,
        rule,
        "in-draft-ai-order-select",
        b.record(ai=b.anastrozole(status="draft"), e2=e2(12)),
        hook="order-select",
        cards=[card(rule, "warning", "anastrozole", actions=["update", "delete"])],
    )
    _fix(
        b,
        rule,
        "out-unknown-unit-reported",
        b.record(e2=e2(15, "ng/dL")),
        cards=[card("evaluation-gaps", "info", "could not use", detail_contains="ng/dL")],
        not_cards=[rule],
    )


SITES_BMD = ["lumbar_spine", "hip", "hip_left", "hip_right", "femur", "femur_left", "femur_right", "forearm"]
SITES_T = SITES_BMD + ["forearm_left", "forearm_right"]


def _falling(b: Any) -> None:
    rule = "falling-bone-density"
    d = b.dxa

    def pair(site: str, kind: str, before: float, after: float) -> list:
        return [d("dxa-old", site, kind, before, 750), d("dxa-new", site, kind, after, 20)]

    _fix(
        b,
        rule,
        "in-bmd-percent-3.0",
        b.record(dxa=pair("lumbar_spine", "bmd", 0.800, 0.776)),
        cards=[card(rule, "warning", "Lumbar spine", detail_contains="-3.0 %")],
    )
    _fix(
        b,
        rule,
        "out-bmd-percent-2.9",
        b.record(dxa=pair("lumbar_spine", "bmd", 0.800, 0.7768)),
        not_cards=[rule],
    )
    _fix(
        b,
        rule,
        "in-bmd-absolute-0.030",
        b.record(dxa=pair("hip", "bmd", 1.200, 1.170)),
        cards=[card(rule, "warning", "Total hip")],
    )
    _fix(b, rule, "out-bmd-absolute-0.029", b.record(dxa=pair("hip", "bmd", 1.200, 1.171)), not_cards=[rule])
    _fix(
        b,
        rule,
        "in-t-score-only-drop-0.3",
        b.record(dxa=pair("lumbar_spine", "t_score", 0.5, 0.2)),
        cards=[card(rule, "warning", "Lumbar spine", detail_contains="T-score 0.5 to 0.2")],
    )
    _fix(
        b,
        rule,
        "out-t-score-only-drop-0.2",
        b.record(dxa=pair("lumbar_spine", "t_score", 0.5, 0.3)),
        not_cards=[rule],
    )
    _fix(
        b,
        rule,
        "out-bmd-stable-t-score-falls",
        b.record(
            dxa=pair("hip", "bmd", 1.200, 1.190)
            + [d("t-old", "hip", "t_score", 0.6, 750), d("t-new", "hip", "t_score", 0.1, 20)]
        ),
        not_cards=[rule],
    )
    _fix(
        b,
        rule,
        "out-different-sites",
        b.record(dxa=[d("dxa-old", "lumbar_spine", "bmd", 1.0, 750), d("dxa-new", "hip", "bmd", 0.8, 20)]),
        not_cards=[rule],
    )
    _fix(
        b,
        rule,
        "out-left-and-right-hip-not-compared",
        b.record(dxa=[d("dxa-old", "hip_left", "bmd", 1.0, 750), d("dxa-new", "hip_right", "bmd", 0.8, 20)]),
        not_cards=[rule],
    )
    _fix(
        b,
        rule,
        "out-later-scan-entered-in-error",
        b.record(
            dxa=[
                d("dxa-old", "hip", "bmd", 1.0, 750),
                d("dxa-new", "hip", "bmd", 0.8, 20, status="entered-in-error"),
            ]
        ),
        cards=[card("dxa-overdue", "info")],
        not_cards=[rule],
    )
    _fix(b, rule, "out-not-on-ai", b.record(ai=None, dxa=pair("hip", "bmd", 1.0, 0.8)), not_cards=[rule])
    for site in SITES_BMD:
        _fix(
            b,
            rule,
            f"in-bmd-{site.replace('_', '-')}",
            b.record(dxa=pair(site, "bmd", 0.900, 0.850)),
            cards=[card(rule, "warning", b.VS["dxa"][site]["title"])],
        )
    for site in SITES_T:
        _fix(
            b,
            rule,
            f"in-t-score-{site.replace('_', '-')}",
            b.record(dxa=pair(site, "t_score", 0.4, 0.0)),
            cards=[card(rule, "warning", b.VS["dxa"][site]["title"])],
        )
    _fix(
        b,
        rule,
        "in-spine-t-score-2025-code",
        b.record(
            dxa=[
                d("dxa-old", "lumbar_spine", "t_score", 0.4, 750, code="104938-6"),
                d("dxa-new", "lumbar_spine", "t_score", 0.0, 20, code="104938-6"),
            ]
        ),
        cards=[card(rule, "warning", "Lumbar spine")],
    )


def _bands(b: Any) -> None:
    d = b.dxa
    low, osteo = "bone-density-low-on-ai", "osteopenia-on-ai"

    def t(value: float, site: str = "lumbar_spine") -> Any:
        return d("dxa-1", site, "t_score", value, 100)

    rule = "bone-density-osteoporosis-range"
    _fix(
        b,
        rule,
        "in-man-50-t-minus-2.5",
        b.record(age=50, dxa=t(-2.5)),
        fired=[rule],
        cards=[card(low, "warning", "T-score -2.5")],
    )
    _fix(
        b,
        rule,
        "out-man-50-t-minus-2.4",
        b.record(age=50, dxa=t(-2.4)),
        not_fired=[rule],
        cards=[card(osteo, "info", "T-score -2.4")],
    )
    _fix(b, rule, "out-man-49-t-minus-3.0", b.record(age=49, dxa=t(-3.0)), not_fired=[rule], not_cards=[low])
    _fix(
        b,
        rule,
        "in-woman-t-minus-2.5",
        b.record(sex="female", age=58, dxa=t(-2.5)),
        fired=[rule],
        cards=[card(low, "warning", "T-score -2.5")],
    )
    for site in SITES_T:
        _fix(
            b,
            rule,
            f"in-{site.replace('_', '-')}",
            b.record(dxa=t(-2.8, site)),
            fired=[rule],
            cards=[card(low, "warning", b.VS["dxa"][site]["title"])],
        )

    rule = "bone-density-osteopenia-range"
    _fix(
        b,
        rule,
        "in-man-t-minus-1.1",
        b.record(dxa=t(-1.1)),
        fired=[rule],
        cards=[card(osteo, "info", "-1.1")],
    )
    _fix(b, rule, "out-man-t-minus-1.0", b.record(dxa=t(-1.0)), not_fired=[rule], not_cards=[osteo])
    _fix(
        b,
        rule,
        "in-woman-t-minus-2.0",
        b.record(sex="female", dxa=t(-2.0)),
        fired=[rule],
        cards=[card(osteo, "info", "-2")],
    )
    _fix(
        b,
        osteo,
        "out-man-on-alendronate",
        b.record(dxa=t(-1.8), bp=b.med_request("bp", rxnorm="904431")),
        fired=["bone-density-osteopenia-range"],
        not_cards=[osteo],
    )

    rule = "bone-density-ai-treatment-threshold"
    _fix(
        b,
        rule,
        "in-woman-t-minus-2.1",
        b.record(sex="female", dxa=t(-2.1)),
        fired=[rule],
        cards=[card(low, "warning", "AI treatment threshold")],
        superseded=[osteo],
    )
    _fix(
        b,
        rule,
        "out-woman-t-minus-2.0",
        b.record(sex="female", dxa=t(-2.0)),
        not_fired=[rule],
        cards=[card(osteo, "info")],
    )
    _fix(b, rule, "out-man-t-minus-2.1", b.record(dxa=t(-2.1)), not_fired=[rule], cards=[card(osteo, "info")])
    _fix(
        b,
        rule,
        "in-woman-45-default-proxy",
        b.record(sex="female", age=45, dxa=t(-2.1)),
        fired=[rule],
        cards=[card(low, "warning")],
    )
    _fix(
        b,
        rule,
        "out-woman-45-site-proxy-50",
        b.record(sex="female", age=45, dxa=t(-2.1)),
        not_fired=[rule],
        not_cards=[low],
        site_config={"thresholds": {"postmenopausal_proxy_age": 50}},
    )

    rule = "bone-density-below-expected-for-age"

    def z(value: float) -> list:
        return [
            d("dxa-1", "lumbar_spine", "z_score", value, 100),
            d("dxa-2", "lumbar_spine", "t_score", -0.8, 100),
        ]

    _fix(
        b,
        rule,
        "in-man-49-z-minus-2.0",
        b.record(age=49, dxa=z(-2.0)),
        fired=[rule],
        cards=[card(low, "warning", "Z-score -2")],
    )
    _fix(b, rule, "out-man-49-z-minus-1.9", b.record(age=49, dxa=z(-1.9)), not_fired=[rule], not_cards=[low])
    _fix(b, rule, "out-man-50-z-minus-2.5", b.record(age=50, dxa=z(-2.5)), not_fired=[rule], not_cards=[low])
    _fix(
        b,
        rule,
        "in-woman-45-z-minus-2.0-site-proxy-50",
        b.record(sex="female", age=45, dxa=z(-2.0)),
        fired=[rule],
        cards=[card(low, "warning", "Z-score")],
        site_config={"thresholds": {"postmenopausal_proxy_age": 50}},
    )

    rule = "bone-at-risk-from-low-density"
    _fix(
        b,
        rule,
        "in-osteoporosis-range",
        b.record(dxa=t(-2.5)),
        fired=[rule],
        derived=[{"t": "bone_at_risk", "what": "osteoporosis range", "measure": "T-score -2.5"}],
        cards=[card(low, "warning")],
    )
    _fix(
        b,
        rule,
        "in-below-expected-for-age",
        b.record(age=40, dxa=z(-2.4)),
        fired=[rule],
        derived=[{"t": "bone_at_risk", "measure": "Z-score -2.4"}],
        cards=[card(low, "warning")],
    )
    _fix(
        b, rule, "out-osteopenia-range", b.record(dxa=t(-2.4)), not_fired=[rule], cards=[card(osteo, "info")]
    )
    _fix(
        b,
        rule,
        "out-woman-ai-treatment-threshold-only",
        b.record(sex="female", dxa=t(-2.2)),
        not_fired=[rule],
        cards=[card(low, "warning")],
    )

    rule = low
    _fix(
        b,
        rule,
        "in-osteoporosis-no-therapy",
        b.record(dxa=t(-2.9)),
        cards=[card(low, "warning", "no bone-protective therapy", actions=["create"])],
    )
    _fix(
        b,
        rule,
        "out-on-denosumab",
        b.record(dxa=t(-2.9), bp=b.med_request("bp", rxnorm="993452")),
        not_cards=[low],
    )
    _fix(
        b,
        rule,
        "out-alendronate-being-ordered",
        b.record(dxa=t(-2.9), bp=b.med_request("bp", rxnorm="904431", status="draft")),
        not_cards=[low],
    )
    _fix(b, rule, "out-not-on-ai", b.record(ai=None, dxa=t(-2.9)), not_cards=[low])
    rule = osteo
    _fix(
        b, rule, "in-osteopenia-no-therapy", b.record(dxa=t(-1.5)), cards=[card(osteo, "info", "Osteopenia")]
    )
    _fix(b, rule, "out-normal-t-score", b.record(dxa=t(-0.9)), not_cards=[osteo])
    _fix(
        b,
        rule,
        "out-on-raloxifene",
        b.record(sex="female", dxa=t(-1.5), bp=b.med_request("bp", rxnorm="1490065")),
        not_cards=[osteo],
    )


def _escalation(b: Any) -> None:
    rule = "low-estradiol-with-bone-loss"
    d = b.dxa
    loose = ["low-estradiol-on-ai", "falling-bone-density", "bone-density-low-on-ai", "osteopenia-on-ai"]
    falling = [d("dxa-old", "hip", "bmd", 0.950, 750), d("dxa-new", "hip", "bmd", 0.900, 20)]
    _fix(
        b,
        rule,
        "in-low-e2-and-falling-bmd",
        b.record(ai=b.anastrozole(status="draft"), e2=b.estradiol(14), dxa=falling),
        cards=[card(rule, "critical", "falling bone density", actions=["update", "delete", "create"])],
        not_cards=loose,
        superseded=["falling-bone-density", "low-estradiol-on-ai"],
    )
    _fix(
        b,
        rule,
        "in-low-e2-and-osteoporosis-range",
        b.record(e2=b.estradiol(60, "pmol/L"), dxa=d("dxa-1", "femur", "t_score", -2.6, 100)),
        cards=[card(rule, "critical", "osteoporosis range", actions=["create"])],
        not_cards=loose,
        superseded=["bone-density-low-on-ai", "low-estradiol-on-ai"],
    )
    _fix(
        b,
        rule,
        "out-low-e2-and-osteopenia",
        b.record(e2=b.estradiol(14), dxa=d("dxa-1", "femur", "t_score", -2.4, 100)),
        cards=[card("low-estradiol-on-ai", "warning"), card("osteopenia-on-ai", "info")],
        not_cards=[rule],
    )
    _fix(
        b,
        rule,
        "out-normal-e2-and-falling-bmd",
        b.record(e2=b.estradiol(20), dxa=falling),
        cards=[card("falling-bone-density", "warning")],
        not_cards=[rule],
    )
    _fix(
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
        _fix(
            b,
            rule,
            name,
            b.record(vitd=v(value, unit)),
            cards=[card(rule, indicator, "Low 25-OH vitamin D", actions=["create"])],
        )
    for name, value, unit in [("out-30.0-ng-ml", 30.0, "ng/mL"), ("out-75-nmol-l", 75, "nmol/L")]:
        _fix(b, rule, name, b.record(vitd=v(value, unit)), not_cards=[rule])
    _fix(b, rule, "in-woman-12-ng-ml", b.record(sex="female", vitd=v(12)), cards=[card(rule, "warning")])
    _fix(
        b,
        rule,
        "in-supplement-being-ordered-no-suggestion",
        b.record(
            vitd=v(15),
            supp=b.med_request("d3", rxnorm="2418", text="cholecalciferol 1000 IU", status="draft"),
        ),
        cards=[card(rule, "warning", "", actions=[])],
    )
    _fix(
        b,
        rule,
        "out-latest-entered-in-error",
        b.record(vitd=[v(8, days_ago=5, rid="vitd-new", status="entered-in-error"), v(38, days_ago=60)]),
        not_cards=[rule],
    )

    rule = "vitamin-d-missing"
    _fix(
        b,
        rule,
        "in-no-result",
        b.record(vitd=None),
        cards=[card(rule, "info", "No 25-OH vitamin D", actions=["create"])],
    )
    _fix(b, rule, "in-366-days-old", b.record(vitd=v(38, days_ago=366)), cards=[card(rule, "info")])
    _fix(b, rule, "out-365-days-old", b.record(vitd=v(38, days_ago=365)), not_cards=[rule])
    _fix(
        b,
        rule,
        "out-being-ordered",
        b.record(vitd=None, order=b.service_request("sr-d", b.LOINC, "62292-8", "25-OH vitamin D")),
        not_cards=[rule],
    )
    _fix(
        b,
        rule,
        "in-only-result-entered-in-error",
        b.record(vitd=v(38, status="entered-in-error")),
        cards=[card(rule, "info")],
        not_cards=["vitamin-d-low"],
    )
    _fix(
        b,
        rule,
        "out-recent-result-unknown-unit",
        b.record(vitd=v(38, "IU/mL")),
        cards=[card("evaluation-gaps", "info", "", detail_contains="IU/mL")],
        not_cards=[rule],
    )


def _dxa_due(b: Any) -> None:
    d = b.dxa
    rule = "dxa-baseline-missing"
    _fix(b, rule, "in-no-dxa", b.record(dxa=None), cards=[card(rule, "info", "No DXA", actions=["create"])])
    _fix(
        b,
        rule,
        "out-dxa-being-ordered",
        b.record(dxa=None, order=b.service_request("sr-dxa", b.SNOMED, "312681000", "DXA scan")),
        not_cards=[rule],
    )
    _fix(b, rule, "out-dxa-on-record", b.record(), not_cards=[rule])
    _fix(
        b,
        rule,
        "in-only-dxa-entered-in-error",
        b.record(dxa=d("dxa-1", "hip", "t_score", -0.5, 100, status="entered-in-error")),
        cards=[card(rule, "info")],
    )

    rule = "dxa-overdue"
    _fix(
        b,
        rule,
        "in-731-days",
        b.record(dxa=d("dxa-1", "hip", "t_score", -0.5, 731)),
        cards=[card(rule, "info", "DXA overdue", actions=["create"])],
    )
    _fix(b, rule, "out-730-days", b.record(dxa=d("dxa-1", "hip", "t_score", -0.5, 730)), not_cards=[rule])
    _fix(
        b,
        rule,
        "out-other-site-recent",
        b.record(dxa=[d("dxa-1", "hip", "t_score", -0.5, 900), d("dxa-2", "forearm", "t_score", -0.5, 100)]),
        not_cards=[rule],
    )
    _fix(
        b,
        rule,
        "out-being-ordered-by-loinc",
        b.record(
            dxa=d("dxa-1", "hip", "t_score", -0.5, 900),
            order=b.service_request("sr-dxa", b.LOINC, "38267-1", "DXA lumbar spine"),
        ),
        not_cards=[rule],
    )

    rule = "dxa-overdue-low-bone-density"
    _fix(
        b,
        rule,
        "in-osteopenia-366-days",
        b.record(dxa=d("dxa-1", "hip", "t_score", -1.6, 366)),
        cards=[card(rule, "info", "osteopenia range"), card("osteopenia-on-ai", "info")],
    )
    _fix(
        b,
        rule,
        "out-osteopenia-365-days",
        b.record(dxa=d("dxa-1", "hip", "t_score", -1.6, 365)),
        cards=[card("osteopenia-on-ai", "info")],
        not_cards=[rule],
    )
    _fix(
        b,
        rule,
        "in-osteopenia-800-days-sets-aside-general",
        b.record(dxa=d("dxa-1", "hip", "t_score", -1.6, 800)),
        cards=[card(rule, "info"), card("osteopenia-on-ai", "info")],
        not_cards=["dxa-overdue"],
        superseded=["dxa-overdue"],
    )
    _fix(
        b,
        rule,
        "out-normal-366-days",
        b.record(dxa=d("dxa-1", "hip", "t_score", -0.6, 366)),
        not_cards=[rule],
    )


def _estradiol_due(b: Any) -> None:
    rule = "estradiol-monitoring-due"
    e2 = b.estradiol
    _fix(
        b,
        rule,
        "in-man-no-estradiol",
        b.record(e2=None),
        cards=[card(rule, "info", "No estradiol", actions=["create"])],
    )
    _fix(b, rule, "in-man-366-days", b.record(e2=e2(32, days_ago=366)), cards=[card(rule, "info")])
    _fix(b, rule, "out-man-365-days", b.record(e2=e2(32, days_ago=365)), not_cards=[rule])
    _fix(b, rule, "out-woman-no-estradiol", b.record(sex="female", e2=None), not_cards=[rule])
    _fix(
        b,
        rule,
        "out-being-ordered",
        b.record(e2=None, order=b.service_request("sr-e2", b.LOINC, "2243-4", "Estradiol")),
        not_cards=[rule],
    )
    _fix(b, rule, "out-not-on-ai", b.record(ai=None, e2=None), not_cards=[rule])


def _gaps(b: Any) -> None:
    rule = "evaluation-gaps"
    _fix(
        b,
        rule,
        "in-unknown-vitamin-d-unit",
        b.record(vitd=b.vitamin_d(40, "mg/dL")),
        cards=[card(rule, "info", "could not use", detail_contains="mg/dL")],
    )
    _fix(
        b,
        rule,
        "in-value-missing",
        b.record(vitd=b.vitamin_d(None)),
        cards=[card(rule, "info", "", detail_contains="no numeric value")],
    )
    _fix(
        b,
        rule,
        "in-sex-not-recorded",
        b.record(sex=None, e2=b.estradiol(5)),
        cards=[card(rule, "info", "", detail_contains="sex is not recorded")],
        not_cards=[MALE_ONLY_E2],
    )
    _fix(
        b,
        rule,
        "in-age-not-recorded",
        b.record(age=None, dxa=b.dxa("dxa-1", "hip", "t_score", -3.0, 100)),
        cards=[card(rule, "info", "", detail_contains="age is not recorded")],
        not_cards=["bone-density-low-on-ai"],
    )
    _fix(
        b,
        rule,
        "in-result-for-another-patient",
        b.record(e2=[b.estradiol(32), b.estradiol(5, rid="e2-other", subject="someone-else")]),
        cards=[card(rule, "info", "", detail_contains="different patient")],
        not_cards=[MALE_ONLY_E2],
    )
    _fix(
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
    _fix(b, rule, "out-not-on-ai", b.record(ai=None, vitd=b.vitamin_d(40, "mg/dL")), not_cards=[rule])
