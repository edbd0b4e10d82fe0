"""The value of an Observation as a laboratory or DXA system reports it. Pure; reads parsed R4B models.

Handled shapes (see docs/rules.md, "Values as laboratories report them"):

* ``valueQuantity`` with an optional ``comparator`` (``<``, ``<=``, ``>``, ``>=``): a result below or above
  a limit of quantitation; the true value is at most (at least) the number;
* ``valueString`` such as ``"<5"``, ``"<5 pg/mL"``, ``"> 100 ng/mL"`` or ``"14.2 pg/mL"``: read the same way;
  a string without a unit ("<5") has no unit, and an unknown unit is never guessed;
* the unit: the UCUM ``code`` when the system is UCUM (or not given), else the ``unit`` text with the
  usual non-UCUM spellings replaced (``mcg`` -> ``ug``);
* ``dataAbsentReason``, a text result ("Haemolysed"), or no value at all: not usable, and why.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from cds.fhir.units import from_text

UCUM = "http://unitsofmeasure.org"
COMPARATORS = ("<=", ">=", "<", ">")
_SIGNS = {"≤": "<=", "≥": ">=", "=<": "<=", "=>": ">="}
#: the signs a text result may open with, longest first ("<=" before "<")
_LEADING_SIGNS = ("<=", ">=", "=<", "=>", "<", ">", "≤", "≥")
_DIGITS = frozenset("0123456789")
#: longest text quoted back from a result
MAX_QUOTED = 40
#: most characters in the number of a text result ("14.2", "0.00051"): a longer run of digits is no
#: laboratory's result, and is never handed to float()
MAX_NUMBER_CHARS = 24


@dataclass(frozen=True)
class Reading:
    """One Observation's value: a number (with its comparator and unit), or why there is none."""

    number: float | None = None
    comparator: str = ""
    unit: str = ""  # the UCUM unit used for conversion ("" when none was given)
    unit_text: str = ""  # the unit as shown to a person (the ``unit`` text, else the code)
    number_text: str = ""  # the number as reported ("5", "14.20")
    why: str = ""  # non-empty: the value cannot be used, and why

    @property
    def reported(self) -> str:
        """The result as reported: "<5 pg/mL", "14.2 pg/mL"."""
        return f"{self.comparator}{self.number_text} {self.unit_text}".strip()


def quoted(text: str) -> str:
    """A reported text on one line, cut to ``MAX_QUOTED`` characters."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= MAX_QUOTED else flat[: MAX_QUOTED - 1] + "…"


def _digits_end(text: str, start: int) -> int:
    """The index after the run of ASCII digits of ``text`` that begins at ``start``, looking no further
    than ``MAX_NUMBER_CHARS + 1`` characters (a longer number is refused, however long it is)."""
    end, stop = start, min(len(text), start + MAX_NUMBER_CHARS + 1)
    while end < stop and text[end] in _DIGITS:
        end += 1
    return end


def split_text(text: str) -> tuple[str, str, str] | None:
    """``(sign, number, unit text)`` of a text result such as ``"< 5 pg/mL"``, or None when it does not
    open with a number (after an optional sign). One pass over the text, no backtracking: linear in its
    length whatever it holds. The unit is the rest of the text, on one line (a line break inside it: not a
    result but a text). A number longer than ``MAX_NUMBER_CHARS`` comes back cut just past that length."""
    rest = text.strip()
    sign = next((s for s in _LEADING_SIGNS if rest.startswith(s)), "")
    rest = rest[len(sign):].lstrip()
    whole = _digits_end(rest, 0)
    end = whole
    if rest[whole:whole + 1] == "." and _digits_end(rest, whole + 1) > whole + 1:
        end = _digits_end(rest, whole + 1)  # "14.2", ".5"; a "." not followed by a digit is the unit's
    if end == 0:
        return None
    unit = rest[end:].strip()
    if "\n" in unit:
        return None
    return sign, rest[:end], unit


def _concept_text(concept: Any) -> str:
    if concept is None:
        return ""
    if concept.text:
        return str(concept.text)
    for coding in concept.coding or []:
        if coding.display or coding.code:
            return str(coding.display or coding.code)
    return ""


def _number_text(value: Any) -> str:
    """The number as reported ("14.20"); in exponent form when that would be longer than
    ``MAX_NUMBER_CHARS`` (a magnitude such as 1e300 is written out as digits by no one)."""
    if isinstance(value, Decimal) and abs(value.adjusted()) < MAX_NUMBER_CHARS // 2:
        text = format(value, "f")
        if len(text) <= MAX_NUMBER_CHARS:
            return text
    return f"{float(value):g}"


def _quantity_unit(q: Any, aliases: Mapping[str, str]) -> tuple[str, str]:
    """``(unit for conversion, unit as shown)`` of a Quantity."""
    code = (q.code or "").strip()
    text = (q.unit or "").strip()
    if code and q.system in (None, UCUM):
        return code, quoted(text or code)
    return from_text(text, aliases), quoted(text)


def read(obs: Any, aliases: Mapping[str, str]) -> Reading:
    """The value of ``obs`` (an R4B Observation) as reported, or why it cannot be used."""
    absent = getattr(obs, "dataAbsentReason", None)
    if absent is not None:
        reason = quoted(_concept_text(absent)) or "no reason given"
        return Reading(why=f"has no numeric value (data absent: {reason})")
    q = obs.valueQuantity
    if q is not None:
        raw = q.value
        if raw is None or not math.isfinite(float(raw)):
            return Reading(why="has no numeric value")
        unit, shown = _quantity_unit(q, aliases)
        comparator = q.comparator or ""
        if comparator and comparator not in COMPARATORS:
            return Reading(why=f"has comparator {quoted(comparator)!r}, which is not a FHIR comparator")
        return Reading(float(raw), comparator, unit, shown, _number_text(raw))
    text = getattr(obs, "valueString", None)
    if text is not None:
        found = split_text(str(text))
        if not found:
            return Reading(why=f"was reported as text {quoted(text)!r}, not a number")
        sign, number, unit_text = found
        if len(number) > MAX_NUMBER_CHARS:
            return Reading(why=f"was reported as a number longer than any result has (more than "
                               f"{MAX_NUMBER_CHARS} characters)")
        comparator = _SIGNS.get(sign, sign)
        unit = from_text(unit_text, aliases) if unit_text else ""
        return Reading(float(number), comparator, unit, quoted(unit_text), number)
    return Reading(why="has no numeric value")
