"""Rule-change impact: the stored facts of past calls run again under another rule pack.

Cards are compared by rule id: a rule whose card is only in the new run "appears", one only in the stored
record "disappears", and one in both whose indicator or summary differs "changes". Gaps ("could not
evaluate") are recomputed for the new pack; everything else runs from the stored facts unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from cds.decide.evaluate import Evaluator, _gaps
from cds.rules.pack import RulePack


@dataclass
class CallImpact:
    seq: int
    id: str
    time: str
    service: str
    appeared: list[dict[str, Any]] = field(default_factory=list)
    disappeared: list[dict[str, Any]] = field(default_factory=list)
    changed: list[dict[str, Any]] = field(default_factory=list)

    @property
    def differs(self) -> bool:
        return bool(self.appeared or self.disappeared or self.changed)

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "id": self.id,
            "time": self.time,
            "service": self.service,
            "appeared": self.appeared,
            "disappeared": self.disappeared,
            "changed": self.changed,
        }


def _by_rule(cards: list[dict[str, Any]], card_rules: dict[str, str]) -> dict[str, dict[str, Any]]:
    out = {}
    for card in cards:
        rule = card_rules.get(card["uuid"]) or (card.get("source", {}).get("topic") or {}).get("code", "?")
        out[rule] = {"rule": rule, "indicator": card.get("indicator"), "summary": card.get("summary")}
    return out


def rerun_content(evaluator: Evaluator, content: dict[str, Any]) -> dict[str, dict[str, Any]]:
    facts = [f for f in content.get("facts", []) if not (f.get("t") == "problem" and f.get("kind") == "gap")]
    facts += _gaps(evaluator.pack, facts)
    key = content.get("patientKey")
    context = {**content.get("context", {}), "patientId": f"pk-{key[:16]}" if key else "pk-none"}
    evaluation = evaluator.from_facts(facts, context=context, drafts_by_ref={})
    return _by_rule(evaluation.cards, evaluation.card_rules)


def compare(seq: int, content: dict[str, Any], after: dict[str, dict[str, Any]]) -> CallImpact:
    quiet = (content.get("suppression") or {}).get("suppressed") or []  # computed, kept quiet: computed all
    before = _by_rule([*content.get("cards", []), *(q["card"] for q in quiet)],
                      {**content.get("cardRules", {}), **{q["card"]["uuid"]: q["rule"] for q in quiet}})
    impact = CallImpact(seq=seq, id=content["id"], time=content["time"], service=content["service"])
    for rule in sorted(set(before) | set(after)):
        old, new = before.get(rule), after.get(rule)
        if old is None:
            if new is not None:
                impact.appeared.append(new)
        elif new is None:
            impact.disappeared.append(old)
        elif (old["indicator"], old["summary"]) != (new["indicator"], new["summary"]):
            impact.changed.append({"rule": rule, "before": old, "after": new})
    return impact


def rerun(rows: Iterable[Any], pack: RulePack) -> dict[str, Any]:
    """``rows``: audit records (``seq``, ``content``). Only calls that answered (outcome ok) are run again.
    ``totals.rerun`` counts them (``totals.replayed``, the same number, is kept for scripts that read it)."""
    evaluator = Evaluator(pack)
    calls: list[CallImpact] = []
    rerun_count = 0
    for row in rows:
        content = json.loads(row.content)
        if content.get("outcome") != "ok":
            continue
        rerun_count += 1
        impact = compare(row.seq, content, rerun_content(evaluator, content))
        if impact.differs:
            calls.append(impact)
    totals = {
        "rerun": rerun_count,
        "replayed": rerun_count,  # the key's former name, kept for scripts
        "callsChanged": len(calls),
        "appeared": sum(len(c.appeared) for c in calls),
        "disappeared": sum(len(c.disappeared) for c in calls),
        "changed": sum(len(c.changed) for c in calls),
    }
    return {
        "rulePack": {"id": pack.id, "version": pack.version, "contentHash": pack.content_hash},
        "totals": totals,
        "calls": [c.to_json() for c in calls],
    }
