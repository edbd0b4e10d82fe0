"""Placeholders in rule text: ``{alias.field}`` or ``{alias.field:.1f}``, filled from matched facts.

``threshold.<name>`` and ``context.<field>`` are filled from the pack's thresholds and the hook context.
Pure code: data in, data out.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

PLACEHOLDER = re.compile(r"\{([a-z_][a-z0-9_]*)\.([A-Za-z_][A-Za-z0-9_]*)(?::([^{}]+))?\}")


def references(text: str) -> list[tuple[str, str]]:
    """Every ``(alias, field)`` a text refers to."""
    return [(m.group(1), m.group(2)) for m in PLACEHOLDER.finditer(text)]


def _fmt_number(value: float) -> str:
    return f"{value:g}" if abs(value) < 1e6 else f"{value:.3e}"


def render(text: str, scope: Mapping[str, Mapping[str, Any]]) -> str:
    def one(match: re.Match[str]) -> str:
        alias, field, spec = match.groups()
        value = scope.get(alias, {}).get(field)
        if value is None:
            return "(unknown)"
        if spec:
            try:
                return format(value, spec)
            except (TypeError, ValueError):
                return str(value)
        if isinstance(value, bool):
            return "yes" if value else "no"
        if isinstance(value, float):
            return _fmt_number(value)
        return str(value)

    return PLACEHOLDER.sub(one, text)


def render_tree(value: Any, scope: Mapping[str, Mapping[str, Any]]) -> Any:
    """Render every string inside a JSON-like tree (used for resource templates in suggestions).

    A string that is exactly one placeholder without a format keeps the value's own type, so a resource
    template can carry a number from a threshold (``value: "{threshold.dose}"`` becomes ``value: 2000``).
    """
    if isinstance(value, str):
        whole = PLACEHOLDER.fullmatch(value)
        if whole and not whole.group(3):
            found = scope.get(whole.group(1), {}).get(whole.group(2))
            if isinstance(found, int | float) and not isinstance(found, bool):
                return found
        return render(value, scope)
    if isinstance(value, list):
        return [render_tree(v, scope) for v in value]
    if isinstance(value, dict):
        return {k: render_tree(v, scope) for k, v in value.items()}
    return value


def strings_in(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [s for v in value for s in strings_in(v)]
    if isinstance(value, dict):
        return [s for v in value.values() for s in strings_in(v)]
    return []
