"""The durable-rules adapter: isolation between evaluations, no leaked sessions, errors surfaced."""

from __future__ import annotations

import threading

import pytest

from cds.decide.evaluate import Evaluator
from cds.errors import EngineError
from cds.rules import pack as rulepack
from cds.rules.engine import CompiledRule, RuleEngine


@pytest.fixture(scope="module")
def evaluator() -> Evaluator:
    return Evaluator(rulepack.load())


def man(e2: float, ingredient: str = "anastrozole", ref: str = "MedicationRequest/a") -> list[dict]:
    return [
        {"t": "patient", "sex": "male", "age": 60},
        {
            "t": "medication",
            "ref": ref,
            "drug_class": "aromatase_inhibitor",
            "ingredient": ingredient,
            "status": "active",
            "draft": False,
            "selected": False,
            "matched_by": "rxnorm",
            "code": "84857",
        },
        {
            "t": "lab",
            "analyte": "estradiol",
            "value": e2,
            "unit": "pg/mL",
            "reported": f"{e2} pg/mL",
            "date": "2026-10-01",
            "age_days": 52,
            "ref": "Observation/e",
        },
    ]


def low_e2_values(firings) -> list[float]:
    return [f.matched["lab"]["value"] for f in firings if f.rule_id == "low-estradiol-on-ai"]


def test_back_to_back_patients_do_not_share_facts(evaluator):
    first = evaluator.run_facts(man(12.0))
    second = evaluator.run_facts(man(35.0, ingredient="letrozole"))
    assert low_e2_values(first) == [12.0]
    assert low_e2_values(second) == []
    ingredients = {f.matched["ai"]["ingredient"] for f in second if "ai" in f.matched}
    assert ingredients <= {"letrozole"}
    third = evaluator.run_facts(man(12.0))
    assert low_e2_values(third) == [12.0]


def test_concurrent_evaluations_are_isolated(evaluator):
    results: dict[int, list[float]] = {}
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            for _ in range(10):
                value = 5.0 + index if index % 2 else 40.0 + index
                values = low_e2_values(evaluator.run_facts(man(value, ref=f"MedicationRequest/{index}")))
                assert values == ([value] if index % 2 else []), (index, values)
            results[index] = values
        except BaseException as exc:  # noqa: BLE001 - collected and re-raised in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(results) == 8


def test_no_live_session_after_an_evaluation(evaluator, monkeypatch):
    seen: list[str] = []
    import cds.rules.engine as engine_module

    real = engine_module.uuid.uuid4

    def recording_uuid():
        value = real()
        seen.append(value.hex)
        return value

    monkeypatch.setattr(engine_module.uuid, "uuid4", recording_uuid)
    firings = evaluator.run_facts(man(12.0))
    assert firings
    assert seen, "the evaluation did not take a session id"
    assert evaluator.engine.live_facts(seen[-1]) == []


def test_session_state_exists_during_and_is_gone_after(monkeypatch):
    """live_facts sees a session's facts while it runs, and nothing once evaluate has returned."""
    import cds.rules.engine as engine_module

    sids: list[str] = []
    real = engine_module.uuid.uuid4

    def recording_uuid():
        value = real()
        sids.append(value.hex)
        return value

    monkeypatch.setattr(engine_module.uuid, "uuid4", recording_uuid)
    during: list[int] = []
    engine: RuleEngine

    def peek(matched):
        during.append(len(engine._host.get_facts(engine._name, sids[-1])))  # the lock is held by evaluate
        return None

    engine = RuleEngine([CompiledRule("peek", {"all": [{"x": {"t": "thing"}}]}, peek)])
    engine.evaluate([{"t": "thing", "n": 1}, {"t": "thing", "n": 2}])
    assert during and min(during) >= 2
    assert engine.live_facts(sids[-1]) == []


def test_exception_in_an_action_becomes_engine_error():
    def broken(matched):
        raise ValueError("boom")

    engine = RuleEngine([CompiledRule("broken", {"all": [{"x": {"t": "thing"}}]}, broken)])
    with pytest.raises(EngineError, match="boom"):
        engine.evaluate([{"t": "thing", "n": 1}])
    # the engine is still usable afterwards, and the failed session is gone
    with pytest.raises(EngineError):
        engine.evaluate([{"t": "thing", "n": 2}])
    assert engine.evaluate([{"t": "other"}]) == []


def test_fact_no_rule_mentions_is_not_an_error(evaluator):
    firings = evaluator.run_facts([{"t": "unheard_of", "x": 1}, *man(12.0)])
    assert low_e2_values(firings) == [12.0]


