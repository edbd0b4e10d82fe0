"""Lab facts read together: albumin-corrected calcium, ionized calcium standing in for total calcium, a
second unit to quote, and whether a drug's monitoring test has been done since the drug (the order, and
the course: the earliest order of its class on record) started.

Called by ``cds.decide.facts`` once every result has been read; pure. The numbers (the Payne coefficient and
reference albumin, the ionized-calcium switch) are the pack's thresholds after site overrides; which
analyte corrects calcium and which thresholds are the formula's constants (``labs.calcium.corrected_for``),
the mg/dL-to-mmol/L factor (``labs.calcium.units``), the analytes that monitor a drug class and the unit to
quote beside the canonical one are value-set data (``labs.<analyte>.monitors``, ``labs.<analyte>.also_show``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

Lab = dict[str, Any]


def albumin_corrected_calcium(calcium: Lab, albumin_same_day: Lab | None,
                              thresholds: Mapping[str, float], spec: Mapping[str, Any]) -> None:
    """Give the calcium fact the value the rules assess: total calcium, or Payne-corrected with the albumin
    of the same day (``assessed``, ``assessed_as``, ``assessed_text``). A limit ("<X") is never corrected.
    ``spec`` is the analyte's value-set entry: its ``corrected_for`` names the thresholds that are the
    formula's constants, its ``units`` the mmol/L factor."""
    calcium["assessed"] = calcium["value"]
    calcium["assessed_as"] = "total"
    calcium["assessed_text"] = f"total calcium {calcium['reported']}"
    calcium["assessed_brief"] = str(calcium["reported"])
    calcium["limit_text"] = (f"below {thresholds.get('calcium_low_mg_dl', 0):g} mg/dL "
                             f"({thresholds.get('calcium_low_mmol_l', 0):g} mmol/L)")
    _in_reported_unit(calcium, spec)
    correction = spec.get("corrected_for") or {}
    coefficient = thresholds.get(correction.get("coefficient", ""), 0)
    if albumin_same_day is None or not coefficient or "comparator" in calcium \
            or "comparator" in albumin_same_day:
        return
    reference = thresholds[correction["reference"]]
    corrected = round(calcium["value"] + coefficient * (reference - albumin_same_day["value"]), 4)
    text = (f"albumin-corrected calcium {corrected:.1f} mg/dL (total {calcium['reported']}, "
            f"albumin {albumin_same_day['reported']} the same day)")
    calcium.update(assessed=corrected, assessed_as="albumin-corrected", albumin=albumin_same_day["value"],
                   albumin_ref=albumin_same_day["ref"], assessed_text=text,
                   assessed_brief=f"{corrected:.1f} mg/dL albumin-corrected")
    _in_reported_unit(calcium, spec)


def _in_reported_unit(calcium: Lab, spec: Mapping[str, Any]) -> None:
    """The assessed calcium also in mmol/L (by the value set's factor: mg/dL per mmol/L), and which unit the
    laboratory reported: a result is compared with the threshold in its own unit (8.5 mg/dL and 2.12 mmol/L
    are each the boundary as reported)."""
    calcium["assessed_mmol_l"] = round(calcium["assessed"] / float(spec["units"]["mmol/L"]), 3)
    calcium["assessed_in"] = "mmol/L" if str(calcium["reported"]).lower().endswith("mmol/l") else "mg/dL"


def also_shown(fact: Lab, spec: Mapping[str, Any]) -> None:
    """Quote the value in a second unit too (``also``: "13.9 nmol/L"), from the analyte's own factor."""
    unit = spec.get("also_show")
    factor = (spec.get("units") or {}).get(unit) if unit else None
    if not factor or not unit:
        return
    prefix = {"<": "<", "<=": "<=", ">": ">", ">=": ">="}.get(fact.get("comparator", ""), "")
    if str(fact.get("reported", "")).lower().endswith(unit.lower()):  # reported in it: quote the canonical
        fact["also"] = f"{prefix}{fact['value']:.1f} {spec['canonical_unit']}"
    else:
        fact["also"] = f"{prefix}{fact['value'] / float(factor):.{spec.get('also_decimals', 1)}f} {unit}"


