"""The catalogue for testosterone and calcium monitoring and the order-time checks of bone-directed therapy.

Called from ``fixtures_catalogue.define``; ``b`` is ``scripts/build_fixtures.py``. Results are in the shapes
laboratories send (US Core laboratory pattern; units as text only; dataAbsentReason).
"""

from __future__ import annotations

from typing import Any

from fixtures_common import card, fix

TARGET = "testosterone-against-target"
DUE = "testosterone-monitoring-due"
FIRST = "testosterone-first-check-due"
CA_DUE = "calcium-monitoring-due"
CA_LOW = "calcium-low-on-ai"
ORDER = "bone-drug-order-check"
ORAL = "oral-bisphosphonate-order-reminder"


def define(b: Any) -> None:
    first = len(b.FIXTURES)
    _testosterone(b)
    _calcium(b)
    _order_time(b)
    _derived(b)
    for rule, name, _resources, expected in b.FIXTURES[first:]:  # an out- fixture names its rule
        if name.startswith("out-") and rule not in expected.get("not_fired", []):
            expected["not_cards"] = sorted(set(expected["not_cards"]) | {rule})


def _derived(b: Any) -> None:
    """The derived rules, each with a record on either side of its boundary (fired / not fired)."""
    t, ca, alb, vd = b.testosterone, b.calcium, b.albumin, b.vitamin_d
    within = card(TARGET, "info", "within")
    cases = {
        "testosterone-below-target": (
            ("in-399-ng-dl", [trt(b), t(399)], [card(TARGET, "info", "below")]),
            ("out-400-ng-dl", [trt(b), t(400)], [within]),
        ),
        "testosterone-within-target": (
            ("in-13.9-nmol-l", [trt(b), t(13.9, "nmol/L")], [within]),
            ("out-13.8-nmol-l", [trt(b), t(13.8, "nmol/L")], [card(TARGET, "info", "below")]),
        ),
        "testosterone-above-target": (
            ("in-24.3-nmol-l-is-700.3-ng-dl", [trt(b), t(24.3, "nmol/L")], [card(TARGET, "info", "above")]),
            ("out-700-ng-dl", [trt(b), t(700)], [within]),
        ),
        "testosterone-not-placed": (
            ("in-below-500-limit", [trt(b), t(500, comparator="<")], [card(TARGET, "info", "limit")]),
            ("out-below-400-limit", [trt(b), t(400, comparator="<")], [card(TARGET, "info", "below")]),
        ),
        "low-calcium": (
            ("in-8.4-mg-dl", [ca(8.4)], [card(CA_LOW, "warning")]),
            ("out-corrected-8.5-mg-dl", [ca(8.1), alb(3.5)], []),
        ),
        "low-vitamin-d": (
            ("in-29.9-ng-ml", [vd(29.9)], [card("vitamin-d-low", "info")]),
            ("out-74.9-nmol-l", [vd(75, "nmol/L")], []),
        ),
    }
    for rule, sides in cases.items():
        for name, slots, cards in sides:
            key = "fired" if name.startswith("in-") else "not_fired"
            labs = [r for r in slots if r["resourceType"] == "Observation"]
            meds = [r for r in slots if r["resourceType"] == "MedicationRequest"]
            record = b.record(
                trt=meds or None,
                testo=[r for r in labs if r["id"] == "t-1"] or None,
                ca=[r for r in labs if r["id"] in ("ca-1", "alb-1")] or b.calcium(9.4),
                vitd=[r for r in labs if r["id"] == "vitd-1"] or b.vitamin_d(38),
            )
            fix(b, rule, name, record, cards=cards, **{key: [rule]})
    dmab = b.med_request("dmab", rxnorm="993452", display="denosumab 60 MG/ML", status="draft", timing=False)
    order = "bone-drug-order-check"
    pre = {
        "pretherapy-calcium-missing": (
            ("in-91-days", dict(ca=ca(9.4, days_ago=91))),
            ("out-90-days", dict(ca=ca(9.4, days_ago=90))),
        ),
        "pretherapy-calcium-low": (
            ("in-2.11-mmol-l", dict(ca=ca(2.11, "mmol/L", days_ago=10))),
            ("out-2.12-mmol-l", dict(ca=ca(2.12, "mmol/L", days_ago=10))),
        ),
        "pretherapy-vitamin-d-missing": (
            ("in-91-days", dict(vitd=vd(40, days_ago=91))),
            ("out-90-days", dict(vitd=vd(40, days_ago=90))),
        ),
        "pretherapy-vitamin-d-low": (
            ("in-74-nmol-l", dict(vitd=vd(74, "nmol/L", days_ago=10))),
            ("out-75-nmol-l", dict(vitd=vd(75, "nmol/L", days_ago=10))),
        ),
    }
    for rule, sides in pre.items():
        for name, slots in sides:
            slots.setdefault("ca", ca(9.4, days_ago=10))
            slots.setdefault("vitd", vd(40, days_ago=10))
            fired = name.startswith("in-")
            fix(
                b,
                rule,
                name,
                b.record(bp=dmab, **slots),
                cards=[card(order, "warning")] if fired else [],
                **{"fired" if fired else "not_fired": [rule]},
            )


