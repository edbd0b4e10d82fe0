"""Finding 10: the CPU one hook call may use is bounded, in work and in time.

Over real HTTP: a 4 MB body of 3 x 4,700 Observations is refused at once (more resources than
``CALL_MAX_RESOURCES``), and with that cap lifted, a wall-clock budget (``CALL_BUDGET_SECONDS``) ends the
call; either way the answer is a 503 OperationOutcome naming what ran out, and the audit trail holds the
call's record with the same reason.
"""

from __future__ import annotations

import json
import time

import pytest
import requests
from builders import complete_prefetch, med, obs, patient, searchset
from support import make_token

from cds import create_app
from cds.ledger.schema import audit_record

SERVICE = "bone-health-patient-view"


def huge_body() -> dict:
    def many(code: str, unit: str) -> dict:
        dates = [f"2025-{1 + i % 12:02d}-{1 + i % 28:02d}" for i in range(4_700)]
        return searchset([obs(code, 10 + i % 50, unit, d, oid=f"{code}-{i}") for i, d in enumerate(dates)])

    return {"hook": "patient-view", "hookInstance": "5a1e3c2b-0f4d-4b8e-9c71-2d3e4f5a6b7c",
            "context": {"userId": "Practitioner/dr-1", "patientId": "p1"},
            "prefetch": complete_prefetch(patient=patient(), estradiol=many("2243-4", "pg/mL"),
                                          vitaminD=many("1989-3", "ng/mL"), dxa=many("38265-5", "g/cm2"),
                                          medications=searchset([med()]))}


@pytest.fixture(scope="module")
def body() -> bytes:
    raw = json.dumps(huge_body()).encode()
    assert len(raw) > 4_000_000
    return raw


def post(base: str, raw: bytes) -> tuple[requests.Response, float]:
    url = f"{base}/cds-services/{SERVICE}"
    started = time.monotonic()
    headers = {"Authorization": f"Bearer {make_token(url)}", "Content-Type": "application/json"}
    response = requests.post(url, data=raw, timeout=120, headers=headers)
    return response, time.monotonic() - started


def audited(app) -> dict:
    store = app.extensions["cds.audit"]
    assert store.wait_drained(30)
    with store.engine.connect() as conn:
        return dict(conn.execute(audit_record.select()).mappings().one())


def make(auth_config, tmp_path, live_server, **config):
    app = create_app({**auth_config, "AUDIT_PATIENT_KEY_SECRET": "s" * 32, "MODEL_CACHE_SIZE": 0,
                      "FACTS_CACHE_SIZE": 0, "AUDIT_SPOOL_DIR": str(tmp_path / "spool"), **config})
    return app, live_server(app)


def test_the_default_resource_cap_is_below_the_attack():
    from cds.settings import load

    assert 0 < load({})["CALL_MAX_RESOURCES"] < 3 * 4_700


def test_too_many_resources_for_one_call_is_a_503_at_once(auth_config, tmp_path, live_server, body):
    app, base = make(auth_config, tmp_path, live_server, CALL_MAX_RESOURCES=1_000)
    response, elapsed = post(base, body)
    assert response.status_code == 503, response.text[:500]
    issue = response.json()["issue"][0]
    assert issue["code"] == "too-costly" and "CDS_CALL_MAX_RESOURCES" in issue["diagnostics"]
    assert elapsed < 15, elapsed  # refused after 1,000 validations, not 14,100
    row = audited(app)
    assert row["outcome"] == "503" and "CDS_CALL_MAX_RESOURCES" in row["content"]
    app.extensions["cds.audit"].close()


def test_the_time_budget_ends_a_long_call(auth_config, tmp_path, live_server, body):
    # How long the whole call takes on this machine now, with no time budget: the budget is then set to a
    # tenth of that, so the call cannot finish inside it however fast or loaded the machine is.
    unlimited, base = make(auth_config, tmp_path / "unlimited", live_server, CALL_MAX_RESOURCES=0,
                           CALL_BUDGET_SECONDS=0, DATABASE_URL=f"sqlite:///{tmp_path / 'unlimited.sqlite3'}")
    response, whole = post(base, body)
    assert response.status_code == 200, response.text[:500]
    unlimited.extensions["cds.audit"].close()

    seconds = round(max(whole / 10, 0.01), 3)
    app, base = make(auth_config, tmp_path / "budgeted", live_server, CALL_MAX_RESOURCES=0,
                     CALL_BUDGET_SECONDS=seconds)
    response, elapsed = post(base, body)
    assert response.status_code == 503, (whole, elapsed, seconds, response.text[:300])
    diagnostics = response.json()["issue"][0]["diagnostics"]
    assert f"time budget of {seconds:g} s (CDS_CALL_BUDGET_SECONDS)" in diagnostics
    assert elapsed < seconds + 10, (elapsed, whole)  # ended at the budget, not after the whole work
    row = audited(app)
    assert row["outcome"] == "503" and "CDS_CALL_BUDGET_SECONDS" in row["content"]
    app.extensions["cds.audit"].close()