def started(authored: Any) -> dt.date | None:
    if not authored:
        return None
    try:
        return dt.date.fromisoformat(str(authored)[:10])
    except ValueError:
        return None


def monitored_since_start(medications: list[dict[str, Any]], latest_lab: Mapping[str, Lab],
                          labs: Mapping[str, Any], thresholds: Mapping[str, float] | None = None) -> None:
    """For a drug class some analyte monitors (``labs.<analyte>.monitors``), say on each medication fact
    whether a usable result of that analyte is dated on or after the order's start
    (``checked_since_start``), how many days after the start the latest one was taken
    (``result_days_after_start``, negative before it), and, when the analyte names the threshold of its
    first on-treatment check (``labs.<analyte>.first_check``), the date that check is due
    (``first_check_date``)."""
    monitors = {cls: name for name, spec in labs.items() for cls in spec.get("monitors") or []}
    for med in medications:
        analyte = monitors.get(med["drug_class"])
        if analyte is None or "started" not in med:
            continue
        latest = latest_lab.get(analyte)
        med["checked_since_start"] = latest is not None and latest["date"] >= med["started"]
        start = dt.date.fromisoformat(med["started"])
        if latest is not None:
            med["result_days_after_start"] = (dt.date.fromisoformat(latest["date"]) - start).days
        first = (labs.get(analyte) or {}).get("first_check")
        if first and thresholds and first in thresholds:
            med["first_check_date"] = (start + dt.timedelta(days=int(thresholds[first]))).isoformat()


#: orders that never started a course: withdrawn before any dose, or never real
NEVER_STARTED = {"cancelled", "entered-in-error"}


def course_start(medications: list[dict[str, Any]], latest_lab: Mapping[str, Lab], labs: Mapping[str, Any],
                 today: dt.date) -> None:
    """For a drug class some analyte monitors, when the patient's course of it started: the earliest
    ``order_start`` among the class's orders on record (any status but cancelled or entered in error). Each
    medication fact of the class gets ``course_started``, ``course_started_days`` and
    ``checked_since_course_start`` (a usable result of the analyte dated on or after that start)."""
    monitors = {cls: name for name, spec in labs.items() for cls in spec.get("monitors") or []}
    for cls, analyte in monitors.items():
        mine = [m for m in medications if m["drug_class"] == cls]
        starts = [m["order_start"] for m in mine if "order_start" in m and m["status"] not in NEVER_STARTED]
        if not starts:
            continue
        first = min(starts)
        latest = latest_lab.get(analyte)
        for med in mine:
            med.update(course_started=first,
                       course_started_days=(today - dt.date.fromisoformat(first)).days,
                       checked_since_course_start=latest is not None and latest["date"] >= first)


def apply(latest_lab: dict[str, Lab], lab_days: Mapping[str, Mapping[str, Lab]], facts: list[dict[str, Any]],
          labs: Mapping[str, Any], thresholds: Mapping[str, float]) -> None:
    """Complete the lab and medication facts read together (see the module docstring)."""
    calcium = latest_lab.get("calcium")
    if calcium is not None:
        spec = labs.get("calcium") or {}
        corrected_with = (spec.get("corrected_for") or {}).get("analyte", "")
        albumin_same_day = lab_days.get(corrected_with, {}).get(calcium["date"])
        albumin_corrected_calcium(calcium, albumin_same_day, thresholds, spec)
    ionized = latest_lab.get("ionized_calcium")
    if ionized is not None and calcium is None and thresholds.get("ionized_calcium_substitutes"):
        ionized.update(substitutes=True, assessed_as="ionized",
                       assessed_brief=f"ionized {ionized['reported']}",
                       assessed_text=f"ionized calcium {ionized['reported']} (no total calcium; this site "
                                     "lets an ionized calcium stand in)",
                       limit_text=f"below this site's ionized calcium limit of "
                                  f"{thresholds.get('ionized_calcium_low_mmol_l', 0):g} mmol/L")
    for name, fact in latest_lab.items():
        also_shown(fact, labs.get(name) or {})
    monitored_since_start([f for f in facts if f["t"] == "medication"], latest_lab, labs, thresholds)