def test_derived_fact_no_rule_mentions_and_duplicate_derivations_are_not_errors():
    engine = RuleEngine(
        [
            CompiledRule("d1", {"all": [{"a": {"t": "lab"}}]}, lambda m: {"t": "nobody_listens", "v": 1}),
            CompiledRule("d2", {"all": [{"a": {"t": "lab"}}]}, lambda m: {"t": "same", "v": 1}),
            CompiledRule("c", {"all": [{"s": {"t": "same"}}]}),
        ]
    )
    firings = engine.evaluate([{"t": "lab", "r": 1}, {"t": "lab", "r": 2}])
    assert [f.rule_id for f in firings].count("d2") == 2
    assert [f.rule_id for f in firings].count("c") == 1


def test_more_than_1024_sequential_evaluations(evaluator):
    for index in range(1100):
        value = 12.0 if index % 2 else 30.0
        assert low_e2_values(evaluator.run_facts(man(value))) == ([12.0] if index % 2 else [])


def test_forward_chaining_escalation_supersedes_loose_cards(evaluator):
    facts = [
        *man(12.0),
        {
            "t": "dxa_change",
            "site": "hip",
            "site_title": "Total hip",
            "from_date": "2024-11-01",
            "to_date": "2026-11-01",
            "bmd_from": 1.0,
            "bmd_to": 0.95,
            "bmd_drop": 0.05,
            "bmd_drop_pct": 5.0,
            "change_text": "BMD 1.000 to 0.950 g/cm2 (-5.0 %)",
        },
    ]
    evaluation = evaluator.from_facts(facts, context={"patientId": "p"}, drafts_by_ref={})
    rules = [c["source"]["topic"]["code"] for c in evaluation.cards]
    assert "low-estradiol-with-bone-loss" in rules
    assert "low-estradiol-on-ai" not in rules and "falling-bone-density" not in rules
    assert {
        "rule": "low-estradiol-on-ai",
        "superseded_by": "low-estradiol-with-bone-loss",
    } in evaluation.superseded
    chain = [f["rule"] for f in evaluation.fired]
    assert chain.index("low-estradiol-on-ai") < chain.index("low-estradiol-with-bone-loss")


def test_the_engine_mixes_kinds_but_compiled_conditions_compare_typed_copies():
    """Raw engine terms take ``true`` for ``1`` and the number ``1`` for ``"1"``; the typed copies the adapter
    asserts keep them apart, and never show in what the engine hands back."""
    from cds.rules.conditions import compile_condition

    pack = rulepack.load()

    def engine(where: dict) -> RuleEngine:
        return RuleEngine([CompiledRule("c", {"all": [{"m": compile_condition({"fact": "f", "where": where},
                                                                              pack)}]})])

    def raw(term: dict) -> RuleEngine:
        return RuleEngine([CompiledRule("c", {"all": [{"m": {"$and": [{"t": "f"}, term]}}]})])

    assert raw({"x": 1}).evaluate([{"t": "f", "x": True}]) != []
    assert raw({"x": "1"}).evaluate([{"t": "f", "x": 1}]) != []
    assert engine({"x": 1}).evaluate([{"t": "f", "x": True}]) == []
    assert engine({"x": "1"}).evaluate([{"t": "f", "x": 1}]) == []
    firings = engine({"x": 1}).evaluate([{"t": "f", "x": 1.0, "y": None}])
    assert [f.matched for f in firings] == [{"m": {"t": "f", "x": 1.0}}]


@pytest.mark.parametrize("order", ["denied fact after", "denied fact before"])
def test_a_negation_over_base_facts_is_decided_once_every_base_fact_is_in(order):
    """A rule whose ``all`` holds only base facts, with a ``none`` over another base fact: whichever order
    the facts are asserted in, the negation sees every base fact (the engine waits for ``ready`` before the
    negated terms), so the rule fires only when the denied fact is absent."""
    engine = RuleEngine([CompiledRule("young-no-ofs", {"all": [
        {"p": {"$and": [{"t": "patient"}, {"age$num": 44}]}},
        {"n0$not": {"$and": [{"t": "medication"}, {"drug_class$str": "ovarian_suppression"}]}},
    ]})])
    patient = {"t": "patient", "age": 44}
    ofs = {"t": "medication", "drug_class": "ovarian_suppression"}
    facts = [patient, ofs] if order == "denied fact after" else [ofs, patient]
    assert [f.rule_id for f in engine.evaluate(facts)] == []
    assert [f.rule_id for f in engine.evaluate([patient])] == ["young-no-ofs"]
    other = {"t": "medication", "drug_class": "aromatase_inhibitor"}
    assert [f.rule_id for f in engine.evaluate([patient, other])] == ["young-no-ofs"]
