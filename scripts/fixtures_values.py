"""Fixture catalogue, values as laboratories and DXA systems report them (issue: real EHR data).

Results below or above a limit (``valueQuantity.comparator``, ``valueString`` "<5 pg/mL"), results that
cannot be used (``dataAbsentReason``, text results, units that cannot be read, statuses that do not count)
beside the monitoring advice they no longer satisfy, UCUM spellings and text-only units, DXA reporting
precision and ``bodySite``, wording by sex and age, and hostile text in units.

Read through ``fixtures_catalogue.define``; ``b`` is ``scripts/build_fixtures.py``.
"""

from __future__ import annotations

from typing import Any

from fixtures_common import card, fix

E2_LOW, E2_DUE, E2_ODD = "low-estradiol-on-ai", "estradiol-monitoring-due", "estradiol-result-indeterminate"
D_LOW, D_DUE, D_ODD = "vitamin-d-low", "vitamin-d-missing", "vitamin-d-result-indeterminate"
GAPS = "evaluation-gaps"
HAEMOLYSED = ("error", "Specimen haemolysed")


def define(b: Any) -> None:
    _estradiol_limits(b)
    _estradiol_unusable(b)
    _vitamin_d(b)
    _dxa_values(b)
    _dxa_set_aside(b)
    _wording(b)
    _hostile(b)


def _estradiol_limits(b: Any) -> None:
    e2 = b.estradiol
    for name, record, indicator, summary in [
        ("in-comparator-below-20", e2(20, comparator="<"), "warning", "Low estradiol (<20 pg/mL)"),
        ("in-comparator-below-10-critical", e2(10, comparator="<"), "critical", "(<10 pg/mL)"),
        ("in-comparator-below-5-severe", e2(5, comparator="<"), "critical", "(<5 pg/mL)"),
        ("in-valuestring-below-5-severe", e2(None, value_string="<5 pg/mL"), "critical", "(<5 pg/mL)"),
        ("in-comparator-below-or-equal-19", e2(19, comparator="<="), "warning", "(<=19 pg/mL)"),
        ("in-comparator-below-73-pmol-l", e2(73, "pmol/L", comparator="<"), "warning", "(<19.9 pg/mL)"),
        ("in-text-only-unit-ng-per-l", e2(15, "ng/L", code_unit=None), "warning", "(15.0 pg/mL)"),
    ]:
        fix(
            b,
            E2_LOW,
            name,
            b.record(e2=record),
            cards=[card(E2_LOW, indicator, summary, detail_lacks=["5.0 pg/mL"] if "<5" in summary else [])],
            not_cards=[E2_ODD, E2_DUE, GAPS],
        )
    for name, record in [
        ("out-comparator-below-25-indeterminate", e2(25, comparator="<")),
        ("out-comparator-below-or-equal-20-indeterminate", e2(20, comparator="<=")),
        ("out-comparator-above-15-indeterminate", e2(None, value_string="> 15 pg/mL")),
    ]:
        fix(
            b,
            E2_LOW,
            name,
            b.record(e2=record),
            cards=[card(E2_ODD, "info", "indeterminate", actions=["create"], detail_contains="LC-MS/MS")],
            not_cards=[E2_LOW, E2_DUE],
        )
    fix(b, E2_LOW, "out-comparator-above-20", b.record(e2=e2(20, comparator=">")), not_cards=[E2_LOW, E2_ODD])
    fix(
        b,
        E2_ODD,
        "in-comparator-below-25",
        b.record(e2=e2(25, comparator="<")),
        cards=[card(E2_ODD, "info", "Estradiol <25 pg/mL", actions=["create"])],
        not_cards=[E2_LOW],
    )
    fix(
        b,
        E2_ODD,
        "in-valuestring-above-5",
        b.record(e2=e2(None, value_string=">5 pg/mL")),
        cards=[card(E2_ODD, "info", ">5 pg/mL")],
    )
    fix(
        b,
        E2_ODD,
        "in-draft-estradiol-order-no-suggestion",
        b.record(
            e2=e2(25, comparator="<"),
            order=b.service_request("sr-e2", b.LOINC, "72873-3", "Estradiol LC-MS/MS"),
        ),
        cards=[card(E2_ODD, "info", "", actions=[])],
    )
    fix(
        b,
        E2_ODD,
        "out-comparator-below-20-is-low",
        b.record(e2=e2(20, comparator="<")),
        cards=[card(E2_LOW, "warning")],
        not_cards=[E2_ODD],
    )
    fix(
        b, E2_ODD, "out-woman-below-25", b.record(sex="female", e2=e2(25, comparator="<")), not_cards=[E2_ODD]
    )
    fix(b, E2_ODD, "out-exact-19", b.record(e2=e2(19)), cards=[card(E2_LOW, "warning")], not_cards=[E2_ODD])


