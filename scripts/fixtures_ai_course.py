"""Fixtures for the course of an aromatase inhibitor: the first estradiol check after it starts (men), the
menopausal status of women (age, ovarian suppression) and the Z-score read for them, SERMs that are not
bone protection for a woman on an AI, and calcium as Synthea codes it (LOINC 49765-1).

Read by ``scripts/build_fixtures.py`` through ``fixtures_catalogue.define``; ``b`` is that module.
"""

from __future__ import annotations

from typing import Any

from fixtures_common import card, fix

E2_FIRST = "estradiol-first-check-due"
E2_DUE = "estradiol-monitoring-due"
LOW = "bone-density-low-on-ai"
BY_AGE = "menopausal-status-by-age"
BY_OFS = "menopausal-status-ovarian-suppression"
Z_READ = "bone-density-z-score-not-postmenopausal"


def define(b: Any) -> None:
    _estradiol_first_check(b)
    _menopausal_status(b)
    _z_score_read(b)
    _serms(b)
    _synthea_calcium(b)


# -- the first estradiol check after an aromatase inhibitor starts -------------------------------------------


def ai_order(
    b: Any,
    rid: str,
    started: int,
    *,
    drug: tuple[str, str] = ("199224", "anastrozole 1 MG Oral Tablet"),
    status: str = "active",
    validity_from: int | None = None,
) -> dict:
    """An AI order authored ``started`` days ago as an EHR sends it (authoredOn with a time and offset;
    with ``validity_from``, a ``dispenseRequest`` whose validity period starts that many days ago)."""
    order = b.med_request(rid, rxnorm=drug[0], display=drug[1], status=status)
    order["authoredOn"] = f"{b.ago(started)}T14:32:00-05:00"
    if validity_from is not None:
        order["dispenseRequest"] = {
            "validityPeriod": {"start": b.ago(validity_from), "end": b.ago(validity_from - 365)},
            "numberOfRepeatsAllowed": 3,
            "quantity": {
                "value": 90,
                "unit": "tablet",
                "system": "http://terminology.hl7.org/CodeSystem/v3-orderableDrugForm",
                "code": "TAB",
            },
            "expectedSupplyDuration": {
                "value": 90,
                "unit": "days",
                "system": "http://unitsofmeasure.org",
                "code": "d",
            },
        }
    return order


LETROZOLE = ("200064", "letrozole 2.5 MG Oral Tablet")
EXEMESTANE = ("310261", "exemestane 25 MG Oral Tablet")


