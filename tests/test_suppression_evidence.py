"""The evidence a quiet card is compared on (``cds.call.suppression``): any change of a fact the card
rested on is new evidence, a new fact too, and a higher indicator; what only moves with the day of the call
is not."""

from __future__ import annotations

import datetime as dt
import json

from hypothesis import given
from hypothesis import strategies as st

from cds.call.suppression import _Card, evidence_of
from cds.decide.evaluate import Evaluation
from cds.ledger.history import PastCard

KEYS = st.sampled_from(["value", "unit", "date", "ref", "analyte", "ingredient", "status", "comparator",
                        "draft"])
VALUES = st.one_of(st.integers(-1000, 1000), st.floats(allow_nan=False, allow_infinity=False),
                   st.text(max_size=12), st.booleans())
FACT = st.dictionaries(KEYS, VALUES, min_size=1).map(lambda d: {"t": "lab", **d})


def _evaluation(*facts: dict) -> Evaluation:
    matched = {f"a{i}": f for i, f in enumerate(facts)}
    fired = [{"rule": "r", "version": "1", "kind": "card", "facts": matched}]
    return Evaluation(cards=[], fired=fired, not_evaluated=[], superseded=[], facts=list(facts))


def _past(evidence: list[str], indicator: str = "warning") -> PastCard:
    return PastCard(uuid="u", rule="r", indicator=indicator, time=dt.datetime.now(dt.UTC), record_id="x",
                    service="s", client_iss=None, hook=None, user=None, encounter=None, shown=True,
                    evidence=frozenset(evidence))


def _same(a: dict, b: dict) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def _card(evaluation: Evaluation, indicator: str = "warning") -> _Card:
    return _Card({"uuid": "c", "indicator": indicator}, "r", evidence_of(evaluation, "r"), "content")


@given(fact=FACT, key=KEYS, value=VALUES)
def test_any_change_of_a_fact_the_card_rested_on_is_new_evidence(fact, key, value):
    before = _past(evidence_of(_evaluation(fact), "r"))
    changed = {**fact, key: value}
    assert _card(_evaluation(changed)).changed_since(before) == (not _same(changed, fact))


@given(fact=FACT, other=FACT)
def test_a_fact_the_card_did_not_rest_on_is_new_evidence(fact, other):
    before = _past(evidence_of(_evaluation(fact), "r"))
    assert _card(_evaluation(fact, other)).changed_since(before) == (not _same(other, fact))
    assert not _card(_evaluation(fact)).changed_since(before)


@given(fact=FACT, days=st.integers(0, 5000), age=st.integers(18, 110))
def test_what_moves_with_the_day_of_the_call_is_not_new_evidence(fact, days, age):
    before = _past(evidence_of(_evaluation({**fact, "age_days": 1, "age": 60}), "r"))
    later = {**fact, "age_days": days, "course_started_days": days, "age": age, "focus": True}
    assert not _card(_evaluation(later)).changed_since(before)


@given(fact=FACT, old=st.sampled_from(["info", "warning", "critical"]),
       new=st.sampled_from(["info", "warning", "critical"]))
def test_a_higher_indicator_is_new_evidence(fact, old, new):
    rank = ["info", "warning", "critical"]
    before = _past(evidence_of(_evaluation(fact), "r"), old)
    assert _card(_evaluation(fact), new).changed_since(before) == (rank.index(new) > rank.index(old))