def _estradiol_unusable(b: Any) -> None:
    e2 = b.estradiol
    fix(
        b,
        E2_DUE,
        "in-valuestring-without-unit-not-guessed",
        b.record(e2=e2(None, value_string="<5"), ai=b.anastrozole(started=b.LONG_COURSE)),
        cards=[
            card(E2_DUE, "info", "", detail_contains="no unit was given"),
            card(GAPS, "info", "", detail_contains="no unit was given"),
        ],
        not_cards=[E2_LOW],
    )
    due = card(E2_DUE, "info", "No estradiol result", actions=["create"])
    fix(
        b,
        E2_DUE,
        "in-estradiol-data-absent-still-due",
        b.record(e2=e2(None, absent=HAEMOLYSED), ai=b.anastrozole(started=b.LONG_COURSE)),
        cards=[
            card(E2_DUE, "info", "No estradiol", detail_contains="Specimen haemolysed"),
            card(GAPS, "info", "", detail_contains="Specimen haemolysed"),
        ],
    )
    fix(
        b,
        E2_DUE,
        "in-estradiol-unknown-unit-still-due",
        b.record(e2=e2(15, "ng/dL"), ai=b.anastrozole(started=b.LONG_COURSE)),
        cards=[
            card(E2_DUE, "info", "", detail_contains="ng/dL"),
            card(GAPS, "info", "", detail_contains="ng/dL"),
        ],
    )
    fix(
        b,
        E2_DUE,
        "in-estradiol-text-result-still-due",
        b.record(e2=e2(None, value_string="Haemolysed"), ai=b.anastrozole(started=b.LONG_COURSE)),
        cards=[due, card(GAPS, "info", "", detail_contains="Haemolysed")],
    )
    fix(
        b,
        E2_DUE,
        "in-estradiol-latest-preliminary-still-due",
        b.record(e2=e2(12, status="preliminary", days_ago=5), ai=b.anastrozole(started=b.LONG_COURSE)),
        cards=[card(E2_DUE, "info", "", detail_contains="status preliminary")],
        not_cards=[GAPS, E2_LOW],
    )
    fix(
        b,
        E2_DUE,
        "out-comparator-result-counts",
        b.record(e2=e2(5, comparator="<")),
        cards=[card(E2_LOW, "critical")],
        not_cards=[E2_DUE],
    )


