"""The rule condition language: compiled to durable-rules JSON for matching, and evaluated in Python over
facts already matched (``indicator_when``, ``for_each.where``, ``needs``, supersession).

Operators (docs/rules.md): ``eq`` (also a bare value), ``in``, ``exists``, ``lt``, ``lte``, ``gt``, ``gte``,
``ne``. Operands are literals, ``{"threshold": name}`` or ``{"ref": "alias.field"}`` (compiled form only).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cds.errors import RulePackError

if TYPE_CHECKING:
    from cds.rules.pack import Rule, RulePack

COMPARISONS = {"lt": "$lt", "lte": "$lte", "gt": "$gt", "gte": "$gte", "ne": "$neq"}
OPERATORS = {"eq", "in", "exists", *COMPARISONS}


# -- compiling to durable-rules JSON ---------------------------------------------------------------------

def _operand(value: Any, pack: RulePack) -> Any:
    if isinstance(value, dict) and "threshold" in value:
        return pack.threshold(value["threshold"])
    if isinstance(value, dict) and "ref" in value:
        alias, name = value["ref"].split(".", 1)
        return {alias: name}
    return value


def _where_terms(where: dict[str, Any], pack: RulePack, fact: str) -> list[dict[str, Any]]:
    terms: list[dict[str, Any]] = []
    for name, spec in (where or {}).items():
        if not isinstance(spec, dict):
            terms.append({name: spec})
            continue
        for op, operand in spec.items():
            if op in COMPARISONS:
                terms.append({COMPARISONS[op]: {name: _operand(operand, pack)}})
            elif op == "eq":
                terms.append({name: _operand(operand, pack)})
            elif op == "in":
                terms.append({"$or": [{name: v} for v in operand]} if len(operand) > 1
                             else {name: operand[0]})
            elif op == "exists":
                terms.append({"$ex" if operand else "$nex": {name: 1}})
            else:
                raise RulePackError(f"unknown operator {op!r} in condition on {fact}.{name}")
    return terms


def _joined(terms: list[dict[str, Any]]) -> dict[str, Any]:
    return terms[0] if len(terms) == 1 else {"$and": terms}


def compile_condition(cond: dict[str, Any], pack: RulePack) -> dict[str, Any]:
    """One condition: the fact type, its ``where`` terms, and at least one of its ``any_of`` alternatives."""
    fact = cond["fact"]
    terms: list[dict[str, Any]] = [{"t": fact}, *_where_terms(cond.get("where") or {}, pack, fact)]
    alternatives = [_where_terms(w, pack, fact) for w in cond.get("any_of") or []]
    if alternatives:
        options = [_joined(a) for a in alternatives if a]
        if len(options) == len(alternatives):  # an empty alternative always holds: no constraint
            terms.append(options[0] if len(options) == 1 else {"$or": options})
    return _joined(terms)


def compile_rule(rule: Rule, pack: RulePack) -> dict[str, Any]:
    """The rule's durable-rules definition (``{"all": [...]}``), thresholds resolved."""
    body = [{alias: compile_condition(cond, pack)} for alias, cond in zip(rule.aliases, rule.match["all"],
                                                                          strict=True)]
    for index, cond in enumerate(rule.match.get("none") or []):
        body.append({f"n{index}$not": compile_condition(cond, pack)})
    return {"all": body}


# -- the same conditions, evaluated in Python over already-matched facts ----------------------------------

def holds(where: dict[str, Any], scope: dict[str, dict[str, Any]], pack: RulePack) -> bool:
    """Whether ``where`` (keys ``alias.field`` or plain fields of ``scope['']``) holds; used after
    matching."""
    for key, spec in where.items():
        alias, _, name = key.rpartition(".")
        value = scope.get(alias, {}).get(name)
        checks = spec if isinstance(spec, dict) else {"eq": spec}
        for op, operand in checks.items():
            operand = (
                pack.threshold(operand["threshold"])
                if isinstance(operand, dict) and "threshold" in operand
                else operand
            )
            if op == "in":
                ok = value in operand
            elif op == "exists":
                ok = (value is not None) == bool(operand)
            elif op == "eq":
                ok = value == operand
            elif value is None or not isinstance(value, int | float) or isinstance(value, bool):
                ok = op == "ne" and value != operand
            else:
                ok = {"lt": value < operand, "lte": value <= operand, "gt": value > operand,
                      "gte": value >= operand, "ne": value != operand}[op]
            if not ok:
                return False
    return True
