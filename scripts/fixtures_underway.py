"""The catalogue for treatment already under way and the order-time checks' labels and summaries.

Called from ``fixtures_catalogue.define``; ``b`` is ``scripts/build_fixtures.py``. Supplements are coded as
EHRs send them: RxNorm, ATC, text only, or a contained Medication; started orders carry their authoredOn.
"""

from __future__ import annotations

from typing import Any

from fixtures_common import card, fix

ON_SUPP = "vitamin-d-low-on-supplement"
LOW = "vitamin-d-low"
ORDER = "bone-drug-order-check"
ORAL = "oral-bisphosphonate-order-reminder"


def define(b: Any) -> None:
    _on_supplement(b)
    _held(b)
    _labels_and_summaries(b)


def _started(mr: dict, days: int | None, b: Any) -> dict:
    if days is None:
        mr.pop("authoredOn", None)
    else:
        mr["authoredOn"] = b.ago(days)
    return mr


def _dose_mg(mr: dict, mg: float) -> dict:
    mr["dosageInstruction"] = [
        {
            "text": f"{mg:g} mg intravenously",
            "doseAndRate": [{"doseQuantity": {"value": mg, "unit": "mg", "system": b_ucum(), "code": "mg"}}],
        }
    ]
    return mr


def b_ucum() -> str:
    return "http://unitsofmeasure.org"


def _on_supplement(b: Any) -> None:
    mr, vd = b.med_request, b.vitamin_d
    d3 = _started(
        mr("vd3", rxnorm="2418", display="cholecalciferol", text="Cholecalciferol 1000 UNT Oral Tablet"),
        30,
        b,
    )
    fix(
        b,
        ON_SUPP,
        "in-cholecalciferol-rxnorm-started-30-days-recheck",
        b.record(vitd=vd(14, days_ago=5), supp=d3),
        cards=[card(ON_SUPP, "warning", "cholecalciferol started 30 days ago: recheck from", actions=[])],
        not_cards=[LOW],
        superseded=[LOW],
    )
    d2 = _started(mr("vd2", atc="A11CC01", text="Ergocalciferol 50000 UNT Oral Capsule"), 89, b)
    fix(
        b,
        ON_SUPP,
        "in-ergocalciferol-atc-started-89-days-recheck",
        b.record(vitd=vd(22, days_ago=3), supp=d2),
        cards=[card(ON_SUPP, "info", "ergocalciferol started 89 days ago: recheck from", actions=[])],
        not_cards=[LOW],
    )
    text_only = _started(mr("cfd", text="Rayaldee 30 mcg extended-release capsule"), 120, b)
    fix(
        b,
        ON_SUPP,
        "in-calcifediol-text-only-result-90-days-after-start-review",
        b.record(vitd=vd(18, days_ago=30), supp=text_only),
        cards=[
            card(
                ON_SUPP,
                "warning",
                "still low (18.0 ng/mL) after 90 days of calcifediol: review dose and adherence",
                actions=[],
            )
        ],
        not_cards=[LOW],
    )
    contained = _started(mr("vd3c", contained=b.medication("med-d3", "2418", "cholecalciferol")), 120, b)
    fix(
        b,
        ON_SUPP,
        "in-contained-cholecalciferol-result-89-days-after-start-recheck-now",
        b.record(vitd=vd(25, days_ago=31), supp=contained),
        cards=[
            card(ON_SUPP, "info", "from before cholecalciferol took effect: recheck now", actions=["create"])
        ],
        not_cards=[LOW],
    )
    fix(
        b,
        ON_SUPP,
        "in-no-start-date-review-and-recheck",
        b.record(vitd=vd(12, days_ago=10), supp=_started(mr("vd3", rxnorm="2418"), None, b)),
        cards=[card(ON_SUPP, "warning", "review the dose and adherence, and recheck", actions=[])],
        not_cards=[LOW],
    )
    fix(
        b,
        ON_SUPP,
        "out-supplement-stopped",
        b.record(vitd=vd(14, days_ago=5), supp=_started(mr("vd3", rxnorm="2418", status="stopped"), 30, b)),
        cards=[card(LOW, "warning", "Low 25-OH vitamin D", actions=["create"])],
        not_cards=[ON_SUPP],
    )
    fix(
        b,
        ON_SUPP,
        "out-30-ng-ml-on-supplement",
        b.record(vitd=vd(30, days_ago=5), supp=_started(mr("vd3", rxnorm="2418"), 30, b)),
        not_cards=[ON_SUPP, LOW],
    )
    # a calcium salt is another class: cholecalciferol is still offered
    calcium = _started(mr("caco3", rxnorm="1897", text="Calcium carbonate 1250 MG Oral Tablet"), 30, b)
    fix(
        b,
        ON_SUPP,
        "out-calcium-carbonate-is-not-vitamin-d",
        b.record(vitd=vd(14, days_ago=5), supp=calcium),
        cards=[card(LOW, "warning", "Low 25-OH vitamin D", actions=["create"])],
        not_cards=[ON_SUPP],
    )


