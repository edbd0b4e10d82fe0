"""Named transforms a rule's ``update`` suggestion may apply to a draft order (``transform:`` in a rule
file)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any


def _halve_frequency(resource: dict[str, Any]) -> dict[str, Any] | None:
    """The same order taken half as often (period doubled), or None when it has no structured timing."""
    changed = copy.deepcopy(resource)
    done = False
    for dosage in changed.get("dosageInstruction", []) or []:
        repeat = ((dosage.get("timing") or {}).get("repeat")) or {}
        if isinstance(repeat.get("period"), int | float) and repeat.get("periodUnit"):
            repeat["period"] = repeat["period"] * 2
            dosage.pop("text", None)
            done = True
    return changed if done else None


TRANSFORMS: dict[str, Callable[[dict[str, Any]], dict[str, Any] | None]] = {
    "halve-frequency": _halve_frequency
}
