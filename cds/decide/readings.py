"""Lab and DXA readings turned into the numbers and words the facts carry. Pure code.

* ``shown_value``: a lab result in the analyte's canonical unit, as a card quotes it ("14.2 pg/mL", and
  for a result below or above a limit the limit with its comparator, "<5 pg/mL");
* ``reported_precision``: T- and Z-scores to one decimal place, BMD to three (ISCD reporting precision);
* ``dxa_site``: the site a DXA value is about, named from ``bodySite`` when the Observation has one
  (femoral neck arrives as a femur code plus ``bodySite``), so that only scans of the same region are
  compared;
* ``dxa_unit_problem``: why a DXA value's unit cannot be used, or "".
"""

from __future__ import annotations

import datetime as dt
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from cds.fhir.units import match_unit
from cds.fhir.values import Reading, quoted

#: each DXA measure as a card names it
MEASURE = {"t_score": "T-score", "z_score": "Z-score", "bmd": "BMD"}
#: decimal places of each DXA measure as reported (ISCD Official Positions)
PRECISION = {"t_score": 1, "z_score": 1, "bmd": 3}
SNOMED = "http://snomed.info/sct"
#: the site-configuration switch that reads HL7's "g/cm-2" as g/cm2 (see docs/site-config.md)
G_CM_MINUS_2 = "read_g_cm-2_as_g_cm2"


def observed_date(obs: Any) -> dt.date | None:
    """When an Observation was made: effective[x], else issued."""
    value = (
        obs.effectiveDateTime or (obs.effectivePeriod.start if obs.effectivePeriod else None) or obs.issued
    )
    return to_date(value)


def to_date(value: Any) -> dt.date | None:
    """A FHIR date or dateTime (a partial date counts as its first day) as a date, or None."""
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    text = str(value)
    try:
        parts = [int(p) for p in text[:10].split("-")]
        return dt.date(parts[0], parts[1] if len(parts) > 1 else 1, parts[2] if len(parts) > 2 else 1)
    except (ValueError, IndexError):
        return None


def shown_value(canonical: float, reading: Reading, unit: str) -> str:
    """The value a card quotes, in the canonical unit: "14.2 pg/mL"; "<5 pg/mL" for a limit."""
    if not reading.comparator:
        return f"{canonical:.1f} {unit}"
    same = reading.number is not None and abs(canonical - reading.number) <= 1e-9 * max(1.0, canonical)
    number = reading.number_text if same else f"{canonical:.1f}"
    return f"{reading.comparator}{number} {unit}"


def reported_precision(kind: str, value: float) -> float:
    """``value`` rounded half away from zero to the decimals ISCD reports ``kind`` with."""
    step = Decimal(1).scaleb(-PRECISION[kind])
    return float(Decimal(repr(value)).quantize(step, rounding=ROUND_HALF_UP))


def dxa_site(site: str, obs: Any, vs: dict[str, Any]) -> tuple[str, str]:
    """``(grouping key, title)`` of a DXA value: the LOINC site, refined by ``bodySite`` when sent."""
    title = vs["dxa"][site]["title"]
    concept = getattr(obs, "bodySite", None)
    if concept is None:
        return site, title
    named = vs.get("dxa_body_sites") or {}
    for coding in concept.coding or []:
        if coding.system == SNOMED and coding.code in named:
            name = named[coding.code]
            side = next((w for w in ("Left", "Right") if title.startswith(w + " ")), "")
            return f"{site}@{coding.code}", f"{side} {name.lower()}".strip() if side else name
    text = concept.text or next((c.display for c in concept.coding or [] if c.display), None)
    code = next((c.code for c in concept.coding or [] if c.code), None)
    if not text and not code:
        return site, title
    return f"{site}@{code or text}", quoted(text) if text else title


def dxa_unit_problem(kind: str, reading: Reading, vs: dict[str, Any]) -> str:
    """Why the unit of a DXA value cannot be used, or "" when it can."""
    units = vs.get("dxa_units") or {}
    unit = reading.unit
    if kind != "bmd":
        if (
            unit in units.get("score", [])
            or match_unit(unit, ["1"])
            or unit.strip().lower() in {t.lower() for t in units.get("score_text", [])}
        ):
            return ""
        return "which this service does not recognise"
    if match_unit(unit, units.get("bmd", [])):
        return ""
    if unit == "g/cm-2":
        if (vs.get("site_units") or {}).get(G_CM_MINUS_2):
            return ""
        return (
            "which UCUM reads as g.cm2, not g/cm2, so it was set aside (a site whose DXA system means "
            f"g/cm2 by it sets units.{G_CM_MINUS_2} in its site configuration)"
        )
    return "which this service does not recognise"
