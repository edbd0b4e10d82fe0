"""Checks that a response is CDS Hooks 2.0 spec-valid JSON (used by many tests)."""

from __future__ import annotations

import uuid
from typing import Any

INDICATORS = {"info", "warning", "critical"}


def _no_empty(value: Any, where: str) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            assert v is not None, f"{where}.{k} is null: optional fields must be omitted"
            if isinstance(v, list | dict | str):
                assert len(v) > 0 or k == "cards", f"{where}.{k} is empty: optional fields must be omitted"
            _no_empty(v, f"{where}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _no_empty(v, f"{where}[{i}]")


def check_card(card: dict[str, Any]) -> None:
    uuid.UUID(card["uuid"])
    assert isinstance(card["summary"], str) and 0 < len(card["summary"]) < 140
    assert card["indicator"] in INDICATORS
    assert isinstance(card["source"]["label"], str) and card["source"]["label"]
    assert card["source"]["url"].startswith("https://")
    assert isinstance(card.get("detail", ""), str)
    suggestions = card.get("suggestions", [])
    if suggestions:
        assert card["selectionBehavior"] in ("at-most-one", "any")
    for s in suggestions:
        uuid.UUID(s["uuid"])
        assert s["label"]
        assert s["actions"]
        for a in s["actions"]:
            assert a["type"] in ("create", "update", "delete")
            assert a["description"]
            if a["type"] in ("create", "update"):
                assert isinstance(a["resource"], dict) and a["resource"]["resourceType"]
            else:
                assert "/" in a["resourceId"]
    for reason in card.get("overrideReasons", []):
        assert reason["code"] and reason["display"]
    for link in card.get("links", []):
        assert link["label"] and link["url"] and link["type"] in ("absolute", "smart")


def check_response(body: dict[str, Any]) -> None:
    assert set(body) <= {"cards", "systemActions"}
    assert isinstance(body["cards"], list)
    for card in body["cards"]:
        check_card(card)
    _no_empty(body, "response")


def rules_of(body: dict[str, Any]) -> list[str]:
    return sorted(card["source"]["topic"]["code"] for card in body["cards"])
