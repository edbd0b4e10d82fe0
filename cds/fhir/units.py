"""Unit normalisation for laboratory values. Pure; the factors live in ``rules/valuesets.yaml``.

An unknown unit is never guessed: ``to_canonical`` returns ``(None, reason)`` and the caller reports it.
"""

from __future__ import annotations

import math
from typing import Any


def to_canonical(value: float, unit: str, analyte: dict[str, Any]) -> tuple[float | None, str]:
    """Convert ``value`` in ``unit`` to the analyte's canonical unit, or say why not."""
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        return None, "the value is not a finite number"
    if value < 0:
        return None, "a negative concentration is not a valid result"
    factors = analyte.get("units", {})
    if not unit:
        return None, f"no unit was given (expected one of {', '.join(factors)})"
    if unit not in factors:
        return None, f"unit {unit!r} is not recognised (expected one of {', '.join(factors)})"
    converted = value * float(factors[unit])
    if not math.isfinite(converted) or converted > 1e9:
        return None, "the value is outside any plausible range"
    return converted, ""
