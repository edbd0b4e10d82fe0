"""The request collection (docs/clients/bone-health-cds.postman_collection.json): what `cds collection`
writes today, byte for byte (so it cannot go stale); a valid Postman Collection v2.1 document; and each of
its requests, sent as an HTTP client sends it (its variables filled in), answered by a real server on a
local port with the cards its fixture's sidecar expects."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import requests
from support import NOW, make_token

from cds import create_app
from cds.cli import main
from cds.rules import pack as rulepack
from cds.toolkit.collection import SCHEMA, hook_call_item
from cds.toolkit.request import build_hook_request, choose_service, load_bundle, load_sidecar

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = ROOT / "docs" / "clients" / "bone-health-cds.postman_collection.json"
SCENARIOS = ROOT / "fixtures" / "scenarios"

# The parts of the Postman Collection Format v2.1 the collection uses, as that format defines them
# (items and folders, requests with method, url, headers, raw body, bearer or no auth; variables).
KEY_VALUE = {"type": "object", "required": ["key", "value"],
             "properties": {"key": {"type": "string"}, "value": {"type": "string"},
                            "type": {"type": "string"}}}
POSTMAN_V21 = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["info", "item"],
    "properties": {
        "info": {"type": "object", "required": ["name", "schema"],
                 "properties": {"name": {"type": "string"}, "description": {"type": "string"},
                                "schema": {"const": SCHEMA}}},
        "variable": {"type": "array", "items": KEY_VALUE},
        "item": {"type": "array", "items": {"$ref": "#/$defs/itemOrFolder"}},
    },
    "$defs": {
        "itemOrFolder": {"oneOf": [{"$ref": "#/$defs/item"}, {"$ref": "#/$defs/folder"}]},
        "folder": {"type": "object", "required": ["name", "item"], "additionalProperties": False,
                   "properties": {"name": {"type": "string"}, "description": {"type": "string"},
                                  "item": {"type": "array", "items": {"$ref": "#/$defs/itemOrFolder"}}}},
        "item": {"type": "object", "required": ["name", "request"], "additionalProperties": False,
                 "properties": {"name": {"type": "string"}, "request": {"$ref": "#/$defs/request"}}},
        "request": {
            "type": "object", "required": ["method", "url"], "additionalProperties": False,
            "properties": {
                "method": {"enum": ["GET", "PUT", "POST", "PATCH", "DELETE", "COPY", "HEAD", "OPTIONS"]},
                "url": {"type": "object", "required": ["raw"], "properties": {
                    "raw": {"type": "string"}, "host": {"type": "array", "items": {"type": "string"}},
                    "path": {"type": "array", "items": {"type": "string"}}}},
                "header": {"type": "array", "items": KEY_VALUE},
                "body": {"type": "object", "required": ["mode", "raw"], "properties": {
                    "mode": {"const": "raw"}, "raw": {"type": "string"},
                    "options": {"type": "object"}}},
                "auth": {"type": "object", "required": ["type"], "properties": {
                    "type": {"enum": ["noauth", "bearer"]},
                    "bearer": {"type": "array", "items": KEY_VALUE}}},
                "description": {"type": "string"},
            },
        },
    },
}


def requests_of(node: dict[str, Any]) -> list[dict[str, Any]]:
    if "request" in node:
        return [node]
    return [leaf for child in node.get("item", []) for leaf in requests_of(child)]


def test_the_committed_collection_is_what_cds_collection_writes(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("CDS_RULES_DIR", raising=False)
    monkeypatch.delenv("CDS_SITE_CONFIG", raising=False)
    out = tmp_path / "collection.json"
    assert main(["collection", "--out", str(out)]) == 0
    assert out.read_text() == COMMITTED.read_text(), (
        "docs/clients/bone-health-cds.postman_collection.json is stale: run "
        "`./run.sh collection --out docs/clients/bone-health-cds.postman_collection.json`")


def test_the_collection_is_postman_v21_with_every_scenario_built_as_cds_request_builds_it():
    data = json.loads(COMMITTED.read_text())
    jsonschema.Draft202012Validator.check_schema(POSTMAN_V21)
    jsonschema.validate(data, POSTMAN_V21)
    leaves = requests_of(data)
    calls = [leaf for leaf in leaves if "/cds-services/" in leaf["request"]["url"]["raw"]
             and not leaf["request"]["url"]["raw"].endswith("/feedback")]
    fixtures = sorted(p for p in SCENARIOS.glob("*.json") if not p.name.endswith(".expected.json"))
    assert sorted(c["name"] for c in calls) == [p.name[: -len(".json")] for p in fixtures]
    pack = rulepack.load(None)
    from cds.hooks.services import discovery_document

    discovery = discovery_document(pack)
    for fixture in fixtures:
        item = next(c for c in calls if c["name"] == fixture.name[: -len(".json")])
        body = json.loads(item["request"]["body"]["raw"])
        hook = load_sidecar(fixture)["hook"]
        built = build_hook_request(load_bundle(fixture), hook, choose_service(discovery, hook))
        assert body["hookInstance"] == "{{$guid}}"
        assert {**body, "hookInstance": None} == {**built, "hookInstance": None}
        assert item == hook_call_item(fixture, discovery, ROOT)
    for leaf in leaves:  # every call to the CDS endpoints carries the client token; /health none
        auth = leaf["request"]["auth"]
        if leaf["request"]["url"]["path"] == ["health"]:
            assert auth == {"type": "noauth"}
        else:
            assert auth["type"] == "bearer" and auth["bearer"][0]["value"] == "{{clientToken}}"


def fill(text: str, variables: dict[str, str]) -> str:
    """``{{name}}`` as an HTTP client fills it: ``{{$guid}}`` a fresh uuid each time, the others from
    ``variables``."""
    return re.sub(r"\{\{(\$?\w+)\}\}",
                  lambda m: str(uuid.uuid4()) if m.group(1) == "$guid" else variables[m.group(1)], text)


@pytest.mark.slow
def test_each_request_sent_as_a_client_sends_it_is_answered(auth_config, live_server):
    app = create_app({**auth_config, "NOW": NOW})  # the scenarios are written for this date
    base = live_server(app)
    data = json.loads(COMMITTED.read_text())
    variables = {v["key"]: v["value"] for v in data["variable"]} | {"baseUrl": base}
    sidecars = {p.name[: -len(".json")]: load_sidecar(p) for p in SCENARIOS.glob("*.json")
                if not p.name.endswith(".expected.json")}
    card = None
    for leaf in requests_of(data):
        request = leaf["request"]
        url = fill(request["url"]["raw"], variables)
        if leaf["name"] == "feedback":
            continue  # below, once a card has been issued
        headers = {h["key"]: h["value"] for h in request["header"]}
        if request["auth"]["type"] == "bearer":
            headers["Authorization"] = "Bearer " + make_token(url)  # what `cds dev-token --url` gives
        body = fill(request["body"]["raw"], variables).encode() if "body" in request else None
        response = requests.request(request["method"], url, data=body, headers=headers, timeout=120)
        assert response.status_code == 200, (leaf["name"], response.text)
        if leaf["name"] in sidecars:
            cards = response.json()["cards"]
            got = {c["source"]["topic"]["code"] for c in cards}
            assert {c["rule"] for c in sidecars[leaf["name"]]["cards"]} <= got, leaf["name"]
            if cards and "/bone-health-order-sign" in url:
                card = cards[0]["uuid"]
    assert card is not None
    feedback = next(leaf for leaf in requests_of(data) if leaf["name"] == "feedback")["request"]
    url = fill(feedback["url"]["raw"], variables)
    headers = {h["key"]: h["value"] for h in feedback["header"]}
    headers["Authorization"] = "Bearer " + make_token(url)
    body = fill(feedback["body"]["raw"], variables | {"cardUuid": card})
    assert requests.post(url, data=body.encode(), headers=headers, timeout=60).status_code == 200
