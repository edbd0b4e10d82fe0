""" "Why this card": from a stored record, the chain facts -> derived facts -> card. Pure code.

For a card, the firings of its rule are found in the record; each fact a firing matched is either a base
fact (built from the EHR's data) or the fact some other firing derived, which is explained the same way,
down to base facts. Rule versions come from the record (what ran); titles, When/Then and citations come
from the loaded rule pack when it holds the rule at the same version.
"""

from __future__ import annotations

from typing import Any

from cds.rules.pack import RulePack

MAX_DEPTH = 8


def rule_info(pack: RulePack | None, rule_id: str, version: str | None) -> dict[str, Any]:
    info: dict[str, Any] = {
        "id": rule_id,
        "version": version,
        "title": rule_id,
        "when": None,
        "then": None,
        "citations": [],
        "packVersionDiffers": False,
    }
    if pack is None:
        return info
    try:
        rule = pack.rule(rule_id)
    except KeyError:
        info["packVersionDiffers"] = True
        return info
    info.update(
        title=rule.title,
        when=rule.when,
        then=rule.then,
        citations=list(rule.citations),
        currentVersion=rule.version,
        packVersionDiffers=version is not None and rule.version != version,
    )
    return info


def _refs(fact: dict[str, Any]) -> set[str]:
    raw = fact.get("refs") or fact.get("ref") or ""
    return {r for r in str(raw).split(",") if r}


def _sources(fact: dict[str, Any], facts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Base facts a computed base fact was built from (a DXA change from its two scans), by their refs."""
    mine = _refs(fact)
    if len(mine) < 2:
        return []
    return [f for f in facts if f.get("t") != fact.get("t") and _refs(f) and _refs(f) <= mine]


def _present(fact: Any) -> Any:
    """A fact without its empty (None) fields: a derived fact is asserted without them, so the fact a later
    firing matched lacks what the record of its derivation still names (a copied field the source lacked)."""
    return {k: v for k, v in fact.items() if v is not None} if isinstance(fact, dict) else fact


def _node(fact: dict[str, Any], content: dict[str, Any], pack: RulePack | None, depth: int) -> dict[str, Any]:
    fired = content.get("fired", [])
    producer = next((f for f in fired if _present(f.get("derived")) == _present(fact)), None)
    if producer is None or depth >= MAX_DEPTH:
        return {"fact": fact, "derivedBy": None, "builtFrom": _sources(fact, content.get("facts", []))}
    return {
        "fact": fact,
        "derivedBy": {
            "rule": rule_info(pack, producer["rule"], producer.get("version")),
            "from": [
                {"alias": alias, **_node(f, content, pack, depth + 1)}
                for alias, f in (producer.get("facts") or {}).items()
            ],
        },
    }


def explain_card(content: dict[str, Any], card_uuid: str, pack: RulePack | None) -> dict[str, Any] | None:
    card = next((c for c in content.get("cards", []) if c.get("uuid") == card_uuid), None)
    if card is None:
        return None
    rule_id = content.get("cardRules", {}).get(card_uuid) or (card.get("source", {}).get("topic") or {}).get(
        "code"
    )
    fired = content.get("fired", [])
    firings = [f for f in fired if f.get("rule") == rule_id]
    version = firings[0].get("version") if firings else None
    return {
        "card": card,
        "rule": rule_info(pack, str(rule_id or ""), version),
        "firings": [
            [
                {"alias": alias, **_node(f, content, pack, 1)}
                for alias, f in (firing.get("facts") or {}).items()
            ]
            for firing in firings
        ],
        "superseded": [s for s in content.get("superseded", []) if s.get("superseded_by") == rule_id],
    }


def explain_all(content: dict[str, Any], pack: RulePack | None) -> list[dict[str, Any]]:
    return [e for e in (explain_card(content, c["uuid"], pack) for c in content.get("cards", [])) if e]
