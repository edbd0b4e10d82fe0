"""Findings to CDS Hooks 2.0 cards, shaped exactly as the specification asks. Pure code.

Every card: ``uuid``, ``summary`` (< 140 characters), ``detail`` (Markdown), ``indicator``, ``source``
(label, citation url, topic), and when present ``suggestions`` (each with ``uuid`` and create / update /
delete actions carrying FHIR resources) with ``selectionBehavior``, ``overrideReasons`` and ``links``.
Empty optional fields are omitted.

Every value filled into the text a person reads (summary, detail, suggestion labels, action descriptions)
is escaped for Markdown and HTML (``render(..., escape=True)``); resources in actions are FHIR data and
are not. A card may choose its wording by the matched facts (``variants``: the first whose ``where``
holds replaces summary, detail or suggestions) and may list facts of the whole record beside its own
(``notes``: e.g. the results a monitoring card set aside, and why).
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cds.decide.findings import Finding
from cds.decide.underway import Underway
from cds.fhir.parse import outgoing_resource
from cds.fhir.tidy import for_echo
from cds.rules.conditions import holds
from cds.rules.pack import RulePack
from cds.rules.templating import escape_text, render, render_tree
from cds.rules.transforms import TRANSFORMS

RULE_SYSTEM = "https://bone-health-cds.example.org/rules"
OVERRIDE_SYSTEM = "https://bone-health-cds.example.org/override-reasons"
MAX_SUMMARY = 139


@dataclass(frozen=True)
class CardInputs:
    """What rendering needs beyond the finding: thresholds, hook context, drafts, orders under way."""

    pack: RulePack
    context: Mapping[str, Any]
    drafts_by_ref: Mapping[str, dict[str, Any]]
    underway: Underway
    source_label: str
    facts: tuple[Mapping[str, Any], ...] = ()


def _scope(match: Mapping[str, Mapping[str, Any]], inputs: CardInputs) -> dict[str, Mapping[str, Any]]:
    scope: dict[str, Mapping[str, Any]] = dict(match)
    scope["threshold"] = {name: spec["value"] for name, spec in inputs.pack.thresholds.items()}
    scope["context"] = inputs.context
    return scope


def _valid(action: dict[str, Any], dropped: list[str]) -> dict[str, Any] | None:
    """The action with its resource as valid R4 (repaired if need be), or None, the reason in ``dropped``."""
    resource, why = outgoing_resource(action["resource"], where=f"the {action['type']} suggestion's resource")
    if resource is None:
        reason = escape_text(why or "not valid R4")  # Markdown-safe
        dropped.append(f"{action['description']}: not offered, {reason}")
        return None
    action["resource"] = resource
    return action


def _action(
    spec: dict[str, Any], scope: dict[str, Mapping[str, Any]], inputs: CardInputs, dropped: list[str]
) -> dict[str, Any] | None:
    action: dict[str, Any] = {"type": spec["type"],
                              "description": render(spec["description"], scope, escape=True)}
    if spec["type"] == "create":
        action["resource"] = render_tree(spec["resource"], scope)
        return _valid(action, dropped)
    target = scope[spec["resource_from"]].get("ref")
    if spec["type"] == "delete":
        action["resourceId"] = target
        return action
    original = inputs.drafts_by_ref.get(target or "")
    if original is None:
        return None
    updated = TRANSFORMS[spec["transform"]](original) if spec.get("transform") else copy.deepcopy(original)
    if updated is None:
        return None
    # never echo invalid FHIR to the EHR: the known sloppy shapes repaired, then what is still invalid named
    action["resource"] = for_echo(updated) or updated
    return _valid(action, dropped)


def _variant(card: dict[str, Any], match: Mapping[str, Mapping[str, Any]], pack: RulePack) -> dict[str, Any]:
    """The card's wording for this match: the first variant whose ``where`` holds, over the base card."""
    for option in card.get("variants", []) or []:
        if holds(option["where"], {k: dict(v) for k, v in match.items()}, pack):
            return {**card, **{k: v for k, v in option.items() if k != "where"}}
    return card


def _notes(card: dict[str, Any], inputs: CardInputs) -> str:
    """The ``notes`` lines: facts of the record that match ``notes.where``, each as ``notes.item``."""
    spec = card.get("notes")
    if not spec:
        return ""
    lines = []
    for fact in inputs.facts:
        if fact.get("t") == spec["fact"] and holds(spec.get("where") or {}, {"": dict(fact)}, inputs.pack):
            line = render(spec["item"], {"note": fact}, escape=True)
            if line not in lines:
                lines.append(line)
    return (spec["intro"].strip() + "\n\n" + "\n".join(lines)) if lines else ""


