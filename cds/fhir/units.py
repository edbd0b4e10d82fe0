"""Unit normalisation for laboratory and DXA values. Pure; the accepted units and factors live in
``rules/valuesets.yaml``.

Units are read as UCUM by ``ucumvert`` (a parser of the full UCUM grammar, offline, with a pint registry
for the canonical form): two spellings are the same unit when they have the same dimension and the same
magnitude in base units (``ng/mL`` = ``ug/L``; ``pg/mL`` = ``ng/L``; ``g/cm2`` = ``g.cm-2``). Each analyte
lists the units it accepts with the factor to its canonical unit (the molar factors are cited data); a
unit is accepted when it is a UCUM spelling of one of them. A unit given only as text (``unit`` without a
UCUM ``code``) is read the same way after the spelling aliases of ``unit_text_aliases`` (``mcg`` for
``ug``). An unknown unit is never guessed: the functions return ``(None, reason)`` and the caller reports
it.

Bounds come before the UCUM library sees a unit (``unit_problem``): at most ``MAX_UNIT_CHARS`` characters,
every exponent within ``MAX_EXPONENT`` (the library computes ``10*29999999`` as an exact integer) and
every factor below ``MAX_FACTOR``. A unit beyond them is not recognised, and the reason says which bound.
Every check here is one pass over the text: linear in its length.
"""

from __future__ import annotations

import functools
import math
import re
import threading
from collections.abc import Mapping
from typing import Any

_LOCK = threading.Lock()
_REGISTRY: Any = None
#: relative difference below which two magnitudes are the same unit (UCUM factors are exact decimals;
#: the float arithmetic of the registry leaves ~1e-16)
_SAME = 1e-9
#: longest unit handed to the UCUM library (the longest accepted unit is a few characters)
MAX_UNIT_CHARS = 64
#: largest power a unit may carry (``10*12`` per litre, ``cm2``); the library computes powers exactly
MAX_EXPONENT = 30
#: a numeric factor of a unit (``24.h``, ``1000.mL``) is below 10 to this power
FACTOR_DIGITS = 12
MAX_FACTOR = 10**FACTOR_DIGITS
_DIGITS = frozenset("0123456789")
#: what may stand before a factor (a number that multiplies) rather than an exponent (a power)
_TERM_START = frozenset("./(")


def _registry() -> Any:
    global _REGISTRY
    if _REGISTRY is None:
        from ucumvert import PintUcumRegistry

        _REGISTRY = PintUcumRegistry()
    return _REGISTRY


def warm_up() -> None:
    """Load the UCUM registry (a few hundred milliseconds) before the first request needs it."""
    with _LOCK:
        _registry()
    canonical("pg/mL")


def _annotation_only(text: str) -> bool:
    """``{T-Score}``: one annotation, nothing else (UCUM reads it as the unity)."""
    return len(text) >= 2 and text[0] == "{" and text[-1] == "}" and "{" not in text[1:-1] \
        and "}" not in text[1:-1]


def unit_problem(ucum: str) -> str:
    """Why ``ucum`` is not handed to the UCUM library ("" when it may be): too long, or a number in it
    beyond the bounds. One pass: names in ``[...]`` and annotations in ``{...}`` are skipped; a run of digits
    (with its sign) right after a symbol is an exponent, one that opens a term is a factor."""
    text = ucum.strip()
    if len(text) > MAX_UNIT_CHARS:
        return f"is longer than {MAX_UNIT_CHARS} characters"
    closing = {"[": "]", "{": "}"}
    index = 0
    while index < len(text):
        char = text[index]
        if char in closing:
            end = text.find(closing[char], index + 1)
            if end < 0:
                return f"has a {char!r} that is never closed"
            index = end + 1
            continue
        start = index + 1 if char in "+-" else index
        end = start
        while end < len(text) and text[end] in _DIGITS:
            end += 1
        if end == start:
            index += 1
            continue
        value = int(text[start:end])
        if index == 0 or text[index - 1] in _TERM_START:
            if value >= MAX_FACTOR:
                return f"has the factor {text[index:end]}, beyond any unit's (below 10^{FACTOR_DIGITS})"
        elif value > MAX_EXPONENT:
            return f"has the exponent {text[index:end]}, beyond any unit's (at most ±{MAX_EXPONENT})"
        index = end
    return ""


def canonical(ucum: str) -> tuple[str, float] | None:
    """``(dimension, magnitude in base units)`` of a UCUM unit, or None when it is not valid UCUM or is
    beyond the bounds of ``unit_problem`` (checked before the library sees it).

    An annotation alone (``{T-Score}``) and the empty unit are the unity ``1``, as UCUM says. Only units of
    at most 64 characters are looked up, and kept in the cache: its 4,096 keys stay short.
    """
    text = ucum.strip()
    if text == "" or _annotation_only(text):
        return "dimensionless", 1.0
    if unit_problem(text):
        return None
    return _canonical(text)


@functools.lru_cache(maxsize=4096)
def _canonical(text: str) -> tuple[str, float] | None:
    try:
        with _LOCK:
            quantity = _registry().from_ucum(text)
            base = (1 * quantity).to_base_units()
            dimension = str(base.dimensionality)
            magnitude = float(base.magnitude)
    except Exception:  # noqa: BLE001 - the parser raises several types for invalid input; all mean "not UCUM"
        return None
    if not math.isfinite(magnitude) or magnitude <= 0:
        return None
    return dimension, magnitude


def same_unit(a: str, b: str) -> bool:
    """Whether two UCUM strings spell the same unit."""
    ca, cb = canonical(a), canonical(b)
    return ca is not None and cb is not None and ca[0] == cb[0] and abs(ca[1] - cb[1]) <= _SAME * cb[1]


def from_text(text: str, aliases: Mapping[str, str]) -> str:
    """A unit given only as text, with the usual non-UCUM spellings replaced (``mcg/L`` -> ``ug/L``)."""
    out = text.strip()
    if len(out) > MAX_UNIT_CHARS:
        return out  # no unit: ``canonical`` refuses it, saying why
    for spelled, ucum in aliases.items():  # a literal between two one-character looks: linear
        out = re.sub(rf"(?<![A-Za-z]){re.escape(spelled)}(?![A-Za-z])", ucum, out)
    return out


def match_unit(unit: str, accepted: Mapping[str, Any] | list[str]) -> str | None:
    """The accepted unit ``unit`` is a spelling of (exact match first), or None."""
    if unit in accepted:
        return unit
    return next((known for known in accepted if same_unit(unit, known)), None)


def to_canonical(value: float, unit: str, analyte: dict[str, Any]) -> tuple[float | None, str]:
    """Convert ``value`` in ``unit`` to the analyte's canonical unit, or say why not."""
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        return None, "the value is not a finite number"
    if value < 0:
        return None, "a negative concentration is not a valid result"
    factors = analyte.get("units", {})
    if not unit:
        return None, f"no unit was given (expected one of {', '.join(factors)})"
    known = match_unit(unit, factors)
    if known is None:
        problem = unit_problem(unit)
        shown = unit if len(unit) <= MAX_UNIT_CHARS else unit[:MAX_UNIT_CHARS - 1] + "…"
        said = f"{problem}; " if problem else ""
        return None, f"unit {shown!r} is not recognised ({said}expected one of {', '.join(factors)})"
    converted = value * float(factors[known])
    if not math.isfinite(converted) or converted > 1e9:
        return None, "the value is outside any plausible range"
    return converted, ""