def _estradiol_first_check(b: Any) -> None:
    e2 = b.estradiol
    due = card(E2_FIRST, "info", "Estradiol due", actions=["create"])
    # the first check is due from 90 days after the start; a result from before the start does not count
    fix(
        b,
        E2_FIRST,
        "in-started-90-days-only-result-before-start",
        b.record(ai=ai_order(b, "ai-1", 90, drug=LETROZOLE), e2=e2(31, days_ago=120)),
        cards=[card(E2_FIRST, "info", "letrozole started 90 days ago", actions=["create"])],
        not_cards=[E2_DUE],
    )
    fix(
        b,
        E2_FIRST,
        "out-started-89-days-only-result-before-start",
        b.record(ai=ai_order(b, "ai-1", 89, drug=LETROZOLE), e2=e2(31, days_ago=120)),
        not_cards=[E2_FIRST, E2_DUE],
    )
    # no estradiol at all: not yet asked for before the first check is due, then the first-check card
    fix(
        b,
        E2_FIRST,
        "in-no-estradiol-started-90-days",
        b.record(ai=ai_order(b, "ai-1", 90, drug=EXEMESTANE), e2=None),
        cards=[card(E2_FIRST, "info", "exemestane started 90 days ago", actions=["create"])],
        superseded=[E2_DUE],
    )
    fix(
        b,
        E2_FIRST,
        "out-no-estradiol-started-89-days",
        b.record(ai=ai_order(b, "ai-1", 89, drug=EXEMESTANE), e2=None),
        not_cards=[E2_FIRST, E2_DUE],
    )
    # the start is the earliest of the AI orders on record, and of a dispense validity period
    fix(
        b,
        E2_FIRST,
        "in-renewal-validity-period-started-earlier",
        b.record(ai=ai_order(b, "ai-1", 30, validity_from=95), e2=e2(31, days_ago=100)),
        cards=[card(E2_FIRST, "info", "started 95 days ago")],
        not_cards=[E2_DUE],
    )
    fix(
        b,
        E2_FIRST,
        "in-earliest-order-on-record-stopped",
        b.record(
            ai=[ai_order(b, "ai-old", 150, drug=LETROZOLE, status="stopped"), ai_order(b, "ai-1", 20)],
            e2=e2(31, days_ago=200),
        ),
        cards=[card(E2_FIRST, "info", "started 150 days ago")],
        not_cards=[E2_DUE],
    )
    fix(
        b,
        E2_FIRST,
        "out-earlier-order-entered-in-error",
        b.record(
            ai=[ai_order(b, "ai-old", 150, status="entered-in-error"), ai_order(b, "ai-1", 20)],
            e2=e2(31, days_ago=200),
        ),
        not_cards=[E2_FIRST, E2_DUE],
    )
    fix(
        b,
        E2_FIRST,
        "out-checked-since-start",
        b.record(ai=ai_order(b, "ai-1", 120, drug=LETROZOLE), e2=e2(26, days_ago=10)),
        not_cards=[E2_FIRST, E2_DUE],
    )
    fix(
        b,
        E2_FIRST,
        "in-result-before-start-only-unusable-since",
        b.record(ai=ai_order(b, "ai-1", 120), e2=[e2(31, days_ago=150), e2(None, days_ago=10, rid="e2-2")]),
        cards=[due, card("evaluation-gaps", "info")],
        not_cards=[E2_DUE],
    )
    fix(
        b,
        E2_FIRST,
        "out-estradiol-being-ordered",
        b.record(
            ai=ai_order(b, "ai-1", 120),
            e2=e2(31, days_ago=150),
            order=b.service_request("sr-e2", b.LOINC, "72873-3", "Estradiol LC-MS/MS"),
        ),
        not_cards=[E2_FIRST, E2_DUE],
    )
    fix(
        b,
        E2_FIRST,
        "out-woman-started-120-days",
        b.record(sex="female", age=64, ai=ai_order(b, "ai-1", 120, drug=LETROZOLE)),
        not_cards=[E2_FIRST, E2_DUE],
    )
    # then yearly: a result since the start counts for 365 days
    fix(
        b,
        E2_DUE,
        "in-366-days-after-first-check",
        b.record(ai=ai_order(b, "ai-1", 500), e2=e2(28, days_ago=366)),
        cards=[card(E2_DUE, "info", "No estradiol result in the last 365 days")],
        not_cards=[E2_FIRST],
    )
    fix(
        b,
        E2_DUE,
        "out-365-days-after-first-check",
        b.record(ai=ai_order(b, "ai-1", 500), e2=e2(28, days_ago=365)),
        not_cards=[E2_FIRST, E2_DUE],
    )


# -- menopausal status: age, ovarian suppression -------------------------------------------------------------

GOSERELIN = {"rxnorm": "50610", "display": "goserelin"}
LEUPROLIDE = {"rxnorm": "42375", "display": "leuprolide"}


def ofs(b: Any, status: str = "active", **code: Any) -> dict:
    order = b.med_request("ofs", status=status, timing=False, **code)
    order["dosageInstruction"] = [
        {
            "text": "1 implant subcutaneously every 28 days",
            "timing": {"repeat": {"frequency": 1, "period": 28, "periodUnit": "d"}},
        }
    ]
    return order


def _menopausal_status(b: Any) -> None:
    woman = {"sex": "female", "ai": ai_order(b, "ai-1", 200, drug=LETROZOLE)}
    fix(
        b,
        BY_AGE,
        "in-woman-49",
        b.record(age=49, **woman),
        fired=[BY_AGE],
        not_fired=[BY_OFS],
        derived=[{"t": "not_postmenopausal", "reason": "age"}],
    )
    fix(b, BY_AGE, "out-woman-50", b.record(age=50, **woman), not_fired=[BY_AGE, BY_OFS])
    fix(b, BY_AGE, "out-man-40", b.record(age=40), not_fired=[BY_AGE, BY_OFS])
    fix(
        b,
        BY_AGE,
        "out-woman-44-on-goserelin-named-instead",
        b.record(age=44, ofs=ofs(b, **GOSERELIN), **woman),
        fired=[BY_OFS],
        not_fired=[BY_AGE],
        derived=[
            {"t": "not_postmenopausal", "reason": "ovarian suppression", "ovarian_suppression": "goserelin"}
        ],
    )
    for name, order, ingredient in (
        ("in-woman-56-triptorelin-atc", ofs(b, atc="L02AE04"), "triptorelin"),
        ("in-woman-52-leuprolide-rxnorm", ofs(b, **LEUPROLIDE), "leuprolide"),
        ("in-woman-58-zoladex-name-only", ofs(b, text="Zoladex 3.6 mg implant"), "goserelin"),
        (
            "in-woman-51-leuprorelin-draft",
            ofs(b, status="draft", text="leuprorelin 3.75 mg depot"),
            "leuprolide",
        ),
    ):
        age = int(name.split("-")[2])
        fix(
            b,
            BY_OFS,
            name,
            b.record(age=age, ofs=order, **woman),
            fired=[BY_OFS],
            derived=[{"t": "not_postmenopausal", "ovarian_suppression": ingredient}],
        )
    fix(
        b,
        BY_OFS,
        "out-goserelin-stopped",
        b.record(age=55, ofs=ofs(b, status="stopped", **GOSERELIN), **woman),
        not_fired=[BY_OFS, BY_AGE],
    )
    fix(b, BY_OFS, "out-man-on-leuprolide", b.record(age=40, ofs=ofs(b, **LEUPROLIDE)), not_fired=[BY_OFS])