def _held(spec: dict[str, Any], label: str, actions: list[dict[str, Any]], inputs: CardInputs,
          held: list[str]) -> bool:
    """Whether an order under way makes the suggestion redundant (said in ``held``): one of its resources
    orders the same drug class or order kind, or its ``unless_ordered`` kind is already ordered."""
    for action in actions:
        if action["type"] != "create":
            continue
        holding = inputs.underway.blocking(action["resource"], spec.get("unless_ordered"))
        if holding is not None:
            line = f"Not offered: {label}, because {escape_text(holding.said())}."
            if line not in held:
                held.append(line)
            return True
    return False


def _suggestions(card: dict[str, Any], finding: Finding, inputs: CardInputs,
                 dropped: list[str], held: list[str]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for spec in card.get("suggestions", []) or []:
        scopes: list[dict[str, Mapping[str, Any]]] = []
        loop = spec.get("for_each")
        if loop:
            seen: set[Any] = set()
            for match in finding.matches:
                fact = match.get(loop["alias"], {})
                key = fact.get("ref")
                where = {f"{loop['alias']}.{k}": v for k, v in (loop.get("where") or {}).items()}
                if key in seen or not holds(where, match, inputs.pack):
                    continue
                seen.add(key)
                scopes.append(_scope(match, inputs))
        else:
            scopes.append(_scope(finding.primary, inputs))
        for scope in scopes:
            actions = [a for a in (_action(x, scope, inputs, dropped) for x in spec["actions"])
                       if a is not None]
            if not actions:
                continue
            label = render(spec["label"], scope, escape=True)
            if _held(spec, label, actions, inputs, held):
                continue
            suggestion: dict[str, Any] = {
                "label": label,
                "uuid": str(uuid.uuid4()),
                "actions": actions,
            }
            if spec.get("recommended"):
                suggestion["isRecommended"] = True
            out.append(suggestion)
    return out


def _items(listing: dict[str, Any], finding: Finding, inputs: CardInputs) -> list[str]:
    """``listing["item"]`` rendered for every match of the finding, in order, each once."""
    items: list[str] = []
    for match in finding.matches:
        line = render(listing["item"], _scope(match, inputs), escape=True)
        if line not in items:
            items.append(line)
    return items


def render_card(finding: Finding, inputs: CardInputs) -> dict[str, Any]:
    rule = inputs.pack.rule(finding.rule_id)
    scope = _scope(finding.primary, inputs)
    card = _variant(rule.card or {}, scope, inputs.pack)
    summary = render(card["summary"], scope, escape=True)
    if card.get("summary_list"):  # every match's item, de-duplicated, after the summary's own words
        summary += "; ".join(_items(card["summary_list"], finding, inputs))
    if len(summary) > MAX_SUMMARY:
        summary = summary[: MAX_SUMMARY - 1].rstrip() + "…"
    detail = render(card.get("detail", ""), scope, escape=True).strip()
    if card.get("detail_list"):
        detail = (detail + "\n\n" + "\n".join(_items(card["detail_list"], finding, inputs))).strip()
    notes = _notes(card, inputs)
    if notes:
        detail = (detail + "\n\n" + notes).strip()
    citation = rule.citations[card.get("citation", 0)]  # the card (or its variant) may name its source
    detail += f"\n\nRule `{rule.id}` v{rule.version}. Source: [{citation['title']}]({citation['url']})"
    out: dict[str, Any] = {
        "uuid": str(uuid.uuid4()),
        "summary": summary,
        "detail": detail,
        "indicator": finding.indicator,
        "source": {"label": inputs.source_label, "url": citation["url"],
                   "topic": {"system": RULE_SYSTEM, "code": rule.id, "display": rule.title}},
    }
    dropped: list[str] = []
    held: list[str] = []
    suggestions = _suggestions(card, finding, inputs, dropped, held)
    if held:  # an order already under way: the card says what it does not offer again, and why
        out["detail"] += "\n\n" + "\n".join(f"- {line}" for line in held)
    if dropped:  # never invalid FHIR in a suggestion: the card says what it leaves out, and why
        out["detail"] += "\n\n" + "\n".join(f"- {line}" for line in dropped)
    if suggestions:
        out["suggestions"] = suggestions
        out["selectionBehavior"] = card.get("selection_behavior", "at-most-one")
    reasons = [{"system": OVERRIDE_SYSTEM, "code": r["code"], "display": r["display"]}
               for r in card.get("override_reasons", []) or []]
    if reasons:
        out["overrideReasons"] = reasons
    return out