def _vitamin_d(b: Any) -> None:
    v = b.vitamin_d
    for name, record, indicator, summary in [
        ("in-vitamin-d-ug-per-l", v(12, "ug/L"), "warning", "12.0 ng/mL"),
        ("in-vitamin-d-mcg-per-l-text-only", v(12, "mcg/L", code_unit=None), "warning", "12.0 ng/mL"),
        ("in-valuestring-below-10-deficient", v(None, value_string="<10 ng/mL"), "warning", "<10 ng/mL"),
        ("in-comparator-below-25-insufficient", v(25, comparator="<"), "info", "<25 ng/mL"),
        ("in-comparator-below-20-deficient", v(20, comparator="<"), "warning", "<20 ng/mL"),
    ]:
        fix(
            b,
            D_LOW,
            name,
            b.record(vitd=record),
            cards=[card(D_LOW, indicator, summary, actions=["create"])],
            not_cards=[D_DUE, D_ODD, GAPS],
        )
    fix(
        b,
        D_LOW,
        "out-valuestring-above-150",
        b.record(vitd=v(None, value_string="> 150 ng/mL")),
        not_cards=[D_LOW, D_ODD, D_DUE, GAPS],
    )
    fix(
        b,
        D_LOW,
        "out-comparator-below-40-indeterminate",
        b.record(vitd=v(40, comparator="<")),
        cards=[card(D_ODD, "info", "indeterminate", actions=["create"])],
        not_cards=[D_LOW, D_DUE],
    )
    fix(
        b,
        D_ODD,
        "in-comparator-below-40",
        b.record(vitd=v(40, comparator="<")),
        cards=[card(D_ODD, "info", "<40 ng/mL")],
    )
    fix(b, D_ODD, "in-comparator-above-15", b.record(vitd=v(15, comparator=">")), cards=[card(D_ODD, "info")])
    fix(b, D_ODD, "out-comparator-above-30", b.record(vitd=v(30, comparator=">=")), not_cards=[D_ODD, D_LOW])
    fix(
        b,
        D_DUE,
        "in-recent-result-unknown-unit-still-due",
        b.record(vitd=v(38, "IU/mL")),
        cards=[
            card(D_DUE, "info", "No 25-OH vitamin D", detail_contains="IU/mL"),
            card(GAPS, "info", "", detail_contains="IU/mL"),
        ],
    )
    fix(
        b,
        D_DUE,
        "in-vitamin-d-data-absent-still-due",
        b.record(vitd=v(None, absent=("not-performed", "Sample not received"))),
        cards=[
            card(D_DUE, "info", "", actions=["create"], detail_contains="Sample not received"),
            card(GAPS, "info"),
        ],
    )
    fix(
        b,
        D_DUE,
        "out-valuestring-above-150-counts",
        b.record(vitd=v(None, value_string=">150 ng/mL")),
        not_cards=[D_DUE, D_LOW, GAPS],
    )


FEMORAL_NECK = {
    "coding": [
        {"system": "http://snomed.info/sct", "code": "68367000", "display": "Structure of neck of femur"}
    ],
    "text": "Femoral neck",
}


