"""Placeholders in rule text: ``{alias.field}`` or ``{alias.field:.1f}``, filled from matched facts.

``threshold.<name>`` and ``context.<field>`` are filled from the pack's thresholds and the hook context.
Card text (``render(..., escape=True)``) escapes every filled-in text for Markdown and HTML: values come
from FHIR data (units, names, displays, reported text, site names), and an EHR renders card ``detail`` as
Markdown, so ``<img src=x onerror=...>``, ``[x](javascript:...)`` or ``*bold*`` in a unit must arrive as
text, never as markup. Resource templates (``render_tree``) are FHIR data, not Markdown: never escaped.
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


#: characters that open Markdown inline syntax wherever they stand (emphasis, code, links, images,
#: strikethrough, tables, escapes); each is escaped with a backslash, which CommonMark turns back into the
#: character itself
_MARKDOWN = re.compile(r"([\\`*_\[\]~|])")
#: "<" that could open an HTML tag, comment, declaration or autolink; "&" that could open an entity. A "<"
#: before a digit, a space or "=" ("<5 pg/mL", "<= 20") opens nothing and is left as written.
_HTML_OPEN = re.compile(r"<(?=[A-Za-z/!?])")
_ENTITY = re.compile(r"&(?=#|[A-Za-z0-9]+;)")
#: "://" and "www." make live links in GitHub-flavoured Markdown even without brackets
_AUTOLINK = re.compile(r"(?i)(?<=[a-z])(:)(?=//)|(?<![a-z0-9])(w)(?=ww\.)")


def escape_text(value: str) -> str:
    """``value`` as literal text in Markdown and HTML: on one line, no markup can form from it."""
    flat = " ".join(str(value).split())
    flat = _MARKDOWN.sub(r"\\\1", flat)
    flat = _ENTITY.sub("&amp;", flat)
    flat = _HTML_OPEN.sub("&lt;", flat)
    return _AUTOLINK.sub(lambda m: "&#58;" if m.group(1) else "&#119;", flat)


def _fmt_number(value: float) -> str:
    return f"{value:g}" if abs(value) < 1e6 else f"{value:.3e}"


def render(text: str, scope: Mapping[str, Mapping[str, Any]], *, escape: bool = False) -> str:
    """Fill the placeholders of ``text``; with ``escape``, every filled-in text is escaped for Markdown."""

    def one(match: re.Match[str]) -> str:
        filled = _fill(match)
        return escape_text(filled) if escape else filled

    def _fill(match: re.Match[str]) -> str:
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


class FactDeriver:
    """A rule's ``derive`` as the engine calls it: the matched facts (by alias) -> the fact the rule derives
    (its ``t``, the ``set`` values, the fields it ``copy``s from the matched facts, the ``format`` templates
    rendered over them)."""

    __slots__ = ("spec",)

    def __init__(self, spec: Mapping[str, Any]):
        self.spec = spec

    def __call__(self, matched: dict[str, dict[str, Any]]) -> dict[str, Any]:
        spec = self.spec
        fact: dict[str, Any] = {"t": spec["t"], **(spec.get("set") or {})}
        for name, source in (spec.get("copy") or {}).items():
            alias, _, key = source.partition(".")
            fact[name] = matched.get(alias, {}).get(key)
        for name, template in (spec.get("format") or {}).items():
            fact[name] = render(template, matched)
        return fact
