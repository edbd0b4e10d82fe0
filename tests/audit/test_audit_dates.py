"""Finding 17 of the hostile-input review: dates that overflow once moved to UTC are a 400 naming the
parameter, never a 500 — over real HTTP, on the JSON API and the pages, and one line on the command line.
"""

from __future__ import annotations

import pytest
import requests
from audit_support import BEARER, SERVICE, hook_body

from cds.cli import main

EDGES = ["9999-12-31T23:59:59-05:00", "0001-01-01T00:00:00+05:00"]


@pytest.fixture
def base(app, live_server):
    assert app.test_client().post(f"/cds-services/{SERVICE}", json=hook_body("p-1")).status_code == 200
    return live_server(app)


@pytest.mark.parametrize("param", ["since", "until"])
@pytest.mark.parametrize("value", EDGES)
def test_an_overflowing_date_is_a_400_naming_the_parameter(base, param, value):
    res = requests.get(f"{base}/audit/api/records", params={param: value}, headers=BEARER, timeout=60)
    assert res.status_code == 400, res.text
    body = res.json()
    assert body["resourceType"] == "OperationOutcome" and body["issue"][0]["expression"] == [param]
    assert "years 1 to 9999" in body["issue"][0]["diagnostics"] and "Traceback" not in res.text
    page = requests.get(f"{base}/audit/", params={param: value}, headers=BEARER, timeout=60)
    assert page.status_code == 400 and "Traceback" not in page.text


def test_the_edges_that_fit_still_filter(base):
    res = requests.get(f"{base}/audit/api/records", headers=BEARER, timeout=60,
                       params={"since": "0001-01-01T00:00:00-05:00", "until": "9999-12-31T23:59:59+05:00"})
    assert res.status_code == 200 and res.json()["total"] == 1


@pytest.mark.parametrize("value", EDGES)
def test_the_command_line_answers_in_one_line(app, monkeypatch, capsys, value):
    monkeypatch.setenv("CDS_DATABASE_URL", app.config["DATABASE_URL"])
    monkeypatch.setenv("CDS_AUDIT_PATIENT_KEY_SECRET", app.config["AUDIT_PATIENT_KEY_SECRET"])
    assert main(["audit", "list", "--since", value]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cds: error:") and "years 1 to 9999" in err and len(err.splitlines()) == 1