def _dxa_values(b: Any) -> None:
    d = b.dxa
    low, osteo = "bone-density-low-on-ai", "osteopenia-on-ai"
    rule = "bone-density-osteoporosis-range"
    fix(
        b,
        rule,
        "in-tscore-17-digits-one-decimal",
        b.record(dxa=d("dxa-1", "forearm", "t_score", -3.5776000000000003, 100)),
        fired=[rule],
        cards=[card(low, "warning", "T-score -3.6 at the Forearm", detail_lacks=["-3.5776"])],
    )
    fix(
        b,
        rule,
        "in-t-minus-2.45-reported-as-minus-2.5",
        b.record(dxa=d("dxa-1", "hip", "t_score", -2.45, 100)),
        fired=[rule],
        cards=[card(low, "warning", "T-score -2.5")],
    )
    fix(
        b,
        rule,
        "out-tscore-17-digits-reported-as-minus-2.4",
        b.record(dxa=d("dxa-1", "hip", "t_score", -2.4499999999999997, 100)),
        not_fired=[rule],
        cards=[card(osteo, "info", "T-score -2.4")],
    )
    fix(
        b,
        rule,
        "in-femoral-neck-bodysite",
        b.record(dxa=d("dxa-1", "femur", "t_score", -2.7, 100, body_site=FEMORAL_NECK)),
        fired=[rule],
        cards=[card(low, "warning", "at the Femoral neck")],
    )
    fix(
        b,
        rule,
        "in-left-femoral-neck-bodysite",
        b.record(dxa=d("dxa-1", "femur_left", "t_score", -2.7, 100, body_site=FEMORAL_NECK)),
        fired=[rule],
        cards=[card(low, "warning", "at the Left femoral neck")],
    )
    fix(
        b,
        "bone-density-osteopenia-range",
        "in-woman-minus-2.0-shown-with-one-decimal",
        b.record(sex="female", dxa=d("dxa-1", "hip", "t_score", -2.0, 100)),
        fired=["bone-density-osteopenia-range"],
        cards=[card(osteo, "info", "T-score -2.0")],
    )
    rule = "falling-bone-density"
    fix(
        b,
        rule,
        "in-femoral-neck-bodysite",
        b.record(
            dxa=[
                d("dxa-old", "femur", "bmd", 0.900, 750, body_site=FEMORAL_NECK),
                d("dxa-new", "femur", "bmd", 0.850, 20, body_site=FEMORAL_NECK),
            ]
        ),
        cards=[card(rule, "warning", "Femoral neck", detail_contains="BMD 0.900 to 0.850 g/cm2")],
    )
    fix(
        b,
        rule,
        "out-femoral-neck-not-compared-with-whole-femur",
        b.record(
            dxa=[
                d("dxa-old", "femur", "bmd", 0.900, 750),
                d("dxa-new", "femur", "bmd", 0.850, 20, body_site=FEMORAL_NECK),
            ]
        ),
        not_cards=[rule],
    )
    fix(
        b,
        rule,
        "in-bmd-17-digits-three-decimals",
        b.record(
            dxa=[
                d("dxa-old", "hip", "bmd", 0.9004999999999999, 750),
                d("dxa-new", "hip", "bmd", 0.8501234567890123, 20),
            ]
        ),
        cards=[card(rule, "warning", "Total hip", detail_contains="BMD 0.900 to 0.850 g/cm2")],
    )
    rule = "dxa-baseline-missing"
    g_cm_minus_2 = d("dxa-1", "lumbar_spine", "bmd", 0.91, 100, unit=("g/cm-2", "g/cm-2"))
    fix(
        b,
        rule,
        "in-bmd-g-cm-minus-2-set-aside",
        b.record(dxa=g_cm_minus_2),
        cards=[
            card(rule, "info", "No DXA", actions=["create"], detail_contains="g/cm-2"),
            card(GAPS, "info", "", detail_contains="g/cm-2"),
        ],
    )
    undated = d("dxa-1", "lumbar_spine", "bmd", 0.91, 100, unit=("g/cm-2", "g/cm-2"))
    del undated["effectiveDateTime"]  # as in HL7's own BMD example
    fix(
        b,
        rule,
        "in-hl7-bmd-example-undated-named",
        b.record(dxa=undated),
        cards=[
            card(rule, "info", "No DXA", detail_contains="has no date"),
            card(GAPS, "info", "", detail_contains="has no date"),
        ],
    )
    fix(
        b,
        rule,
        "out-bmd-g-cm-minus-2-site-reads-as-g-cm2",
        b.record(dxa=g_cm_minus_2),
        not_cards=[rule, GAPS],
        site_config={"units": {"read_g_cm-2_as_g_cm2": True}},
    )
    fix(
        b,
        rule,
        "out-bmd-ucum-spelling-g-cm-minus-2-dot",
        b.record(dxa=d("dxa-1", "lumbar_spine", "bmd", 0.91, 100, unit=("g/cm²", "g.cm-2"))),
        not_cards=[rule, GAPS],
    )
    fix(
        b,
        rule,
        "out-bmd-unit-text-only",
        b.record(dxa=d("dxa-1", "lumbar_spine", "bmd", 0.91, 100, unit=("g/cm²", None))),
        not_cards=[rule, GAPS],
    )
    fix(
        b,
        rule,
        "in-only-dxa-preliminary",
        b.record(dxa=d("dxa-1", "hip", "t_score", -0.5, 100, status="preliminary")),
        cards=[card(rule, "info", "", detail_contains="status preliminary")],
        not_cards=[GAPS],
    )


def _dxa_set_aside(b: Any) -> None:
    d = b.dxa
    newer = d("dxa-new", "hip", "bmd", 0.91, 30, unit=("g/cm-2", "g/cm-2"))
    fix(
        b,
        "dxa-overdue",
        "in-731-days-newer-scan-set-aside-named",
        b.record(dxa=[d("dxa-old", "hip", "t_score", -0.5, 731), newer]),
        cards=[
            card("dxa-overdue", "info", "DXA overdue", actions=["create"], detail_contains="g/cm-2"),
            card(GAPS, "info"),
        ],
    )
    fix(
        b,
        "bone-at-risk-from-low-density",
        "in-z-score-17-digits-one-decimal",
        b.record(
            age=40,
            dxa=[
                d("dxa-1", "lumbar_spine", "z_score", -2.4499999999999997, 100),
                d("dxa-2", "lumbar_spine", "t_score", -0.8, 100),
            ],
        ),
        fired=["bone-at-risk-from-low-density"],
        derived=[{"t": "bone_at_risk", "measure": "Z-score -2.4"}],
        cards=[card("bone-density-low-on-ai", "warning", "Z-score -2.4 at the Lumbar spine")],
    )


