"""The rule condition language, with one meaning: compiled to durable-rules JSON for matching, and evaluated
in Python (``holds``) over facts already matched (``indicator_when``, ``for_each.where``) and over the base
facts (``needs``).

Operators (docs/rules.md, "What a condition means"): ``eq`` (also a bare value), ``ne``, ``in``,
``exists``, ``lt``, ``lte``, ``gt``, ``gte``. An operand is a number, a string, a boolean or
``{"threshold": name}`` (a number); ``in`` takes a non-empty list of them, ``exists`` a boolean, the order
comparisons a number or a threshold. Anything else is a ``RulePackError``, from both evaluators alike.

A value is one of three kinds: a number (``int`` or ``float``, never ``bool``), a string or a boolean. A
field that is absent and a field that is ``None`` are the same thing: missing.

* ``exists: true`` holds when the field is present, ``exists: false`` when it is missing.
* Every other operator needs the field present: a missing value satisfies no comparison, not even ``ne``.
* ``eq`` holds for a value of the operand's kind equal to it (``1 == 1.0``; ``true`` is not ``1``; ``"1"``
  is not ``1``); ``ne`` is exactly "present and not ``eq``"; ``in`` is ``eq`` to one of the list.
* ``lt``, ``lte``, ``gt``, ``gte`` hold only for a number: a string or a boolean satisfies none of them.

The engine's own comparisons mix kinds (it takes ``true`` for ``1`` and compares strings with numbers), so
the compiled form never compares a raw field: the engine adapter also asserts every scalar field under a
typed name (``typed_fields``: ``age$num``, ``sex$str``, ``draft$bool``), and conditions compare those, so a
value only ever meets an operand of its own kind. ``tests/test_condition_semantics.py`` proves the two
evaluators agree.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

from cds.errors import RulePackError
from cds.rules.model import Rule, RulePack

COMPARISONS = {"lt": "$lt", "lte": "$lte", "gt": "$gt", "gte": "$gte"}
OPERATORS = {"eq", "ne", "in", "exists", *COMPARISONS}

_ORDER: dict[str, Callable[[Any, Any], bool]] = {
    "lt": operator.lt, "lte": operator.le, "gt": operator.gt, "gte": operator.ge}

#: the typed name under which the engine also holds a field of each kind
_SUFFIX = {"number": "$num", "string": "$str", "boolean": "$bool"}
TYPED_SUFFIXES = tuple(_SUFFIX.values())


def kind_of(value: Any) -> str | None:
    """``number``, ``string`` or ``boolean``; ``None`` for a missing value or one of no kind (a list)."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return None


def typed_fields(fact: dict[str, Any]) -> dict[str, Any]:
    """The typed copies of ``fact``'s scalar fields, as the engine adapter asserts them next to the fact's
    own fields."""
    out = {}
    for name, value in fact.items():
        kind = kind_of(value)
        if kind is not None and name != "sid":
            out[name + _SUFFIX[kind]] = value
    return out


# -- operands: resolved and checked the same way for both evaluators --------------------------------------

def _scalar(op: str, operand: Any, pack: RulePack, where: str) -> Any:
    if isinstance(operand, dict) and set(operand) == {"threshold"}:
        name = operand["threshold"]
        if name not in pack.thresholds:
            raise RulePackError(f"{where}: {op} refers to threshold {name!r}, which the pack does not define")
        value = pack.threshold(name)
        if kind_of(value) != "number":
            raise RulePackError(f"{where}: threshold {name!r} is not a number")
        return value
    if kind_of(operand) is None:
        raise RulePackError(f"{where}: {op} needs a number, a string, a boolean or {{threshold: name}}, "
                            f"not {operand!r}")
    return operand


def resolve(op: str, operand: Any, pack: RulePack, where: str) -> Any:
    """The operand of ``op`` with thresholds resolved; ``RulePackError`` when it does not fit ``op``."""
    if op not in OPERATORS:
        raise RulePackError(f"unknown operator {op!r} in condition on {where}")
    if op == "exists":
        if not isinstance(operand, bool):
            raise RulePackError(f"{where}: exists needs true or false, not {operand!r}")
        return operand
    if op == "in":
        if not isinstance(operand, list) or not operand:
            raise RulePackError(f"{where}: in needs a non-empty list")
        return [_scalar(op, item, pack, where) for item in operand]
    value = _scalar(op, operand, pack, where)
    if op in COMPARISONS and kind_of(value) != "number":
        raise RulePackError(f"{where}: {op} needs a number or {{threshold: name}}, not {operand!r}")
    return value


def _checks(spec: Any) -> dict[str, Any]:
    return spec if isinstance(spec, dict) else {"eq": spec}


# -- compiling to durable-rules JSON ---------------------------------------------------------------------

def _equal_term(name: str, value: Any) -> dict[str, Any]:
    return {name + _SUFFIX[str(kind_of(value))]: value}


def _term(name: str, op: str, operand: Any) -> dict[str, Any]:
    if op == "exists":
        return {"$ex" if operand else "$nex": {name: 1}}
    if op == "eq":
        return _equal_term(name, operand)
    if op == "in":
        options = []  # one term per distinct value: the engine fires once for each term of an $or that holds
        for term in (_equal_term(name, v) for v in operand):
            if term not in options:
                options.append(term)
        return options[0] if len(options) == 1 else {"$or": options}
    if op == "ne":  # present, and not an equal value of the operand's kind
        typed = name + _SUFFIX[str(kind_of(operand))]
        return {"$and": [{"$ex": {name: 1}}, {"$or": [{"$nex": {typed: 1}}, {"$neq": {typed: operand}}]}]}
    return {COMPARISONS[op]: {name + _SUFFIX["number"]: operand}}


def _where_terms(where: dict[str, Any], pack: RulePack, fact: str) -> list[dict[str, Any]]:
    return [_term(name, op, resolve(op, operand, pack, f"{fact}.{name}"))
            for name, spec in (where or {}).items() for op, operand in _checks(spec).items()]


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

def _equal(value: Any, operand: Any) -> bool:
    kind = kind_of(value)
    return kind is not None and kind == kind_of(operand) and value == operand


def satisfies(op: str, operand: Any, value: Any) -> bool:
    """Whether ``value`` (``None`` when missing) satisfies ``op`` with an already resolved ``operand``."""
    if op == "exists":
        return (value is not None) == operand
    if value is None:
        return False
    if op == "eq":
        return _equal(value, operand)
    if op == "ne":
        return not _equal(value, operand)
    if op == "in":
        return any(_equal(value, item) for item in operand)
    return kind_of(value) == "number" and _ORDER[op](value, operand)


def holds(where: dict[str, Any], scope: dict[str, dict[str, Any]], pack: RulePack) -> bool:
    """Whether ``where`` (keys ``alias.field`` or plain fields of ``scope['']``) holds; used after
    matching."""
    for key, spec in where.items():
        alias, _, name = key.rpartition(".")
        value = scope.get(alias, {}).get(name)
        for op, operand in _checks(spec).items():
            if not satisfies(op, resolve(op, operand, pack, key), value):
                return False
    return True
