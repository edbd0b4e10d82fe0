"""Every fixture in fixtures/ evaluated through the HTTP API and checked exactly against its sidecar."""

from __future__ import annotations

import copy
import json
import re

import pytest
import yaml
from fixture_check import FIXTURES, all_fixtures, differences, expected_for
from support import make_test_app

from cds.rules import pack as rulepack

PATHS = all_fixtures()
_APPS: dict[str, object] = {}


def _app(site_config: dict | None, tmp_path_factory: pytest.TempPathFactory):
    key = json.dumps(site_config, sort_keys=True)
    if key not in _APPS:
        config = {"TESTING": True}
        if site_config:
            path = tmp_path_factory.mktemp("site") / "site.yaml"
            path.write_text(yaml.safe_dump(site_config), encoding="utf-8")
            config["SITE_CONFIG"] = str(path)
        _APPS[key] = make_test_app(config)
    return _APPS[key]


@pytest.mark.parametrize("path", PATHS, ids=[f"{p.parent.name}/{p.stem}" for p in PATHS])
def test_fixture(path, tmp_path_factory):
    expected = expected_for(path)
    app = _app(expected.get("site_config"), tmp_path_factory)
    assert differences(app, path, expected) == []


def test_fixture_layout():
    """Every fixture is a collection Bundle named in-/out-, with a sidecar, under an active rule's id."""
    rule_ids = {r.id for r in rulepack.load().active_rules}
    assert PATHS, "no fixtures found"
    for path in PATHS:
        if path.parent.name in ("scenarios", "realistic"):  # whole patients, named for who they are
            continue
        assert re.fullmatch(r"(in|out)-[a-z0-9.-]+", path.stem), path
        assert path.parent.name in rule_ids, f"{path.parent.name} is not an active rule id"
        bundle = json.loads(path.read_text(encoding="utf-8"))
        assert bundle["resourceType"] == "Bundle" and bundle["type"] == "collection", path
        expected = expected_for(path)
        assert set(expected) <= {
            "hook",
            "at",
            "cards",
            "not_cards",
            "fired",
            "not_fired",
            "derived",
            "superseded",
            "site_config",
        }, path
        if path.stem.startswith("out-") and path.parent.name not in {"evaluation-gaps"}:
            named = path.parent.name
            assert named in expected.get("not_cards", []) + expected.get("not_fired", []), (
                f"{path}: an out- fixture must say its rule does not fire"
            )


def test_every_active_rule_has_in_and_out_fixtures():
    for rule in rulepack.load().active_rules:
        names = [p.stem for p in (FIXTURES / rule.id).glob("*.json") if not p.name.endswith(".expected.json")]
        assert any(n.startswith("in-") for n in names), f"{rule.id} has no in- fixture"
        assert any(n.startswith("out-") for n in names), f"{rule.id} has no out- fixture"


@pytest.mark.parametrize("mutation", ["indicator", "extra-card", "missing-card", "not-cards", "fired"])
def test_a_wrong_expectation_fails(mutation, tmp_path_factory):
    path = FIXTURES / "low-estradiol-on-ai" / "in-9.9-pg-ml-critical.json"
    expected = copy.deepcopy(expected_for(path))
    app = _app(None, tmp_path_factory)
    assert differences(app, path, expected) == []
    if mutation == "indicator":
        expected["cards"][0]["indicator"] = "warning"
    elif mutation == "extra-card":
        expected["cards"].append({"rule": "vitamin-d-low", "indicator": "info"})
    elif mutation == "missing-card":
        expected["cards"] = []
    elif mutation == "not-cards":
        expected["not_cards"] = ["low-estradiol-on-ai"]
    else:
        expected["not_fired"] = ["on-aromatase-inhibitor"]
    assert differences(app, path, expected) != []
