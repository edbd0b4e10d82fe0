"""Session hazards of durable-rules, run in a child process so that a crash fails the test instead of
killing the test run."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120
    )


def test_sessions_with_only_partial_matches_are_deleted_without_crashing():
    # Without the sentinel rule, deleting such a session is a segmentation fault in the engine.
    result = _run("""
        from cds.rules import pack as rulepack
        from cds.decide.evaluate import Evaluator
        ev = Evaluator(rulepack.load())
        for facts in ([], [{"t": "patient", "sex": "male"}],
                      [{"t": "lab", "analyte": "estradiol", "value": 5.0, "age_days": 3}],
                      [{"t": "problem", "kind": "data", "reason": "x"}]):
            assert ev.run_facts(facts) == []
        print("ok")
    """)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "ok"


def test_more_sessions_than_the_engine_keeps_alive():
    # The engine holds at most 1,024 live sessions per ruleset: 3,000 evaluations must all work, each
    # leaving no session behind.
    result = _run("""
        from cds.rules import pack as rulepack
        from cds.decide.evaluate import Evaluator
        ev = Evaluator(rulepack.load())
        facts = [{"t": "patient", "sex": "male"},
                 {"t": "medication", "drug_class": "aromatase_inhibitor", "status": "active",
                  "ingredient": "anastrozole", "ref": "MedicationRequest/1", "draft": False,
                  "selected": False, "matched_by": "rxnorm"},
                 {"t": "lab", "analyte": "estradiol", "value": 5.0, "age_days": 3, "date": "2026-11-19",
                  "ref": "Observation/e"}]
        for i in range(3000):
            fired = {f.rule_id for f in ev.run_facts(facts if i % 2 else facts[:1])}
            assert ("low-estradiol-on-ai" in fired) == bool(i % 2), (i, fired)
        print("ok")
    """)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "ok"


def test_a_failing_evaluation_still_closes_its_session():
    # A fact the engine cannot take, and an action that raises, both end the evaluation with EngineError;
    # the session is closed without crashing and the next evaluation starts clean.
    result = _run("""
        from cds.rules import pack as rulepack
        from cds.rules.engine import CompiledRule, RuleEngine
        from cds.errors import EngineError
        def explode(matched):
            raise ValueError("boom")
        engine = RuleEngine([
            CompiledRule("pair", {"all": [{"a": {"t": "x"}}, {"b": {"t": "y"}}]}),
            CompiledRule("explodes", {"all": [{"a": {"t": "z"}}]}, explode),
        ])
        for i in range(50):
            for facts in ([{"t": "x"}, {"t": "y", "v": 1e300 * 10}],
                          [{"t": "x"}, {"t": "z"}]):
                try:
                    engine.evaluate(facts)
                    raise SystemExit("expected EngineError")
                except EngineError as exc:
                    assert "cannot represent" in str(exc) or "boom" in str(exc), exc
            fired = [f.rule_id for f in engine.evaluate([{"t": "x"}, {"t": "y"}])]
            assert fired == ["pair"], fired
        print("ok")
    """)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "ok"