def trt(b: Any, started_days: int = 500, status: str = "active") -> dict:
    order = b.med_request("trt", rxnorm="835840", display="testosterone cypionate 200 MG/ML", status=status)
    order["authoredOn"] = b.ago(started_days)
    return order


def _testosterone(b: Any) -> None:
    t = b.testosterone
    within = card(TARGET, "info", "within the target range")
    fix(
        b,
        DUE,
        "in-366-days",
        b.record(trt=trt(b), testo=t(550, days_ago=366)),
        cards=[
            card(DUE, "info", "No testosterone result in the last 365 days", actions=["create"]),
            card(TARGET, "info", "550 ng/dL (19.1 nmol/L)"),
        ],
    )
    fix(
        b,
        DUE,
        "out-365-days",
        b.record(trt=trt(b), testo=t(550, days_ago=365)),
        cards=[within],
        not_cards=[DUE, FIRST],
    )
    fix(
        b,
        DUE,
        "in-data-absent-reason",
        b.record(trt=trt(b), testo=[t(None, days_ago=20), t(500, days_ago=400, rid="t-0")]),
        cards=[card(DUE, "info"), card("evaluation-gaps", "info"), card(TARGET, "info", "500 ng/dL")],
        not_cards=[FIRST],
    )
    fix(
        b,
        DUE,
        "in-without-aromatase-inhibitor",
        b.record(ai=None, trt=trt(b), testo=t(500, days_ago=400)),
        cards=[card(DUE, "info"), card(TARGET, "info", "within")],
        not_cards=["calcium-monitoring-due", FIRST],
    )
    fix(
        b,
        DUE,
        "out-testosterone-being-ordered",
        b.record(trt=trt(b), testo=None, order=b.service_request("sr-t", b.LOINC, "2986-8", "Testosterone")),
        cards=[],
    )
    fix(b, DUE, "out-woman-on-testosterone", b.record(sex="female", trt=trt(b), testo=None), cards=[])
    # the first on-treatment check: a baseline before the start does not count
    fix(
        b,
        FIRST,
        "in-started-90-days-baseline-only",
        b.record(trt=trt(b, 90), testo=t(300, days_ago=120)),
        cards=[
            card(FIRST, "info", "therapy started 90 days ago", actions=["create"]),
            card(TARGET, "info", "below the target range"),
        ],
        not_cards=[DUE],
    )
    fix(
        b,
        FIRST,
        "out-started-89-days",
        b.record(trt=trt(b, 89), testo=t(300, days_ago=120)),
        cards=[card(TARGET, "info", "below the target range")],
        not_cards=[FIRST, DUE],
    )
    fix(
        b,
        FIRST,
        "out-checked-since-start",
        b.record(trt=trt(b, 120), testo=t(520, days_ago=119)),
        cards=[within],
        not_cards=[FIRST, DUE],
    )
    fix(
        b,
        FIRST,
        "in-never-checked-sets-aside-yearly",
        b.record(trt=trt(b, 400), testo=None),
        cards=[card(FIRST, "info", "started 400 days ago")],
        superseded=[DUE],
    )
    # the latest result against the target range, ng/dL and nmol/L (units as text only too)
    bands = {
        "in-399-ng-dl-below": (t(399), "399 ng/dL (13.8 nmol/L) on"),
        "in-400-ng-dl-within": (t(400), "within the target range"),
        "in-700-ng-dl-within": (t(700), "within the target range"),
        "in-701-ng-dl-above": (t(701), "above the target range"),
        "in-13.8-nmol-l-below": (t(13.8, "nmol/L"), "13.8 nmol/L (397.7 ng/dL)"),
        "in-24.2-nmol-l-within-unit-text-only": (
            t(24.2, "nmol/L", code_unit=None),
            "within the target range",
        ),
        "in-24.5-nmol-l-above": (t(24.5, "nmol/L"), "above the target range"),
    }
    for name, (result, words) in bands.items():
        fix(b, TARGET, name, b.record(trt=trt(b), testo=result), cards=[card(TARGET, "info", words)])
    fix(b, TARGET, "out-no-testosterone-therapy", b.record(testo=t(250)), cards=[])
    fix(
        b,
        TARGET,
        "in-latest-counts-preliminary-ignored",
        b.record(trt=trt(b), testo=[t(250, status="preliminary"), t(500, days_ago=400, rid="t-0")]),
        cards=[card(DUE, "info"), card(TARGET, "info", "500 ng/dL")],
        not_cards=[FIRST],
    )


