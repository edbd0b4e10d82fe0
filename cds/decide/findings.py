"""Rule firings to findings: one finding per card rule, its evidence merged, superseded ones set aside.

A card rule may fire several times (two aromatase-inhibitor orders, two DXA sites): the firings become one
finding whose evidence lists every match, with the most severe match first (and, among equals, the matches
its card ``prefer``s). A card rule whose card says
``supersedes: [other-rule]`` removes those findings when it is present (the escalation card replaces the
loose warnings it explains); the audit keeps what was superseded and by what. Pure code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from cds.rules.conditions import holds
from cds.rules.engine import Firing
from cds.rules.pack import RulePack

SEVERITY = {"info": 0, "warning": 1, "critical": 2}


@dataclass
class Finding:
    rule_id: str
    indicator: str
    matches: list[dict[str, dict[str, Any]]]  # each: alias -> fact; the first is the primary match
    superseded_by: str | None = None
    derived_from: list[str] = field(default_factory=list)

    @property
    def primary(self) -> dict[str, dict[str, Any]]:
        return self.matches[0]


def indicator_for(rule_card: dict[str, Any], match: dict[str, dict[str, Any]], pack: RulePack) -> str:
    indicator = rule_card["indicator"]
    for option in rule_card.get("indicator_when", []) or []:
        if holds(option["where"], match, pack) and SEVERITY[option["indicator"]] > SEVERITY[indicator]:
            indicator = option["indicator"]
    return indicator


def _match_key(match: dict[str, dict[str, Any]]) -> str:
    """Equal matches give equal keys (facts are JSON data: the engine's own copies)."""
    return json.dumps(match, sort_keys=True, default=repr)


def _prefer(finding: Finding, pack: RulePack) -> None:
    """Among matches of equal severity, put first those the card ``prefer``s (its wording is chosen by the
    first match: two derivations of one finding, one of them naming more of the reason)."""
    card = pack.rule(finding.rule_id).card or {}
    prefer = card.get("prefer")
    if not prefer:
        return
    finding.matches.sort(key=lambda m: (-SEVERITY[indicator_for(card, m, pack)], not holds(prefer, m, pack)))


def derive_findings(firings: list[Firing], pack: RulePack) -> tuple[list[Finding], list[Finding]]:
    """Return ``(findings, superseded)``: the findings that become cards, and those set aside."""
    by_rule: dict[str, Finding] = {}
    seen: dict[str, set[str]] = {}  # per rule, the matches already kept (a set: linear in the firings)
    for firing in firings:
        rule = pack.rule(firing.rule_id)
        if rule.kind != "card":
            continue
        indicator = indicator_for(rule.card or {}, firing.matched, pack)
        found = by_rule.get(rule.id)
        key = _match_key(firing.matched)
        if found is None:
            by_rule[rule.id] = Finding(rule.id, indicator, [firing.matched])
            seen[rule.id] = {key}
        elif key not in seen[rule.id]:
            seen[rule.id].add(key)
            if SEVERITY[indicator] > SEVERITY[found.indicator]:
                found.indicator = indicator
                found.matches.insert(0, firing.matched)
            else:
                found.matches.append(firing.matched)
    for finding in by_rule.values():
        _prefer(finding, pack)
    superseded: list[Finding] = []
    for finding in list(by_rule.values()):
        for other in (pack.rule(finding.rule_id).card or {}).get("supersedes", []) or []:
            if other in by_rule and by_rule[other].superseded_by is None:
                by_rule[other].superseded_by = finding.rule_id
                finding.derived_from.append(other)
    for rule_id, finding in list(by_rule.items()):
        if finding.superseded_by:
            superseded.append(by_rule.pop(rule_id))
    order = {r.id: i for i, r in enumerate(pack.rules)}
    findings = sorted(by_rule.values(), key=lambda f: (-SEVERITY[f.indicator], order[f.rule_id]))
    return findings, superseded