def _wording(b: Any) -> None:
    d = b.dxa
    low, osteo = "bone-density-low-on-ai", "osteopenia-on-ai"
    womens = ["For women", "Hadji", "postmenopausal women"]
    z_low = [
        d("dxa-1", "lumbar_spine", "z_score", -2.6, 100),
        d("dxa-2", "lumbar_spine", "t_score", -2.1, 100),
    ]
    fix(
        b,
        "bone-density-below-expected-for-age",
        "in-man-35-z-low-secondary-causes",
        b.record(age=35, dxa=z_low),
        fired=["bone-density-below-expected-for-age"],
        cards=[
            card(
                low,
                "warning",
                "below the expected range for age",
                detail_contains="the aromatase inhibitor and low estradiol first",
                detail_lacks=womens + ["T-score at or below"],
            )
        ],
    )
    fix(
        b,
        low,
        "in-man-osteoporosis-no-womens-guidance",
        b.record(dxa=d("dxa-1", "hip", "t_score", -2.9, 100)),
        cards=[card(low, "warning", "", detail_contains="Endocrine Society", detail_lacks=womens)],
    )
    fix(
        b,
        low,
        "in-woman-hadji-guidance",
        b.record(sex="female", dxa=d("dxa-1", "hip", "t_score", -2.9, 100)),
        cards=[card(low, "warning", "", detail_contains="Hadji", detail_lacks=["For men"])],
    )
    fix(
        b,
        osteo,
        "in-man-no-womens-guidance",
        b.record(dxa=d("dxa-1", "hip", "t_score", -1.5, 100)),
        cards=[card(osteo, "info", "T-score -1.5", detail_contains="In men", detail_lacks=womens)],
    )
    fix(
        b,
        osteo,
        "in-woman-risk-factors",
        b.record(sex="female", dxa=d("dxa-1", "hip", "t_score", -1.5, 100)),
        cards=[
            card(
                osteo,
                "info",
                "",
                detail_contains="For women on an aromatase inhibitor",
                detail_lacks=["In men"],
            )
        ],
    )
    rule = "low-estradiol-with-bone-loss"
    falling = [d("dxa-old", "hip", "bmd", 0.950, 750), d("dxa-new", "hip", "bmd", 0.900, 20)]
    fix(
        b,
        rule,
        "in-keeps-dose-reduction-remedy-patient-view",
        b.record(e2=b.estradiol(14), dxa=falling),
        hook="patient-view",
        cards=[
            card(
                rule,
                "critical",
                "",
                actions=["create"],
                detail_contains="Lower the dose or frequency of anastrozole, or stop it",
            )
        ],
        not_cards=["low-estradiol-on-ai", "falling-bone-density"],
    )
    fix(
        b,
        rule,
        "in-valuestring-below-5-and-falling-bmd",
        b.record(
            ai=b.anastrozole(status="draft"), e2=b.estradiol(None, value_string="<5 pg/mL"), dxa=falling
        ),
        cards=[card(rule, "critical", "Low estradiol (<5 pg/mL)", actions=["update", "delete", "create"])],
        not_cards=["low-estradiol-on-ai"],
    )


def _hostile(b: Any) -> None:
    fix(
        b,
        GAPS,
        "in-hostile-unit-escaped",
        b.record(vitd=b.vitamin_d(12, "<img src=x onerror=alert(1)>", code_unit=None)),
        cards=[
            card(GAPS, "info", "", detail_contains="&lt;img src=x onerror=alert(1)>", detail_lacks=["<img"]),
            card(D_DUE, "info", "", detail_contains="&lt;img"),
        ],
    )
    fix(
        b,
        GAPS,
        "in-hostile-valuestring-escaped",
        b.record(e2=b.estradiol(None, value_string="<5 [x](javascript:alert(1)) *bold*"),
                 ai=b.anastrozole(started=b.LONG_COURSE)),
        cards=[
            card(
                GAPS,
                "info",
                "",
                detail_contains="\\[x\\](javascript:alert(1))",
                detail_lacks=["[x](", "*bold*"],
            ),
            card(E2_DUE, "info"),
        ],
    )