# -- a Z-score-only report read for a woman not read as postmenopausal ---------------------------------------


def z_only(b: Any, value: float, site: str = "lumbar_spine") -> dict:
    return b.dxa("dxa-z", site, "z_score", value, 40)


def _z_score_read(b: Any) -> None:
    def woman(age: int, drug: tuple[str, str] = LETROZOLE, **slots: Any) -> list:
        return b.record(sex="female", age=age, ai=ai_order(b, "ai-1", 300, drug=drug), **slots)

    named = "with ovarian suppression (leuprolide)"
    fix(
        b,
        Z_READ,
        "in-38-letrozole-leuprolide-spine-z-minus-2.3",
        woman(38, dxa=z_only(b, -2.3), ofs=ofs(b, **LEUPROLIDE)),
        cards=[card(LOW, "warning", named, actions=["create"], detail_contains="fastest bone loss")],
        fired=[Z_READ, BY_OFS],
    )
    fix(
        b,
        Z_READ,
        "in-56-exemestane-goserelin-hip-z-minus-2.0",
        woman(56, EXEMESTANE, dxa=z_only(b, -2.0, "hip"), ofs=ofs(b, **GOSERELIN)),
        cards=[card(LOW, "warning", "exemestane with ovarian suppression (goserelin)")],
        fired=[Z_READ],
    )
    fix(
        b,
        Z_READ,
        "out-38-letrozole-leuprolide-z-minus-1.9",
        woman(38, dxa=z_only(b, -1.9), ofs=ofs(b, **LEUPROLIDE)),
        not_cards=[LOW],
        not_fired=[Z_READ],
    )
    fix(
        b,
        Z_READ,
        "in-45-anastrozole-no-suppression-z-minus-2.0",
        woman(45, ("199224", "anastrozole 1 MG Oral Tablet"), dxa=z_only(b, -2.0)),
        cards=[
            card(
                LOW,
                "warning",
                "below the expected range for age, on anastrozole",
                detail_lacks=["ovarian suppression"],
            )
        ],
        fired=[Z_READ, BY_AGE],
    )
    fix(
        b,
        Z_READ,
        "out-50-no-suppression-z-minus-2.5",
        woman(50, dxa=z_only(b, -2.5)),
        not_cards=[LOW],
        not_fired=[Z_READ],
    )
    fix(
        b,
        Z_READ,
        "out-not-on-ai",
        b.record(sex="female", age=38, ai=None, dxa=z_only(b, -2.6), ofs=ofs(b, **LEUPROLIDE)),
        not_cards=[LOW],
        not_fired=[Z_READ],
    )
    # a report with T-scores keeps the Hadji/ASCO advice: the Z-score is not read beside it
    both = [
        b.dxa("dxa-t", "lumbar_spine", "t_score", -1.2, 40),
        b.dxa("dxa-z", "lumbar_spine", "z_score", -2.3, 40),
    ]
    fix(
        b,
        Z_READ,
        "out-t-score-reported-too",
        woman(38, dxa=both, ofs=ofs(b, **LEUPROLIDE)),
        cards=[card("osteopenia-on-ai", "info", "T-score -1.2")],
        not_cards=[LOW],
        not_fired=[Z_READ],
    )
    hadji = [
        b.dxa("dxa-t", "lumbar_spine", "t_score", -2.1, 40),
        b.dxa("dxa-z", "lumbar_spine", "z_score", -1.2, 40),
    ]
    hadji_ofs = "bone-density-ai-treatment-threshold-ovarian-suppression"
    fix(
        b,
        hadji_ofs,
        "in-40-on-goserelin-t-minus-2.1-hadji-named",
        woman(40, dxa=hadji, ofs=ofs(b, **GOSERELIN)),
        cards=[card(LOW, "warning", "T-score -2.1 at the Lumbar spine on letrozole with ovarian suppression "
                    "(goserelin)", detail_contains="Hadji 2017")],
        fired=[hadji_ofs, "bone-density-ai-treatment-threshold"],
        not_fired=[Z_READ],
    )
    fix(
        b,
        hadji_ofs,
        "out-40-on-goserelin-t-minus-2.0",
        woman(40, dxa=[b.dxa("dxa-t", "lumbar_spine", "t_score", -2.0, 40)], ofs=ofs(b, **GOSERELIN)),
        cards=[card("osteopenia-on-ai", "info", "T-score -2.0")],
        not_cards=[LOW],
        not_fired=[hadji_ofs],
    )
    fix(
        b,
        hadji_ofs,
        "out-63-no-suppression-t-minus-2.1",
        woman(63, dxa=hadji),
        cards=[card(LOW, "warning", "T-score -2.1", detail_lacks=["ovarian suppression"])],
        not_fired=[hadji_ofs],
    )
    # a site reading every woman under 50 by Z-score: the card still names the ovarian suppression
    fix(
        b,
        Z_READ,
        "in-site-proxy-50-38-leuprolide-z-minus-2.2-named",
        woman(38, dxa=z_only(b, -2.2), ofs=ofs(b, **LEUPROLIDE)),
        cards=[card(LOW, "warning", "letrozole with ovarian suppression (leuprolide)")],
        fired=[Z_READ, "bone-density-below-expected-for-age"],
        site_config={"thresholds": {"postmenopausal_proxy_age": 50}},
    )