def _calcium(b: Any) -> None:
    ca, alb = b.calcium, b.albumin
    fix(
        b,
        CA_DUE,
        "in-366-days",
        b.record(ca=ca(9.4, days_ago=366)),
        cards=[card(CA_DUE, "info", "No calcium result in the last 365 days", actions=["create", "create"])],
    )
    fix(b, CA_DUE, "out-365-days", b.record(ca=ca(9.4, days_ago=365)), cards=[])
    fix(
        b,
        CA_DUE,
        "in-data-absent-reason",
        b.record(ca=ca(None, days_ago=10)),
        cards=[card(CA_DUE, "info"), card("evaluation-gaps", "info")],
    )
    ionized = b.lab("ica-1", "1994-3", 1.21, "mmol/L", 30, display="Calcium.ionized [Moles/volume] in Blood")
    fix(b, CA_DUE, "in-ionized-only-no-substitute", b.record(ca=ionized), cards=[card(CA_DUE, "info")])
    # a site that lets ionized calcium stand in sets its own laboratory's lower limit (the pack has none)
    site_ionized = {"thresholds": {"ionized_calcium_substitutes": 1, "ionized_calcium_low_mmol_l": 1.15}}
    fix(
        b,
        CA_DUE,
        "out-ionized-substitutes-by-site-config",
        b.record(ca=ionized),
        cards=[],
        site_config=site_ionized,
    )
    at_limit = b.lab("ica-1", "1994-3", 1.15, "mmol/L", 30, display="Calcium.ionized [Moles/volume] in Blood")
    below = b.lab("ica-1", "1994-3", 1.14, "mmol/L", 30, display="Calcium.ionized [Moles/volume] in Blood")
    fix(b, CA_LOW, "out-ionized-1.15-at-site-limit", b.record(ca=at_limit), cards=[],
        not_fired=["low-calcium"], site_config=site_ionized)
    fix(b, CA_LOW, "in-ionized-1.14-below-site-limit", b.record(ca=below),
        cards=[card(CA_LOW, "warning", "1.14 mmol/L")], fired=["low-calcium"], site_config=site_ionized)
    fix(b, CA_LOW, "out-ionized-1.14-without-site-switch", b.record(ca=below),
        cards=[card(CA_DUE, "info")], not_fired=["low-calcium"])
    fix(
        b,
        CA_DUE,
        "out-calcium-being-ordered",
        b.record(ca=None, order=b.service_request("sr-ca", b.LOINC, "17861-6", "Calcium")),
        cards=[],
    )
    fix(b, CA_DUE, "out-no-aromatase-inhibitor", b.record(ai=None, ca=None), cards=[])
    # hypocalcaemia: total calcium, as reported (mg/dL, mmol/L), albumin-corrected the same day
    low = {
        "in-8.4-mg-dl": ([ca(8.4)], "total calcium 8.4 mg/dL"),
        "in-2.11-mmol-l": ([ca(2.11, "mmol/L")], "total calcium 2.11 mmol/L"),
        "in-2.11-mmol-l-unit-text-only": ([ca(2.11, "mmol/L", code_unit=None)], "2.11 mmol/L"),
        "in-albumin-corrected-below": ([ca(8.6), alb(4.5)], "albumin-corrected calcium 8.2 mg/dL"),
        "in-albumin-other-day-not-corrected": ([ca(8.3), alb(3.0, days_ago=61)], "total calcium 8.3"),
    }
    for name, (results, words) in low.items():
        fix(
            b,
            CA_LOW,
            name,
            b.record(ca=results),
            cards=[card(CA_LOW, "warning", words)],
            fired=["low-calcium"],
        )
    not_low = {
        "out-8.5-mg-dl": [ca(8.5)],
        "out-2.12-mmol-l": [ca(2.12, "mmol/L")],
        "out-albumin-corrected-above": [ca(8.3), alb(3.0)],
        "out-albumin-corrected-8.5": [ca(8.1), alb(3.5)],
    }
    for name, results in not_low.items():
        fix(b, CA_LOW, name, b.record(ca=results), cards=[], not_fired=["low-calcium"])
    fix(
        b,
        CA_LOW,
        "in-coefficient-by-site-config",
        b.record(ca=[ca(8.1), alb(3.5)]),
        cards=[card(CA_LOW, "warning", "total calcium 8.1 mg/dL")],
        site_config={"thresholds": {"calcium_albumin_coefficient": 0}},
    )


