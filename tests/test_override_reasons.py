"""Every card's ``overrideReasons`` are exactly the reasons its rule declares (code, display, this service's
system), for one firing fixture of every card rule; every card rule declares the standard reasons, each with
a period that is a threshold in days."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from cds.call.suppression import PENDING_KEY
from cds.decide.cards import OVERRIDE_SYSTEM
from cds.rules.check import STANDARD_REASONS
from cds.rules.pack import load
from cds.toolkit.offline import evaluate_bundle

PACK = load()
FIXTURES = Path(__file__).parent.parent / "fixtures"
CARD_RULES = [r for r in PACK.active_rules if r.kind == "card"]


def _firing_fixture(rule_id: str) -> tuple[Path, dict] | None:
    for path in sorted((FIXTURES / rule_id).glob("in-*.json")):
        if path.name.endswith(".expected.json"):
            continue
        sidecar = json.loads(path.with_name(path.name[:-5] + ".expected.json").read_text())
        if not sidecar.get("site_config"):
            return path, sidecar
    return None


@pytest.mark.parametrize("rule", CARD_RULES, ids=[r.id for r in CARD_RULES])
def test_the_card_offers_exactly_the_reasons_its_rule_declares(rule):
    declared = [{"system": OVERRIDE_SYSTEM, "code": r["code"], "display": r["display"]}
                for r in rule.card["override_reasons"]]
    assert set(STANDARD_REASONS) <= {r["code"] for r in declared}
    for reason in rule.card["override_reasons"]:
        assert reason["does"] == "silence" and PACK.thresholds[reason["period"]]["unit"] == "d"
    found = _firing_fixture(rule.id)
    if found is None:
        pytest.skip(f"{rule.id}: every firing fixture needs a site configuration")
    path, sidecar = found
    at = dt.datetime.fromisoformat(sidecar.get("at", "2026-11-22")).replace(tzinfo=dt.UTC)
    result = evaluate_bundle(json.loads(path.read_text()), sidecar.get("hook", "order-sign"), PACK, now=at)
    cards = [c for c in result.response["cards"] if c["source"]["topic"]["code"] == rule.id]
    assert cards, f"{path.name} gives no {rule.id} card"
    for card in cards:
        assert card["overrideReasons"] == declared
    assert PENDING_KEY in result.request["prefetch"]  # the fixtures' request answers the new key too
