"""The pure pipeline: parsed resources -> facts -> rules engine -> findings -> cards.

``Evaluator`` is built once per rule pack (compiling the pack into the engine) and is then called once per
hook call with that call's ``Case`` (cds/decide/case.py). It does no I/O and touches no Flask globals; the
HTTP layer and the CLI call ``evaluate``, the audit's re-run of stored facts calls ``from_facts``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cds.decide.cards import CardInputs, render_card
from cds.decide.case import Case
from cds.decide.derived import Derived
from cds.decide.facts import Context, FactSet, build_facts
from cds.decide.findings import derive_findings
from cds.decide.scope import out_of_scope
from cds.decide.underway import Underway
from cds.fhir.relevance import Relevance
from cds.rules.conditions import compile_rule, holds
from cds.rules.engine import CompiledRule, Firing, RuleEngine
from cds.rules.pack import RulePack
from cds.rules.templating import FactDeriver
from cds.settings import default as setting_default

LABEL = setting_default("SOURCE_LABEL")  # the cards' source label unless one is given


@dataclass
class Evaluation:
    cards: list[dict[str, Any]]
    fired: list[dict[str, Any]]
    not_evaluated: list[dict[str, Any]]
    superseded: list[dict[str, Any]]
    facts: list[dict[str, Any]]
    ignored: dict[str, int] = field(default_factory=dict)
    card_rules: dict[str, str] = field(default_factory=dict)  # card uuid -> rule id
    series: list[dict[str, Any]] = field(default_factory=list)  # every usable result over time (facts.py)
    out_of_scope: dict[str, Any] | None = None  # {"code", "reason"}: no rule ran (see cds.decide.scope)

    def to_json(self) -> dict[str, Any]:
        return {"cards": self.cards, "fired": self.fired, "not_evaluated": self.not_evaluated,
                "superseded": self.superseded, "facts": self.facts, "ignored": self.ignored,
                "out_of_scope": self.out_of_scope}


def _gaps(pack: RulePack, facts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rules that cannot evaluate for lack of data, as ``problem`` facts (kind "gap")."""
    gaps = []
    for rule in pack.active_rules:
        for need in rule.needs:
            test = {need["field"]: {"exists": True, **({"in": need["in"]} if "in" in need else {})}}
            if not any(f["t"] == need["fact"] and holds(test, {"": f}, pack) for f in facts):
                gaps.append({"t": "problem", "kind": "gap", "rule": rule.id, "reason": need["reason"]})
    return gaps


def _with_shown(fact: dict[str, Any]) -> dict[str, Any]:
    """A lab fact stored before labs carried ``shown`` (how a card quotes the value) gets it, so that a past
    call replayed under this pack reads as it would today."""
    if fact.get("t") != "lab" or "shown" in fact or not isinstance(fact.get("value"), int | float):
        return fact
    shown = f"{fact.get('comparator', '')}{fact['value']:.1f} {fact.get('unit', '')}"
    return {**fact, "shown": shown.strip()}


class Evaluator:
    def __init__(self, pack: RulePack):
        self.pack = pack
        self.relevant = Relevance(pack.valuesets)
        self.engine = RuleEngine([
            CompiledRule(rule.id, compile_rule(rule, pack), FactDeriver(rule.derive) if rule.derive else None)
            for rule in pack.active_rules
        ])

    def facts(self, resources: Iterable[Any], drafts: Iterable[Any], ctx: Context) -> FactSet:
        thresholds = {name: self.pack.threshold(name) for name in self.pack.thresholds}
        fact_set = build_facts(resources, drafts, ctx, self.pack.valuesets, thresholds)
        fact_set.facts.extend(_gaps(self.pack, fact_set.facts))
        return fact_set

    def run_facts(self, facts: list[dict[str, Any]]) -> list[Firing]:
        return self.engine.evaluate(facts)

    def derive(self, case: Case) -> Derived:
        """A call's case to facts, then the rules over them: everything before the cards."""
        ctx = Context(patient_id=case.patient_id, now=case.now, draft_refs=frozenset(case.drafts_by_ref),
                      selections=case.selections, references=case.references)
        fact_set = self.facts(case.resources, case.drafts, ctx)
        return self._derive(fact_set.facts, dict(fact_set.ignored), fact_set.series)

    def _derive(self, facts: list[dict[str, Any]], ignored: dict[str, int],
                series: list[dict[str, Any]] | None = None) -> Derived:
        facts = [_with_shown(f) for f in facts]
        scope = out_of_scope(facts, self.pack)
        return Derived(facts=facts, firings=[] if scope else self.run_facts(facts), out_of_scope=scope,
                       ignored=ignored, series=series or [])

    def evaluate(self, case: Case, *, source_label: str = LABEL,
                 derived: Derived | None = None) -> Evaluation:
        """One hook call: the case's resources and draft orders to facts, then rules, findings and cards
        (``derived``, when given, is this case's ``derive``, kept from an earlier call)."""
        return self.render(derived or self.derive(case), context=case.context,
                           drafts_by_ref=case.drafts_by_ref, source_label=source_label)

    def from_facts(self, facts: list[dict[str, Any]], *, context: Mapping[str, Any],
                   drafts_by_ref: Mapping[str, dict[str, Any]], source_label: str = LABEL,
                   ignored: dict[str, int] | None = None) -> Evaluation:
        """Run the rules over already-built facts (also used to replay stored facts under another pack)."""
        return self.render(self._derive(facts, ignored or {}), context=context, drafts_by_ref=drafts_by_ref,
                           source_label=source_label)

    def render(self, derived: Derived, *, context: Mapping[str, Any],
               drafts_by_ref: Mapping[str, dict[str, Any]],
               source_label: str = LABEL) -> Evaluation:
        """Findings and cards from derived facts and firings (``derived`` is read, never changed)."""
        facts, scope = derived.facts, derived.out_of_scope
        findings, superseded = derive_findings(derived.firings, self.pack)
        inputs = CardInputs(pack=self.pack, context=context, drafts_by_ref=drafts_by_ref,
                            underway=Underway(facts, self.pack.valuesets),
                            source_label=source_label, facts=tuple(facts))
        cards, card_rules = [], {}
        for finding in findings:
            card = render_card(finding, inputs)
            cards.append(card)
            card_rules[card["uuid"]] = finding.rule_id
        return Evaluation(
            cards=cards,
            fired=[self._fired(f) for f in derived.firings],
            not_evaluated=[] if scope else [{"rule": f["rule"], "reason": f["reason"]} for f in facts
                                            if f["t"] == "problem" and f.get("kind") == "gap"],
            superseded=[{"rule": f.rule_id, "superseded_by": f.superseded_by} for f in superseded],
            facts=list(facts), ignored=dict(derived.ignored), card_rules=card_rules, out_of_scope=scope,
            series=list(derived.series),
        )

    def _fired(self, firing: Firing) -> dict[str, Any]:
        rule = self.pack.rule(firing.rule_id)
        out = {"rule": rule.id, "version": rule.version, "kind": rule.kind, "facts": firing.matched}
        if firing.derived is not None:
            out["derived"] = firing.derived
        return out