def _order_time(b: Any) -> None:
    mr, ca, vd = b.med_request, b.calcium, b.vitamin_d

    def dmab(status: str = "draft") -> dict:
        return mr(
            "dmab",
            rxnorm="993452",
            display="denosumab 60 MG/ML Prefilled Syringe",
            status=status,
            timing=False,
        )

    zol = mr("zol", rxnorm="77655", display="zoledronic acid", status="draft", timing=False)
    # the order-sign in a patient with low calcium: one warning naming the calcium and what to do
    fix(
        b,
        ORDER,
        "in-denosumab-low-calcium",
        b.record(bp=dmab(), ca=ca(8.2, days_ago=20), vitd=vd(38, days_ago=20)),
        cards=[card(ORDER, "warning", "Before starting denosumab: correct low calcium 8.2 mg/dL", actions=[],
                    detail_contains="total calcium 8.2 mg/dL")],
        not_cards=[CA_LOW, "bone-density-low-on-ai"],
        superseded=[CA_LOW],
    )
    # albumin-corrected (Payne, the same day): the summary stays whole, the detail says how it was corrected
    fix(
        b,
        ORDER,
        "in-denosumab-albumin-corrected-low-calcium",
        b.record(bp=dmab(), ca=[ca(8.6, days_ago=20), b.albumin(4.5, days_ago=20)], vitd=vd(38, days_ago=20)),
        cards=[card(ORDER, "warning",
                    "Before starting denosumab: correct low calcium 8.2 mg/dL albumin-corrected", actions=[],
                    detail_contains="albumin-corrected calcium 8.2 mg/dL (total 8.6 mg/dL")],
        not_cards=[CA_LOW],
        superseded=[CA_LOW],
    )
    fix(
        b,
        ORDER,
        "out-denosumab-albumin-corrected-8.5",
        b.record(bp=dmab(), ca=[ca(8.1, days_ago=20), b.albumin(3.5, days_ago=20)], vitd=vd(38, days_ago=20)),
        cards=[],
        not_fired=["pretherapy-calcium-low", "low-calcium"],
    )
    fix(
        b,
        ORDER,
        "in-zoledronic-acid-calcium-91-days",
        b.record(bp=zol, ca=ca(9.4, days_ago=91), vitd=vd(38, days_ago=20)),
        cards=[card(ORDER, "warning", "no recent calcium", actions=["create", "create"])],
    )
    fix(
        b,
        ORDER,
        "out-zoledronic-acid-calcium-90-days",
        b.record(bp=zol, ca=ca(9.4, days_ago=90), vitd=vd(38, days_ago=90)),
        cards=[],
        not_fired=["pretherapy-calcium-missing", "pretherapy-vitamin-d-missing"],
    )
    fix(
        b,
        ORDER,
        "in-denosumab-vitamin-d-91-days",
        b.record(bp=dmab(), ca=ca(9.4, days_ago=20), vitd=vd(38, days_ago=91)),
        cards=[card(ORDER, "warning", "no recent 25-OH vitamin D", actions=["create"])],
    )
    fix(
        b,
        ORDER,
        "in-denosumab-low-vitamin-d-and-no-calcium",
        b.record(bp=dmab(), ca=None, vitd=vd(15, days_ago=30)),
        cards=[
            card(
                ORDER,
                "warning",
                "Before starting denosumab: no recent calcium; correct low 25-OH vitamin D 15 ng/mL",
                actions=["create", "create", "create"],
                detail_contains="low 25-OH vitamin D 15 ng/mL",
            )
        ],
        superseded=["vitamin-d-low", CA_DUE],
    )
    fix(
        b,
        ORDER,
        "in-denosumab-vitamin-d-29-ng-ml",
        b.record(bp=dmab(), ca=ca(9.4, days_ago=20), vitd=vd(29, days_ago=20)),
        cards=[card(ORDER, "warning", "low 25-OH vitamin D 29 ng/mL", actions=["create"])],
        superseded=["vitamin-d-low"],
    )
    fix(
        b,
        ORDER,
        "out-denosumab-vitamin-d-30-ng-ml",
        b.record(bp=dmab(), ca=ca(9.4, days_ago=20), vitd=vd(30, days_ago=20)),
        cards=[],
    )
    fix(
        b,
        ORDER,
        "out-denosumab-already-active",
        b.record(bp=dmab("active"), ca=None, vitd=None),
        cards=[card(CA_DUE, "info"), card("vitamin-d-missing", "info")],
        not_cards=[ORDER],
    )
    fix(
        b,
        ORDER,
        "in-order-select-denosumab-selected",
        b.record(bp=dmab(), ca=ca(8.2, days_ago=20), vitd=vd(38, days_ago=20)),
        hook="order-select",
        cards=[card(ORDER, "warning", "low calcium")],
        superseded=[CA_LOW],
    )
    fix(
        b,
        ORDER,
        "out-order-select-another-order-selected",
        b.record(
            ai=b.anastrozole(status="draft"), bp=dmab(), ca=ca(8.2, days_ago=20), vitd=vd(38, days_ago=20)
        ),
        hook="order-select",
        cards=[card(CA_LOW, "warning", "total calcium 8.2 mg/dL")],
        not_cards=[ORDER],
    )
    fix(
        b,
        ORDER,
        "in-denosumab-low-bone-density-no-referral",
        b.record(
            bp=dmab(),
            ca=ca(8.2, days_ago=20),
            vitd=vd(38, days_ago=20),
            dxa=b.dxa("dxa-1", "lumbar_spine", "t_score", -2.8, 30),
        ),
        cards=[card(ORDER, "warning", "low calcium")],
        not_cards=["bone-density-low-on-ai", "osteopenia-on-ai", CA_LOW],
    )
    # oral bisphosphonates: a reminder
    fix(
        b,
        ORAL,
        "in-alendronate-draft",
        b.record(bp=mr("aln", rxnorm="904431", status="draft")),
        cards=[card(ORAL, "info", "Ordering alendronate")],
        not_cards=[ORDER],
    )
    fix(b, ORAL, "out-alendronate-active", b.record(bp=mr("aln", rxnorm="904431")), cards=[])