def _held(b: Any) -> None:
    mr, vd = b.med_request, b.vitamin_d
    draft = mr("d3-draft", atc="A11CC05", text="Vitamin D3 2000 IU capsule", status="draft")
    fix(
        b,
        LOW,
        "in-draft-vitamin-d3-atc-not-offered-again",
        b.record(vitd=vd(15, days_ago=5), supp=draft),
        cards=[
            card(
                LOW,
                "warning",
                "Low 25-OH vitamin D",
                actions=[],
                detail_contains="Not offered: Start cholecalciferol 2000 IU daily, because "
                "cholecalciferol is already among the orders being placed",
            )
        ],
    )
    dmab = mr(
        "dmab", rxnorm="993452", display="denosumab 60 MG/ML Prefilled Syringe", status="draft", timing=False
    )
    active = _started(mr("vd3", rxnorm="2418", display="cholecalciferol"), 200, b)
    fix(
        b,
        ORDER,
        "in-denosumab-low-vitamin-d-cholecalciferol-already-active",
        b.record(bp=dmab, vitd=vd(15, days_ago=30), ca=b.calcium(9.4, days_ago=30), supp=active),
        cards=[
            card(
                ORDER,
                "warning",
                "Before starting denosumab: correct low 25-OH vitamin D 15 ng/mL",
                actions=[],
                detail_contains="Not offered: Start cholecalciferol 2000 IU daily, because "
                "cholecalciferol is already ordered",
            ),
            card(ON_SUPP, "warning", "review dose and adherence", actions=[]),
        ],
    )


def _labels_and_summaries(b: Any) -> None:
    mr, vd, ca = b.med_request, b.vitamin_d, b.calcium

    def zol(rid: str = "zol", **kw: Any) -> dict:
        base = {"rxnorm": "77655", "display": "zoledronic acid", **kw}
        return mr(rid, status="draft", timing=False, **base)

    # a normal calcium is never named as something to correct; the card cites Reclast for zoledronic acid
    fix(
        b,
        ORDER,
        "in-zoledronic-acid-low-vitamin-d-normal-calcium",
        b.record(bp=zol(), ca=ca(9.2, days_ago=20), vitd=vd(30, "nmol/L", days_ago=20)),
        cards=[
            card(
                ORDER,
                "warning",
                "Before starting zoledronic acid: correct low 25-OH vitamin D 30 nmol/L",
                actions=["create"],
                detail_contains="Reclast (zoledronic acid) US prescribing information",
                detail_lacks=["9.2", "low calcium", "Prolia"],
            )
        ],
    )
    fix(
        b,
        ORDER,
        "in-denosumab-low-calcium-normal-vitamin-d",
        b.record(
            bp=mr("dmab", rxnorm="993452", status="draft", timing=False),
            ca=ca(8.2, days_ago=20),
            vitd=vd(38, days_ago=20),
        ),
        cards=[
            card(
                ORDER,
                "warning",
                "Before starting denosumab: correct low calcium 8.2 mg/dL",
                actions=[],
                detail_contains="Prolia (denosumab) US prescribing information",
                detail_lacks=["38 ng/mL", "low 25-OH vitamin D", "Reclast"],
            )
        ],
    )
    fix(
        b,
        ORDER,
        "in-zoledronic-acid-4-mg-oncology-dose-zometa-label",
        b.record(bp=_dose_mg(zol(), 4), ca=ca(8.2, days_ago=20), vitd=vd(38, days_ago=20)),
        cards=[
            card(
                ORDER,
                "warning",
                "correct low calcium 8.2 mg/dL",
                actions=[],
                detail_contains="Zometa (zoledronic acid) US prescribing information",
                detail_lacks=["Reclast"],
            )
        ],
    )
    fix(
        b,
        ORDER,
        "in-zoledronic-acid-5-mg-reclast-label",
        b.record(bp=_dose_mg(zol(), 5), ca=ca(8.2, days_ago=20), vitd=vd(38, days_ago=20)),
        cards=[
            card(
                ORDER,
                "warning",
                "correct low calcium 8.2 mg/dL",
                actions=[],
                detail_contains="Reclast (zoledronic acid) US prescribing information",
                detail_lacks=["Zometa ("],
            )
        ],
    )
    fix(
        b,
        ORDER,
        "in-zometa-by-name-text-only-zometa-label",
        b.record(
            bp=mr("zol", text="Zometa 4 MG per 5 ML Injection", status="draft", timing=False),
            ca=ca(9.4, days_ago=20),
            vitd=vd(38, days_ago=91),
        ),
        cards=[
            card(
                ORDER,
                "warning",
                "Before starting zoledronic acid: no recent 25-OH vitamin D",
                actions=["create"],
                detail_contains="Zometa (zoledronic acid) US prescribing information",
            )
        ],
    )
    for name, drug, label in (
        ("in-alendronate-fosamax-label", mr("bp", rxnorm="904431", status="draft"), "Fosamax (alendronate)"),
        ("in-risedronate-actonel-label", mr("bp", rxnorm="905024", status="draft"), "Actonel (risedronate"),
        ("in-ibandronate-atc-boniva-label", mr("bp", atc="M05BA06", status="draft"), "Boniva (ibandronate"),
    ):
        fix(
            b,
            ORAL,
            name,
            b.record(bp=drug),
            cards=[card(ORAL, "info", "Ordering", detail_contains=label)],
            not_cards=[ORDER],
        )
