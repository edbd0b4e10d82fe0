"""Fixture catalogue, DXA part: falling bone density at every site, T-/Z-score bands, escalation, DXA due.

Read through ``fixtures_catalogue.define``; ``b`` is ``scripts/build_fixtures.py``.
"""

from __future__ import annotations

from typing import Any

from fixtures_common import card, fix


def define(b: Any) -> None:
    _falling(b)
    _bands(b)
    _dxa_due(b)


SITES_BMD = ["lumbar_spine", "hip", "hip_left", "hip_right", "femur", "femur_left", "femur_right", "forearm"]
SITES_T = SITES_BMD + ["forearm_left", "forearm_right"]


def _falling(b: Any) -> None:
    rule = "falling-bone-density"
    d = b.dxa

    def pair(site: str, kind: str, before: float, after: float) -> list:
        return [d("dxa-old", site, kind, before, 750), d("dxa-new", site, kind, after, 20)]

    fix(
        b,
        rule,
        "in-bmd-percent-3.0",
        b.record(dxa=pair("lumbar_spine", "bmd", 0.800, 0.776)),
        cards=[card(rule, "warning", "Lumbar spine", detail_contains="-3.0 %")],
    )
    fix(
        b,
        rule,
        "out-bmd-percent-2.9",
        b.record(dxa=pair("lumbar_spine", "bmd", 0.800, 0.7768)),
        not_cards=[rule],
    )
    fix(
        b,
        rule,
        "in-bmd-absolute-0.030",
        b.record(dxa=pair("hip", "bmd", 1.200, 1.170)),
        cards=[card(rule, "warning", "Total hip")],
    )
    fix(b, rule, "out-bmd-absolute-0.029", b.record(dxa=pair("hip", "bmd", 1.200, 1.171)), not_cards=[rule])
    fix(
        b,
        rule,
        "in-t-score-only-drop-0.3",
        b.record(dxa=pair("lumbar_spine", "t_score", 0.5, 0.2)),
        cards=[card(rule, "warning", "Lumbar spine", detail_contains="T-score 0.5 to 0.2")],
    )
    fix(
        b,
        rule,
        "out-t-score-only-drop-0.2",
        b.record(dxa=pair("lumbar_spine", "t_score", 0.5, 0.3)),
        not_cards=[rule],
    )
    fix(
        b,
        rule,
        "out-bmd-stable-t-score-falls",
        b.record(
            dxa=pair("hip", "bmd", 1.200, 1.190)
            + [d("t-old", "hip", "t_score", 0.6, 750), d("t-new", "hip", "t_score", 0.1, 20)]
        ),
        not_cards=[rule],
    )
    fix(
        b,
        rule,
        "out-different-sites",
        b.record(dxa=[d("dxa-old", "lumbar_spine", "bmd", 1.0, 750), d("dxa-new", "hip", "bmd", 0.8, 20)]),
        not_cards=[rule],
    )
    fix(
        b,
        rule,
        "out-left-and-right-hip-not-compared",
        b.record(dxa=[d("dxa-old", "hip_left", "bmd", 1.0, 750), d("dxa-new", "hip_right", "bmd", 0.8, 20)]),
        not_cards=[rule],
    )
    fix(
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
    fix(b, rule, "out-not-on-ai", b.record(ai=None, dxa=pair("hip", "bmd", 1.0, 0.8)), not_cards=[rule])
    for site in SITES_BMD:
        fix(
            b,
            rule,
            f"in-bmd-{site.replace('_', '-')}",
            b.record(dxa=pair(site, "bmd", 0.900, 0.850)),
            cards=[card(rule, "warning", b.VS["dxa"][site]["title"])],
        )
    for site in SITES_T:
        fix(
            b,
            rule,
            f"in-t-score-{site.replace('_', '-')}",
            b.record(dxa=pair(site, "t_score", 0.4, 0.0)),
            cards=[card(rule, "warning", b.VS["dxa"][site]["title"])],
        )
    fix(
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
    fix(
        b,
        rule,
        "in-man-50-t-minus-2.5",
        b.record(age=50, dxa=t(-2.5)),
        fired=[rule],
        cards=[card(low, "warning", "T-score -2.5")],
    )
    fix(
        b,
        rule,
        "out-man-50-t-minus-2.4",
        b.record(age=50, dxa=t(-2.4)),
        not_fired=[rule],
        cards=[card(osteo, "info", "T-score -2.4")],
    )
    fix(b, rule, "out-man-49-t-minus-3.0", b.record(age=49, dxa=t(-3.0)), not_fired=[rule], not_cards=[low])
    fix(
        b,
        rule,
        "in-woman-t-minus-2.5",
        b.record(sex="female", age=58, dxa=t(-2.5)),
        fired=[rule],
        cards=[card(low, "warning", "T-score -2.5")],
    )
    for site in SITES_T:
        fix(
            b,
            rule,
            f"in-{site.replace('_', '-')}",
            b.record(dxa=t(-2.8, site)),
            fired=[rule],
            cards=[card(low, "warning", b.VS["dxa"][site]["title"])],
        )

    rule = "bone-density-osteopenia-range"
    fix(
        b,
        rule,
        "in-man-t-minus-1.1",
        b.record(dxa=t(-1.1)),
        fired=[rule],
        cards=[card(osteo, "info", "-1.1")],
    )
    fix(b, rule, "out-man-t-minus-1.0", b.record(dxa=t(-1.0)), not_fired=[rule], not_cards=[osteo])
    fix(
        b,
        rule,
        "in-woman-t-minus-2.0",
        b.record(sex="female", dxa=t(-2.0)),
        fired=[rule],
        cards=[card(osteo, "info", "-2")],
    )
    fix(
        b,
        osteo,
        "out-man-on-alendronate",
        b.record(dxa=t(-1.8), bp=b.med_request("bp", rxnorm="904431")),
        fired=["bone-density-osteopenia-range"],
        not_cards=[osteo],
    )

    rule = "bone-density-ai-treatment-threshold"
    fix(
        b,
        rule,
        "in-woman-t-minus-2.1",
        b.record(sex="female", dxa=t(-2.1)),
        fired=[rule],
        cards=[card(low, "warning", "AI treatment threshold")],
        superseded=[osteo],
    )
    fix(
        b,
        rule,
        "out-woman-t-minus-2.0",
        b.record(sex="female", dxa=t(-2.0)),
        not_fired=[rule],
        cards=[card(osteo, "info")],
    )
    fix(b, rule, "out-man-t-minus-2.1", b.record(dxa=t(-2.1)), not_fired=[rule], cards=[card(osteo, "info")])
    fix(
        b,
        rule,
        "in-woman-45-default-proxy",
        b.record(sex="female", age=45, dxa=t(-2.1)),
        fired=[rule],
        cards=[card(low, "warning")],
    )
    fix(
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

    fix(
        b,
        rule,
        "in-man-49-z-minus-2.0",
        b.record(age=49, dxa=z(-2.0)),
        fired=[rule],
        cards=[card(low, "warning", "Z-score -2")],
    )
    fix(b, rule, "out-man-49-z-minus-1.9", b.record(age=49, dxa=z(-1.9)), not_fired=[rule], not_cards=[low])
    fix(b, rule, "out-man-50-z-minus-2.5", b.record(age=50, dxa=z(-2.5)), not_fired=[rule], not_cards=[low])
    fix(
        b,
        rule,
        "in-woman-45-z-minus-2.0-site-proxy-50",
        b.record(sex="female", age=45, dxa=z(-2.0)),
        fired=[rule],
        cards=[card(low, "warning", "Z-score")],
        site_config={"thresholds": {"postmenopausal_proxy_age": 50}},
    )

    rule = "bone-at-risk-from-low-density"
    fix(
        b,
        rule,
        "in-osteoporosis-range",
        b.record(dxa=t(-2.5)),
        fired=[rule],
        derived=[{"t": "bone_at_risk", "what": "osteoporosis range", "measure": "T-score -2.5"}],
        cards=[card(low, "warning")],
    )
    fix(
        b,
        rule,
        "in-below-expected-for-age",
        b.record(age=40, dxa=z(-2.4)),
        fired=[rule],
        derived=[{"t": "bone_at_risk", "measure": "Z-score -2.4"}],
        cards=[card(low, "warning")],
    )
    fix(b, rule, "out-osteopenia-range", b.record(dxa=t(-2.4)), not_fired=[rule], cards=[card(osteo, "info")])
    fix(
        b,
        rule,
        "out-woman-ai-treatment-threshold-only",
        b.record(sex="female", dxa=t(-2.2)),
        not_fired=[rule],
        cards=[card(low, "warning")],
    )

    rule = low
    fix(
        b,
        rule,
        "in-osteoporosis-no-therapy",
        b.record(dxa=t(-2.9)),
        cards=[card(low, "warning", "no bone-protective therapy", actions=["create"])],
    )
    fix(
        b,
        rule,
        "out-on-denosumab",
        b.record(dxa=t(-2.9), bp=b.med_request("bp", rxnorm="993452")),
        not_cards=[low],
    )
    fix(
        b,
        rule,
        "out-alendronate-being-ordered",
        b.record(dxa=t(-2.9), bp=b.med_request("bp", rxnorm="904431", status="draft")),
        cards=[card("oral-bisphosphonate-order-reminder", "info", "calcium and vitamin D intake")],
        not_cards=[low],
    )
    fix(b, rule, "out-not-on-ai", b.record(ai=None, dxa=t(-2.9)), not_cards=[low])
    rule = osteo
    fix(b, rule, "in-osteopenia-no-therapy", b.record(dxa=t(-1.5)), cards=[card(osteo, "info", "Osteopenia")])
    fix(b, rule, "out-normal-t-score", b.record(dxa=t(-0.9)), not_cards=[osteo])
    fix(
        b,
        rule,
        "out-on-raloxifene",
        b.record(dxa=t(-1.5), bp=b.med_request("bp", rxnorm="1490065")),  # a man: for a woman on an AI, see
        # fixtures_ai_course (a SERM is not bone protection for her)
        not_cards=[osteo],
    )


def _dxa_due(b: Any) -> None:
    d = b.dxa
    rule = "dxa-baseline-missing"
    fix(b, rule, "in-no-dxa", b.record(dxa=None), cards=[card(rule, "info", "No DXA", actions=["create"])])
    fix(
        b,
        rule,
        "out-dxa-being-ordered",
        b.record(dxa=None, order=b.service_request("sr-dxa", b.SNOMED, "312681000", "DXA scan")),
        not_cards=[rule],
    )
    fix(b, rule, "out-dxa-on-record", b.record(), not_cards=[rule])
    fix(
        b,
        rule,
        "in-only-dxa-entered-in-error",
        b.record(dxa=d("dxa-1", "hip", "t_score", -0.5, 100, status="entered-in-error")),
        cards=[card(rule, "info")],
    )

    rule = "dxa-overdue"
    fix(
        b,
        rule,
        "in-731-days",
        b.record(dxa=d("dxa-1", "hip", "t_score", -0.5, 731)),
        cards=[card(rule, "info", "DXA overdue", actions=["create"])],
    )
    fix(b, rule, "out-730-days", b.record(dxa=d("dxa-1", "hip", "t_score", -0.5, 730)), not_cards=[rule])
    fix(
        b,
        rule,
        "out-other-site-recent",
        b.record(dxa=[d("dxa-1", "hip", "t_score", -0.5, 900), d("dxa-2", "forearm", "t_score", -0.5, 100)]),
        not_cards=[rule],
    )
    fix(
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
    fix(
        b,
        rule,
        "in-osteopenia-366-days",
        b.record(dxa=d("dxa-1", "hip", "t_score", -1.6, 366)),
        cards=[card(rule, "info", "osteopenia range"), card("osteopenia-on-ai", "info")],
    )
    fix(
        b,
        rule,
        "out-osteopenia-365-days",
        b.record(dxa=d("dxa-1", "hip", "t_score", -1.6, 365)),
        cards=[card("osteopenia-on-ai", "info")],
        not_cards=[rule],
    )
    fix(
        b,
        rule,
        "in-osteopenia-800-days-sets-aside-general",
        b.record(dxa=d("dxa-1", "hip", "t_score", -1.6, 800)),
        cards=[card(rule, "info"), card("osteopenia-on-ai", "info")],
        not_cards=["dxa-overdue"],
        superseded=["dxa-overdue"],
    )
    fix(
        b,
        rule,
        "out-normal-366-days",
        b.record(dxa=d("dxa-1", "hip", "t_score", -0.6, 366)),
        not_cards=[rule],
    )
