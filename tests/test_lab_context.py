"""Lab facts read together: Payne-corrected calcium, the unit a result is compared in, ionized calcium
standing in only where the site says so, and the on-treatment testosterone check."""

from __future__ import annotations

from cds.decide import lab_context
from cds.rules import pack as rulepack

LABS = rulepack.load().valuesets["labs"]
PAYNE = {"calcium_albumin_coefficient": 0.8, "calcium_reference_albumin_g_dl": 4.0}


def lab(analyte: str, value: float, reported: str, date: str = "2026-11-01", ref: str = "Observation/x"):
    return {"t": "lab", "analyte": analyte, "value": value, "reported": reported, "date": date, "ref": ref}


def test_calcium_is_corrected_with_an_albumin_of_the_same_day():
    ca = lab("calcium", 8.6, "8.6 mg/dL")
    lab_context.albumin_corrected_calcium(ca, lab("albumin", 4.5, "4.5 g/dL"), PAYNE, LABS["calcium"])
    assert ca["assessed"] == 8.2 and ca["assessed_as"] == "albumin-corrected"
    assert "albumin-corrected calcium 8.2 mg/dL" in ca["assessed_text"] and "4.5 g/dL" in ca["assessed_text"]


def test_calcium_without_albumin_or_with_a_zero_coefficient_is_total():
    ca = lab("calcium", 8.6, "8.6 mg/dL")
    lab_context.albumin_corrected_calcium(ca, None, PAYNE, LABS["calcium"])
    assert ca["assessed"] == 8.6 and ca["assessed_as"] == "total"
    ca = lab("calcium", 8.6, "8.6 mg/dL")
    no_correction = {**PAYNE, "calcium_albumin_coefficient": 0}
    lab_context.albumin_corrected_calcium(ca, lab("albumin", 3.0, "3.0 g/dL"), no_correction,
                                          LABS["calcium"])
    assert ca["assessed"] == 8.6


def test_a_limit_is_never_corrected():
    ca = {**lab("calcium", 5.0, "<5.0 mg/dL"), "comparator": "<"}
    lab_context.albumin_corrected_calcium(ca, lab("albumin", 2.0, "2.0 g/dL"), PAYNE, LABS["calcium"])
    assert ca["assessed"] == 5.0 and ca["assessed_as"] == "total"


def test_calcium_is_compared_in_the_unit_reported():
    ca = lab("calcium", 2.12 * 4.008016032, "2.12 mmol/L")
    lab_context.albumin_corrected_calcium(ca, None, PAYNE, LABS["calcium"])
    assert ca["assessed_in"] == "mmol/L" and ca["assessed_mmol_l"] == 2.12
    ca = lab("calcium", 8.5, "8.5 mg/dL")
    lab_context.albumin_corrected_calcium(ca, None, PAYNE, LABS["calcium"])
    assert ca["assessed_in"] == "mg/dL"


def test_ionized_calcium_stands_in_only_with_the_site_switch_and_no_total_calcium():
    for switch, total, expected in ((0, False, False), (1, False, True), (1, True, False)):
        latest = {"ionized_calcium": lab("ionized_calcium", 1.0, "1.0 mmol/L")}
        if total:
            latest["calcium"] = lab("calcium", 9.4, "9.4 mg/dL")
        lab_context.apply(latest, {}, [], LABS, {**PAYNE, "ionized_calcium_substitutes": switch})
        assert latest["ionized_calcium"].get("substitutes", False) is expected


def test_testosterone_is_quoted_in_the_other_unit():
    fact = lab("testosterone", 13.8 * 28.818443804, "13.8 nmol/L")
    lab_context.also_shown(fact, LABS["testosterone"])
    assert fact["also"] == "397.7 ng/dL"
    fact = lab("testosterone", 550, "550 ng/dL")
    lab_context.also_shown(fact, LABS["testosterone"])
    assert fact["also"] == "19.1 nmol/L"


def test_a_testosterone_result_counts_for_the_first_check_only_when_dated_since_the_start():
    meds = [{"t": "medication", "drug_class": "testosterone", "started": "2026-06-01"},
            {"t": "medication", "drug_class": "aromatase_inhibitor", "started": "2026-06-01"}]
    lab_context.monitored_since_start(meds, {"testosterone": lab("testosterone", 500, "500 ng/dL",
                                                                 date="2026-05-31")}, LABS)
    # the AI's own check is estradiol (its first check after the start): a testosterone result is not it
    assert meds[0]["checked_since_start"] is False and meds[1]["checked_since_start"] is False
    lab_context.monitored_since_start(meds, {"testosterone": lab("testosterone", 500, "500 ng/dL",
                                                                 date="2026-06-01")}, LABS)
    assert meds[0]["checked_since_start"] is True

