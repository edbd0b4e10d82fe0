"""Every derived fact a card's "why" reaches is explained by the firing that derived it: for every fixture
in fixtures/ evaluated through the HTTP API, each card's explanation (``cds.review.explain``, over the record
content the audit store writes) names the rule behind every fact of a derived type, down to the EHR's data.
A derived fact asserted without a field its rule copies (a field the source fact lacks) was once shown as
"built from the EHR's data", its rule missing from the explanation."""

from __future__ import annotations

import datetime as dt

import pytest
from fixture_check import SERVICE, Recorder, all_fixtures, expected_for, request_for
from support import make_test_app

from cds.ledger.record import build_content
from cds.review.explain import explain_all

PATHS = all_fixtures()


def _unexplained(node: dict, derived_types: set[str], path: str) -> list[str]:
    fact = node["fact"]
    here = f"{path} > {node.get('alias')}:{fact.get('t')}"
    if node["derivedBy"] is None:
        return [here] if fact.get("t") in derived_types else []
    return [gap for sub in node["derivedBy"]["from"] for gap in _unexplained(sub, derived_types, here)]


@pytest.mark.slow
def test_every_derived_fact_on_every_card_is_explained_by_its_rule():
    app = make_test_app({"TESTING": True}, audit_sink=Recorder())
    pack = app.extensions["cds.pack"]
    derived_types = pack.derived_types()
    assert {"on_ai", "not_postmenopausal"} <= derived_types
    recorder = app.extensions["cds.service"].audit
    gaps: list[str] = []
    explained = 0
    for path in PATHS:
        expected = expected_for(path)
        if expected.get("site_config") or not expected.get("cards"):
            continue
        hook = expected.get("hook", "order-sign")
        app.config["NOW"] = dt.datetime.fromisoformat(expected.get("at", "2026-11-22")).replace(tzinfo=dt.UTC)
        recorder.clear()
        body = request_for(app, path, expected)
        response = app.test_client().post(f"/cds-services/{SERVICE[hook]}", json=body)
        assert response.status_code == 200, (path, response.get_data(as_text=True)[:300])
        content = build_content(recorder.last, pack, b"explain-class-test-secret-0123456789")
        for card in explain_all(content, pack):
            for firing in card["firings"]:
                for node in firing:
                    explained += 1
                    gaps += _unexplained(node, derived_types, f"{path.parent.name}/{path.stem}")
    assert explained > 100
    assert gaps == []
