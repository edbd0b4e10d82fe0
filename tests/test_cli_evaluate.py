"""``cds evaluate``: offline evaluation of a fixture bundle, as text and as JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from cds.cli import main

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
ESCALATION = FIXTURES / "low-estradiol-with-bone-loss" / "in-low-e2-and-falling-bmd.json"


def test_evaluate_text_lists_cards_and_fired_rules(capsys):
    assert main(["evaluate", str(ESCALATION), "--hook", "order-sign", "--at", "2026-11-22"]) == 0
    out = capsys.readouterr().out
    assert "1 card(s)" in out and "[critical]" in out
    assert "low-estradiol-on-ai v1.2.0" in out and "low-estradiol-with-bone-loss v1.1.0" in out
    assert "value=14.0" in out  # the fact that fired the rule
    assert "set aside: falling-bone-density (explained by low-estradiol-with-bone-loss)" in out


def test_evaluate_json(capsys):
    assert main(["evaluate", str(ESCALATION), "--hook", "order-sign", "--at", "2026-11-22", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [c["indicator"] for c in data["cards"]] == ["critical"]
    fired = {f["rule"]: f for f in data["fired"]}
    assert fired["low-estradiol-on-ai"]["facts"]["lab"]["value"] == 14.0
    assert fired["falling-bone-density"]["derived"]["t"] == "bone_at_risk"
    escalation = "low-estradiol-with-bone-loss"
    assert {"rule": "low-estradiol-on-ai", "superseded_by": escalation} in data["superseded"]
    actions = [a["type"] for s in data["cards"][0]["suggestions"] for a in s["actions"]]
    assert actions == ["update", "delete", "create"]
    update = data["cards"][0]["suggestions"][0]["actions"][0]["resource"]
    assert update["dosageInstruction"][0]["timing"]["repeat"]["period"] == 7.0


def test_evaluate_subprocess_and_errors(tmp_path):
    ok = subprocess.run(
        [
            sys.executable,
            "-m",
            "cds",
            "evaluate",
            str(ESCALATION),
            "--hook",
            "order-sign",
            "--at",
            "2026-11-22",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["cards"][0]["source"]["topic"]["code"] == "low-estradiol-with-bone-loss"
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    failed = subprocess.run(
        [sys.executable, "-m", "cds", "evaluate", str(bad)], capture_output=True, text=True, timeout=120
    )
    assert failed.returncode == 2 and "not JSON" in failed.stderr and "Traceback" not in failed.stderr


def test_evaluate_names_the_order_each_fired_rule_refers_to(capsys):
    """Two orders (the active anastrozole and its renewal being signed): each fired line says which."""
    two_orders = FIXTURES / "scenarios" / "trt-man-anastrozole-low-estradiol.json"
    assert main(["evaluate", str(two_orders), "--hook", "order-sign", "--at", "2026-11-22"]) == 0
    out = capsys.readouterr().out
    fired = out.split("rules fired:\n", 1)[1].splitlines()
    assert len(fired) == len(set(fired)), "two fired lines read the same"
    low = [line for line in fired if line.startswith("  low-estradiol-on-ai v1.2.0")]
    assert len(low) == 2
    assert any(" for MedicationRequest/mr-ana-renew (draft order): " in line for line in low)
    assert any(" for MedicationRequest/mr-ana: " in line for line in low)


def test_evaluate_sends_the_record_as_the_fixture_holds_it(capsys):
    """Offline, as in the golden tests, a result filed under another patient is sent: the service's defence
    (an evaluation-gaps card naming it) is what the fixture is about."""
    fixture = FIXTURES / "evaluation-gaps" / "in-result-for-another-patient.json"
    assert main(["evaluate", str(fixture), "--hook", "order-sign", "--at", "2026-11-22", "--json"]) == 0
    cards = json.loads(capsys.readouterr().out)["cards"]
    gaps = [c for c in cards if c["source"]["topic"]["code"] == "evaluation-gaps"]
    assert len(gaps) == 1 and "different patient" in gaps[0]["detail"]
