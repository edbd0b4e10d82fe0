"""Evaluating one fixture through the HTTP API and listing every way the answer differs from its sidecar.

The request is built by the command line's own builder (``cds.toolkit.request.build_hook_request``, as
``cds request``/``cds replay``/``cds evaluate`` build it), from the app's own discovery document.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from cds.errors import InvalidFhir
from cds.fhir import parse as fhir_parse
from cds.hooks.services import discovery_document
from cds.ledger.memory import MemoryLedger
from cds.toolkit.request import build_hook_request, choose_service

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
SERVICE = {
    "patient-view": "bone-health-patient-view",
    "order-select": "bone-health-order-select",
    "order-sign": "bone-health-order-sign",
}


#: the ledger keeping the call records (``.last``: the evaluation behind the HTTP answer)
Recorder = MemoryLedger


def is_bulk_export(folder: Path) -> bool:
    """A Bulk Data export (NDJSON files and their manifest, read by ``cds gaps``), not hook fixtures."""
    return any(folder.glob("*.ndjson")) or any(folder.glob("*.ndjson.gz"))


def all_fixtures() -> list[Path]:
    return sorted(p for p in FIXTURES.glob("*/*.json")
                  if not p.name.endswith(".expected.json") and not is_bulk_export(p.parent))


def expected_for(path: Path) -> dict[str, Any]:
    return json.loads(path.with_name(path.stem + ".expected.json").read_text(encoding="utf-8"))


def _subset(want: dict[str, Any], have: dict[str, Any]) -> bool:
    return all(have.get(k) == v for k, v in want.items())


def request_for(app: Any, path: Path, expected: dict[str, Any], *, misfiled: bool = True) -> dict[str, Any]:
    """The hook request the command line builds for the fixture, for the app's discovery entry.

    The golden tests send the record as the fixture holds it (``misfiled=True``): the same request as
    ``cds replay`` except for resources filed under another patient, which replay does not send (it skips
    those fixtures); ``tests/test_fixtures.py`` checks that.
    """
    bundle = json.loads(path.read_text(encoding="utf-8"))
    hook = expected.get("hook", "order-sign")
    service = choose_service(discovery_document(app.extensions["cds.pack"]), hook, SERVICE[hook])
    return build_hook_request(bundle, hook, service, misfiled=misfiled)


def differences(app: Any, path: Path, expected: dict[str, Any]) -> list[str]:
    """Evaluate ``path`` through ``POST /cds-services/<id>`` and compare with ``expected``; ``app`` is built
    with a ``Recorder`` as its audit sink (``create_app(..., audit_sink=Recorder())``)."""
    hook = expected.get("hook", "order-sign")
    app.config["NOW"] = dt.datetime.fromisoformat(expected.get("at", "2026-11-22")).replace(tzinfo=dt.UTC)
    recorder = app.extensions["cds.service"].audit
    assert isinstance(recorder, Recorder), "build the app with audit_sink=Recorder()"
    recorder.clear()
    body = request_for(app, path, expected)
    response = app.test_client().post(f"/cds-services/{SERVICE[hook]}", json=body)
    if response.status_code != 200:
        return [f"HTTP {response.status_code}: {response.get_data(as_text=True)[:300]}"]
    cards = response.get_json()["cards"]
    by_rule = {c["source"]["topic"]["code"]: c for c in cards}
    problems = []
    got = sorted((rule, c["indicator"]) for rule, c in by_rule.items())
    want = sorted((c["rule"], c["indicator"]) for c in expected.get("cards", []))
    if got != want:
        problems.append(f"cards {got} != expected {want}")
    for item in expected.get("cards", []):
        card = by_rule.get(item["rule"])
        if card is None:
            continue
        if item.get("summary_contains", "") not in card["summary"]:
            problems.append(f"{item['rule']}: summary {card['summary']!r} lacks {item['summary_contains']!r}")
        if item.get("detail_contains", "") not in card["detail"]:
            problems.append(f"{item['rule']}: detail lacks {item['detail_contains']!r}")
        for text in item.get("detail_lacks", []):
            if text in card["detail"]:
                problems.append(f"{item['rule']}: detail contains {text!r}, which it must not")
        for suggestion in card.get("suggestions", []):
            for action in suggestion["actions"]:
                if "resource" in action:
                    try:
                        fhir_parse.parse_resource(action["resource"], where=f"{item['rule']} suggestion")
                    except InvalidFhir as exc:
                        problems.append(f"{item['rule']}: suggested resource invalid: {exc.message}")
                elif action["type"] == "delete" and not str(action.get("resourceId", "")).count("/") == 1:
                    problems.append(f"{item['rule']}: delete action without a relative resourceId")
        if "actions" in item:
            actions = [a["type"] for s in card.get("suggestions", []) for a in s["actions"]]
            if actions != item["actions"]:
                problems.append(f"{item['rule']}: actions {actions} != expected {item['actions']}")
    for rule in expected.get("not_cards", []):
        if rule in by_rule:
            problems.append(f"card {rule} present but listed in not_cards")
    evaluation = recorder.last.evaluation
    fired = {f["rule"] for f in evaluation.fired}
    problems += [f"rule {r} did not fire" for r in expected.get("fired", []) if r not in fired]
    problems += [f"rule {r} fired" for r in expected.get("not_fired", []) if r in fired]
    derived = [f["derived"] for f in evaluation.fired if "derived" in f]
    for want_fact in expected.get("derived", []):
        if not any(_subset(want_fact, fact) for fact in derived):
            problems.append(f"no derived fact matches {want_fact} (derived: {derived})")
    superseded = {s["rule"] for s in evaluation.superseded}
    problems += [f"{r} was not superseded" for r in expected.get("superseded", []) if r not in superseded]
    return problems
