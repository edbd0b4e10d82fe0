"""One meaning for the condition language: the rules engine (a compiled rule asserted against a fact through
the real adapter) and the Python evaluator ``holds`` give the same answer for every operator, operand and
kind of value, including missing fields, ``None``, booleans next to numbers and strings next to order
comparisons (docs/rules.md, "What a condition means")."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from cds.errors import RulePackError
from cds.rules import pack as rulepack
from cds.rules.conditions import compile_rule, holds
from cds.rules.engine import CompiledRule, RuleEngine
from cds.rules.pack import Rule

PACK = rulepack.load()
THRESHOLDS = sorted(PACK.thresholds)
FIELDS = ["band", "value"]


def rule_for(cond: dict[str, Any]) -> Rule:
    return Rule(id="probe", version="1.0.0", status="active", kind="derived", title="probe", when="-",
                then="-", citations=[], match={"all": [{"fact": "f", "as": "m", **cond}]})


def engine_says(cond: dict[str, Any], fact: dict[str, Any]) -> bool:
    """Whether the one-condition rule matches ``fact`` in the rules engine; checks that the fact handed back
    is the fact asserted (no engine-only fields, ``None`` fields dropped)."""
    engine = RuleEngine([CompiledRule("probe", compile_rule(rule_for(cond), PACK))])
    firings = engine.evaluate([{"t": "f", **fact}])
    # (an ``any_of`` with two alternatives that hold fires once for each, on the same fact)
    for firing in firings:
        assert firing.matched == {"m": {"t": "f", **{k: v for k, v in fact.items() if v is not None}}}
    return bool(firings)


def python_says(cond: dict[str, Any], fact: dict[str, Any]) -> bool:
    """``holds`` over the condition's ``where`` and at least one of its ``any_of`` alternatives; a field
    named plainly and as ``alias.field`` gives the same answer."""
    where, alternatives = cond.get("where") or {}, cond.get("any_of")
    answer = holds(where, {"": fact}, PACK)
    assert holds({f"m.{k}": v for k, v in where.items()}, {"m": fact}, PACK) == answer
    if alternatives is not None:
        answer = answer and any(holds(alt, {"": fact}, PACK) for alt in alternatives)
    return answer


def agree(cond: dict[str, Any], fact: dict[str, Any]) -> bool:
    engine, python = engine_says(cond, fact), python_says(cond, fact)
    assert engine == python, f"engine says {engine}, holds says {python} for {cond} on {fact}"
    return engine


# -- the decided meaning, case by case --------------------------------------------------------------------

OSTEOPENIA = {"band": {"ne": "osteopenia"}}
CASES: list[tuple[str, dict[str, Any], dict[str, Any], bool]] = [
    ("ne on a missing field", OSTEOPENIA, {}, False),
    ("ne on a None field", OSTEOPENIA, {"band": None}, False),
    ("ne on another value", OSTEOPENIA, {"band": "osteoporosis"}, True),
    ("ne on the value", OSTEOPENIA, {"band": "osteopenia"}, False),
    ("ne on another kind", {"value": {"ne": 1}}, {"value": "1"}, True),
    ("ne true on 1", {"value": {"ne": True}}, {"value": 1}, True),
    ("eq on a missing field", {"band": "osteopenia"}, {}, False),
    ("eq 1 on 1.0", {"value": 1}, {"value": 1.0}, True),
    ("eq true on 1", {"value": True}, {"value": 1}, False),
    ("eq false on 0", {"value": {"eq": False}}, {"value": 0}, False),
    ("eq 1 on the string 1", {"value": 1}, {"value": "1"}, False),
    ("eq true on true", {"value": True}, {"value": True}, True),
    ("in on a missing field", {"band": {"in": ["a", "b"]}}, {}, False),
    ("in with mixed kinds", {"value": {"in": ["a", 2, True]}}, {"value": 2.0}, True),
    ("in: 1 is not true", {"value": {"in": [True]}}, {"value": 1}, False),
    ("lt on a missing field", {"value": {"lt": 5}}, {}, False),
    ("lt on None", {"value": {"lt": 5}}, {"value": None}, False),
    ("lt on a string", {"value": {"lt": 5}}, {"value": "1"}, False),
    ("gt on a string", {"value": {"gt": 5}}, {"value": "abc"}, False),
    ("lte on the empty string", {"value": {"lte": 5}}, {"value": ""}, False),
    ("gte on a boolean", {"value": {"gte": 0}}, {"value": True}, False),
    ("lt on false", {"value": {"lt": 1}}, {"value": False}, False),
    ("gte at a threshold", {"value": {"gte": {"threshold": "estradiol_low_pg_ml"}}}, {"value": 20}, True),
    ("lt at a threshold", {"value": {"lt": {"threshold": "estradiol_low_pg_ml"}}}, {"value": 20.0}, False),
    ("exists on a None field", {"band": {"exists": True}}, {"band": None}, False),
    ("exists on false", {"band": {"exists": True}}, {"band": False}, True),
    ("exists on 0", {"band": {"exists": True}}, {"band": 0}, True),
    ("exists on the empty string", {"band": {"exists": True}}, {"band": ""}, True),
    ("not exists on a None field", {"band": {"exists": False}}, {"band": None}, True),
    ("not exists on a value", {"band": {"exists": False}}, {"band": "x"}, False),
    ("ne on a list value", {"band": {"ne": "x"}}, {"band": [1, 2]}, True),
    ("eq on a list value", {"band": "x"}, {"band": [1, 2]}, False),
    ("two operators", {"value": {"lt": -1.0, "gt": -2.5}}, {"value": -2.5}, False),
]


@pytest.mark.parametrize(("where", "fact", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_decided_meaning(where, fact, expected):
    assert agree({"where": where}, fact) is expected


@pytest.mark.parametrize("where", [
    {"band": None}, {"band": ["a", "b"]}, {"band": {"ne": {"x": 1}}}, {"band": {"in": []}},
    {"band": {"in": "ab"}}, {"band": {"in": [None]}}, {"value": {"lt": "10"}}, {"value": {"gte": True}},
    {"band": {"exists": 1}}, {"band": {"near": 1}}, {"value": {"lt": {"threshold": "no_such_threshold"}}},
    {"value": {"eq": {"ref": "other.value"}}},
])
def test_an_operand_that_does_not_fit_is_refused_by_both(where):
    with pytest.raises(RulePackError):
        compile_rule(rule_for({"where": where}), PACK)
    with pytest.raises(RulePackError):
        holds(where, {"": {"band": "a", "value": 1}}, PACK)


# -- generated conditions and facts -----------------------------------------------------------------------

threshold_values = sorted({PACK.threshold(name) for name in THRESHOLDS})
numbers = st.one_of(
    st.sampled_from([0, 1]),
    st.integers(min_value=-3, max_value=3),
    st.integers(min_value=-4000, max_value=4000).map(lambda n: n / 4),
    st.sampled_from(threshold_values),
    st.sampled_from(threshold_values).map(lambda v: v + 0.5),
    st.sampled_from(threshold_values).map(lambda v: v - 0.0001),
)
strings = st.sampled_from(["", "1", "0", "a", "b", "osteopenia", "osteoporosis", "True", "é"])
scalars = st.one_of(numbers, strings, st.booleans())
thresholds = st.sampled_from(THRESHOLDS).map(lambda name: {"threshold": name})
OPERANDS = {
    "eq": st.one_of(scalars, thresholds),
    "ne": st.one_of(scalars, thresholds),
    "in": st.lists(st.one_of(scalars, thresholds), min_size=1, max_size=3),
    "exists": st.booleans(),
    **{op: st.one_of(numbers, thresholds) for op in ("lt", "lte", "gt", "gte")},
}
#: every operator equally likely; an operator mapping as likely as a bare value (equality)
operation = st.one_of(*[st.tuples(st.just(op), operand) for op, operand in OPERANDS.items()])


@st.composite
def specs(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 3)) == 0:  # (a choice drawn first: ``one_of`` would weigh every scalar branch)
        return draw(scalars)
    return dict(draw(st.lists(operation, min_size=1, max_size=2)))


wheres = st.dictionaries(st.sampled_from(FIELDS), specs(), min_size=1, max_size=2)
conditions = st.one_of(
    st.builds(lambda w: {"where": w}, wheres),
    st.builds(lambda w, alts: {"where": w, "any_of": alts},
              st.dictionaries(st.sampled_from(FIELDS), specs(), max_size=1),
              st.lists(st.dictionaries(st.sampled_from(FIELDS), specs(), max_size=2), min_size=1,
                       max_size=2)),
)
single_terms = st.builds(lambda op: {"where": {"value": dict([op])}}, operation)
ABSENT = object()


def _named(cond: dict[str, Any]) -> tuple[list[Any], list[Any]]:
    """The values the condition names (thresholds resolved), and their look-alikes of another kind (``1``:
    ``True``, ``"1"``; ``True``: ``1``, ``"True"``), so that generated facts often hold one of them."""
    found: list[Any] = []
    for where in [cond.get("where") or {}, *(cond.get("any_of") or [])]:
        for spec in where.values():
            for operand in (spec.values() if isinstance(spec, dict) else [spec]):
                found += operand if isinstance(operand, list) else [operand]
    values = [PACK.threshold(o["threshold"]) if isinstance(o, dict) else o for o in found]
    alike = [str(v) for v in values if not isinstance(v, str)]
    alike += [int(v) if isinstance(v, bool) else v == 1 for v in values
              if isinstance(v, int | float) and v in (0, 1)]
    alike += [float(v) for v in values if isinstance(v, int) and not isinstance(v, bool)]
    return values or [0], alike or [0]


def _fact(draw: st.DrawFn, cond: dict[str, Any]) -> dict[str, Any]:
    named, alike = _named(cond)
    values = {"named": st.sampled_from(named), "alike": st.sampled_from(alike), "any": scalars,
              "none": st.none(), "absent": st.just(ABSENT), "list": st.lists(st.integers(0, 2), max_size=2)}
    fact = {}
    for name in FIELDS:  # (a value of the condition's own, or of a look-alike, more often than chance)
        value = draw(values[draw(st.sampled_from(["named", "alike", *values]))])
        if value is not ABSENT:
            fact[name] = value
    return fact


@st.composite
def cases(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    """A condition (one or two fields, one or two operators each, perhaps ``any_of``) and a fact."""
    cond = draw(conditions)
    return cond, _fact(draw, cond)


@st.composite
def single_cases(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    """One operator on one field, where nothing else can hide a disagreement."""
    cond = draw(single_terms)
    return cond, _fact(draw, cond)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=cases())
@example(case=({"where": OSTEOPENIA}, {}))
@example(case=({"where": {"band": {"ne": True}}}, {"band": 1}))
@example(case=({"where": {"band": {"ne": 0}}}, {"band": False}))
@example(case=({"where": {"value": {"ne": "1"}}}, {"value": 1}))
@example(case=({"where": {"value": {"ne": 2}}}, {"value": None}))
@example(case=({"where": {"value": {"lt": 30}}}, {"value": "1"}))
@example(case=({"where": {}, "any_of": [{"band": {"exists": False}}, {}]}, {"band": "x"}))
def test_the_engine_and_holds_agree(case):
    agree(*case)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=single_cases())
def test_the_engine_and_holds_agree_on_each_operator(case):
    agree(*case)