# -- SERMs are not bone protection for a woman on an AI; for a man they still count --------------------------


def _serms(b: Any) -> None:
    raloxifene = b.med_request("bp", rxnorm="1490065", display="raloxifene hydrochloride 60 MG Oral Tablet")
    t = b.dxa("dxa-t", "lumbar_spine", "t_score", -2.7, 40)
    fix(
        b,
        LOW,
        "in-woman-letrozole-on-raloxifene",
        b.record(sex="female", age=66, ai=ai_order(b, "ai-1", 300, drug=LETROZOLE), dxa=t, bp=raloxifene),
        cards=[
            card(
                LOW,
                "warning",
                "no bone-protective therapy",
                actions=["create"],
                detail_contains="not a bone-protective option",
            )
        ],
    )
    fix(
        b,
        LOW,
        "in-woman-exemestane-on-evista-text",
        b.record(
            sex="female",
            age=71,
            ai=ai_order(b, "ai-1", 300, drug=EXEMESTANE),
            dxa=t,
            bp=b.med_request("bp", text="Evista 60 mg tablet"),
        ),
        cards=[card(LOW, "warning", "on exemestane")],
    )
    fix(b, LOW, "out-man-on-raloxifene", b.record(dxa=t, bp=raloxifene), not_cards=[LOW])
    fix(
        b,
        "osteopenia-on-ai",
        "in-woman-on-raloxifene",
        b.record(
            sex="female", age=63, dxa=b.dxa("dxa-t", "lumbar_spine", "t_score", -1.5, 40), bp=raloxifene
        ),
        cards=[card("osteopenia-on-ai", "info", "Osteopenia")],
    )
    fix(
        b,
        "on-bone-protective-therapy",
        "out-woman-on-raloxifene",
        b.record(sex="female", age=63, bp=b.med_request("bp", atc="G03XC01")),
        not_fired=["on-bone-protective-therapy"],
    )


# -- calcium as Synthea codes it -----------------------------------------------------------------------------


def synthea_calcium(b: Any, value: float, days_ago: int) -> dict:
    """Synthea's calcium: LOINC 49765-1 "Calcium [Mass/volume] in Blood", a 17-digit float in mg/dL."""
    obs = b.lab("ca-syn", "49765-1", value, "mg/dL", days_ago, display="Calcium [Mass/volume] in Blood")
    obs["code"]["text"] = "Calcium [Mass/volume] in Blood"
    return obs


def _synthea_calcium(b: Any) -> None:
    due, low = "calcium-monitoring-due", "calcium-low-on-ai"
    fix(
        b,
        due,
        "out-synthea-49765-1-365-days",
        b.record(ca=synthea_calcium(b, 9.4172530212453, 365)),
        not_cards=[due, low],
    )
    fix(
        b,
        due,
        "in-synthea-49765-1-366-days",
        b.record(ca=synthea_calcium(b, 9.4172530212453, 366)),
        cards=[card(due, "info", "No calcium result")],
    )
    fix(
        b,
        low,
        "in-synthea-49765-1-8.49-mg-dl",
        b.record(ca=synthea_calcium(b, 8.4912345678901234, 30)),
        cards=[card(low, "warning", "8.49")],
        fired=["low-calcium"],
    )
    fix(
        b,
        low,
        "out-synthea-49765-1-8.5-mg-dl",
        b.record(ca=synthea_calcium(b, 8.5, 30)),
        not_cards=[low, due],
        not_fired=["low-calcium"],
    )
