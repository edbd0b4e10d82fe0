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


def canonical(ucum: str) -> tuple[str, float] | None:
    """``(dimension, magnitude in base units)`` of a UCUM unit, or None when it is not valid UCUM.

    An annotation alone (``{T-Score}``) and the empty unit are the unity ``1``, as UCUM says. Only units of
    at most 64 characters are looked up, and kept in the cache: its 4,096 keys stay short.
    """
    text = ucum.strip()
    if text == "" or re.fullmatch(r"\{[^{}]*\}", text):
        return "dimensionless", 1.0
    if len(text) > 64:
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
    for spelled, ucum in aliases.items():
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
        return None, f"unit {unit!r} is not recognised (expected one of {', '.join(factors)})"
    converted = value * float(factors[known])
    if not math.isfinite(converted) or converted > 1e9:
        return None, "the value is outside any plausible range"
    return converted, ""
