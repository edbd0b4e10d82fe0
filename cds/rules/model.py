"""The rule pack as data: a ``RulePack`` and its ``Rule`` entries, as ``cds.rules.pack.load`` builds them.

Held apart from the loader so that the pack's check (``check.py``) and the condition language
(``conditions.py``), which the loader runs, read the same types without importing the loader.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Rule:
    id: str
    version: str
    status: str
    kind: str
    title: str
    when: str
    then: str
    citations: list[dict[str, Any]]
    match: dict[str, list[dict[str, Any]]]
    thresholds: list[str] = field(default_factory=list)
    needs: list[dict[str, Any]] = field(default_factory=list)
    derive: dict[str, Any] | None = None
    card: dict[str, Any] | None = None
    path: str = ""

    @property
    def aliases(self) -> list[str]:
        conditions = self.match.get("all") if isinstance(self.match, dict) else None
        return [(c.get("as") if isinstance(c, dict) else None) or f"m{i}"
                for i, c in enumerate(conditions if isinstance(conditions, list) else [])]


@dataclass(frozen=True)
class RulePack:
    id: str
    version: str
    title: str
    content_hash: str
    thresholds: dict[str, dict[str, Any]]
    valuesets: dict[str, Any]
    rules: list[Rule]
    directory: str

    def threshold(self, name: str) -> float:
        return self.thresholds[name]["value"]

    def derived_types(self) -> set[str]:
        return {r.derive["t"] for r in self.rules if isinstance(r.derive, dict) and r.derive.get("t")}

    def rule(self, rule_id: str) -> Rule:
        for rule in self.rules:
            if rule.id == rule_id:
                return rule
        raise KeyError(rule_id)

    @property
    def active_rules(self) -> list[Rule]:
        return [r for r in self.rules if r.status == "active"]
