"""The hook library's example requests are answered with 200 and spec-valid JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from spec_checks import check_response

EXAMPLES = Path(__file__).parent / "data" / "spec-examples"


@pytest.mark.parametrize("hook", ["patient-view", "order-select", "order-sign"])
def test_hook_library_example_is_answered(call, hook):
    body = json.loads((EXAMPLES / f"{hook}.json").read_text())
    # The examples carry no prefetch and no fhirServer: the client says it found nothing for each key.
    keys = ("patient", "estradiol", "vitaminD", "dxa", "monitoring", "medications")
    body["prefetch"] = {key: None for key in keys}
    response = call(body)
    assert response.status_code == 200, response.get_json()
    check_response(response.get_json())


def test_example_without_prefetch_or_fhir_server_is_an_honest_412(call):
    body = json.loads((EXAMPLES / "patient-view.json").read_text())
    response = call(body)
    assert response.status_code == 412
    outcome = response.get_json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert "patient" in outcome["issue"][0]["diagnostics"]
