"""Every fixture in fixtures/ evaluated through the HTTP API and checked exactly against its sidecar."""

from __future__ import annotations

import copy
import json
import re

import pytest
import yaml
from fixture_check import FIXTURES, SERVICE, Recorder, all_fixtures, differences, expected_for, request_for
from support import make_test_app

from cds.hooks.services import discovery_document
from cds.rules import pack as rulepack
from cds.toolkit.replay import Fixture
from cds.toolkit.replay import request_for as replay_request
from cds.toolkit.request import load_bundle, unsent

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
        _APPS[key] = make_test_app(config, audit_sink=Recorder())
    return _APPS[key]


@pytest.mark.parametrize("path", PATHS, ids=[f"{p.parent.name}/{p.stem}" for p in PATHS])
def test_fixture(path, tmp_path_factory):
    expected = expected_for(path)
    app = _app(expected.get("site_config"), tmp_path_factory)
    assert differences(app, path, expected) == []


def _without_instance(body: dict) -> dict:
    return {k: v for k, v in body.items() if k != "hookInstance"}


def _entries(prefetch: dict) -> set[tuple[str, str]]:
    return {(key, e["resource"]["id"]) for key, bundle in prefetch.items()
            if isinstance(bundle, dict) and "entry" in bundle for e in bundle["entry"]}


def test_the_golden_tests_send_what_cds_replay_sends(tmp_path_factory):
    """The golden request of every fixture is the one ``cds replay`` sends (without its date shift), except
    for the fixtures whose record holds results filed under another patient: replay does not send those
    resources (it skips the fixture and says why), and that is the only difference."""
    app = _app(None, tmp_path_factory)
    discovery = discovery_document(app.extensions["cds.pack"])
    differing = []
    for path in PATHS:
        expected = expected_for(path)
        golden = _without_instance(request_for(app, path, expected))
        service, sent = replay_request(Fixture(path, {"hook": "order-sign", **expected}), discovery,
                                       shift=False)
        assert service["id"] == SERVICE[golden["hook"]]
        sent = _without_instance(sent)
        left_out = unsent(load_bundle(path), golden["hook"])
        if not left_out:
            assert golden == sent, path
            continue
        differing.append(path.stem)
        assert golden["context"] == sent["context"] and golden["prefetch"].keys() == sent["prefetch"].keys()
        extra = _entries(golden["prefetch"]) - _entries(sent["prefetch"])
        assert {f"Observation/{rid}" for _, rid in extra} == {line.split(" ")[0] for line in left_out}, path
    assert differing == ["in-result-for-another-patient"]


def test_fixture_layout():
    """Every fixture is a collection Bundle named in-/out-, with a sidecar, under an active rule's id."""
    rule_ids = {r.id for r in rulepack.load().active_rules}
    assert PATHS, "no fixtures found"
    for path in PATHS:
        if path.parent.name == "scenarios":  # whole-patient scenarios, named for the patient they describe
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
