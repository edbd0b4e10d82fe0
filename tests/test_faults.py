"""Faults over real sockets: a FHIR server that resets, hangs, drips, floods or talks nonsense.

The service runs on a local port (werkzeug, threaded) with its real audit store (SQLite); the FHIR server is
``fault_server.FaultServer`` on another port. Every call must end in a defined answer — 200 with cards
when the data came, an OperationOutcome 412 naming the key when it did not — within the configured time
budget, with no stack trace; afterwards the audit trail holds exactly one record per call and its chain
verifies.
"""

from __future__ import annotations

import concurrent.futures
import time
import uuid

import pytest
import requests
from fault_server import FaultServer
from sqlalchemy import func, select
from support import make_token

from cds.ledger.schema import audit_record
from cds.review import queries
from cds.web.app import create_app

CONNECT, READ, BUDGET = 0.5, 0.6, 2.0  # FHIR_CONNECT_TIMEOUT, FHIR_READ_TIMEOUT, FHIR_RESPONSE_SECONDS
SERVICE = "bone-health-patient-view"
TRACE_WORDS = ("Traceback", 'File "', "Error:", "requests.exceptions", "urllib3")


@pytest.fixture
def fhir():
    server = FaultServer("ok")
    yield server
    server.close()


@pytest.fixture
def service(fhir, auth_config, tmp_path, live_server):
    app = create_app(
        {
            **auth_config,
            "FHIR_SERVER_ALLOWLIST": fhir.url,
            "FHIR_CONNECT_TIMEOUT": CONNECT,
            "FHIR_READ_TIMEOUT": READ,
            "FHIR_RESPONSE_SECONDS": BUDGET,
            "FHIR_MAX_RESPONSE_BYTES": 2_000_000,
            "FHIR_RETRIES": 1,
            "FHIR_BACKOFF_SECONDS": 0.05,
            "AUDIT_SPOOL_DIR": str(tmp_path / "spool"),
            "AUDIT_PATIENT_KEY_SECRET": "s" * 32,
        }
    )
    base = live_server(app)
    yield app, base
    app.extensions["cds.audit"].close()


def post(base: str, fhir_url: str, patient: str = "pat-1") -> tuple[int, dict, float]:
    url = f"{base}/cds-services/{SERVICE}"
    body = {
        "hook": "patient-view",
        "hookInstance": str(uuid.uuid4()),
        "fhirServer": fhir_url,
        "fhirAuthorization": {
            "access_token": "tok",
            "token_type": "Bearer",
            "expires_in": 300,
            "scope": "patient/*.read",
            "subject": "cds",
        },
        "context": {"userId": "Practitioner/dr-1", "patientId": patient},
    }
    started = time.perf_counter()
    response = requests.post(
        url, json=body, headers={"Authorization": f"Bearer {make_token(url)}"}, timeout=60
    )
    elapsed = time.perf_counter() - started
    text = response.text
    assert not any(word in text for word in TRACE_WORDS), text
    return response.status_code, response.json(), elapsed


def audit_count(app) -> int:
    store = app.extensions["cds.audit"]
    assert store.wait_drained(20)
    with store.engine.connect() as conn:
        count = conn.execute(select(func.count()).select_from(audit_record)).scalar_one()
    checked, broken = queries.verify_chain(store.engine)
    assert broken is None and checked == count
    return count


# a single GET may take connect + read per attempt at most (two attempts for a retried status), or the
# response budget for a server that keeps sending; one hook call fetches five keys.
FAULTS = {
    "reset": "could not be reached",
    "reset-mid": "",
    "close-mid": "",
    "hang": f"did not answer within {READ:g} s",
    "drip": f"within {BUDGET:g} s",
    "huge": "larger than",
    "not-json": "not JSON",
    "garbage": "",
}


@pytest.mark.parametrize("mode", sorted(FAULTS))
def test_each_fault_ends_in_a_412_within_the_budget_and_is_audited(fhir, service, mode):
    app, base = service
    fhir.mode = mode
    status, body, elapsed = post(base, fhir.url)
    assert status == 412, body
    assert body["resourceType"] == "OperationOutcome"
    diagnostics = " ".join(i.get("diagnostics", "") for i in body["issue"])
    assert FAULTS[mode] in diagnostics
    # a fault that is server-wide stops the fetching; any other fails each of the five keys on its own
    assert elapsed < 5 * (BUDGET + 0.5), f"{mode}: {elapsed:.1f} s"
    fhir.mode = "ok"
    status, body, _ = post(base, fhir.url)
    assert status == 200 and isinstance(body["cards"], list)
    assert audit_count(app) == 2


def test_a_hang_costs_one_read_timeout_not_five(fhir, service):
    """A server that accepts and never answers is server-wide: the call stops after the first key."""
    _, base = service
    fhir.mode = "hang"
    status, _, elapsed = post(base, fhir.url)
    assert status == 412
    assert READ - 0.1 < elapsed < READ + 1.5


def test_a_slow_server_inside_the_timeout_still_answers(fhir, service):
    app, base = service
    fhir.mode, fhir.delay = "slow", READ / 3
    status, body, elapsed = post(base, fhir.url)
    assert status == 200 and "cards" in body
    assert elapsed < 5 * READ
    assert audit_count(app) == 1


def test_a_fhir_server_that_is_not_there_is_a_412_at_once(fhir, service):
    app, base = service
    fhir.close()  # allow-listed, but nothing listens on its port any more: connection refused
    status, body, elapsed = post(base, fhir.url, "pat-2")
    assert status == 412 and "could not be reached" in body["issue"][0]["diagnostics"]
    assert elapsed < 2
    assert audit_count(app) == 1


def test_faults_mixed_under_concurrency_each_get_a_defined_answer(fhir, service):
    """Eight threads, forty calls, the FHIR server switching between good and bad answers all along."""
    app, base = service
    modes = ["ok", "reset", "ok", "not-json", "ok", "close-mid", "slow", "garbage"]
    fhir.delay = 0.1

    def one(i: int) -> int:
        fhir.mode = modes[i % len(modes)]
        status, body, elapsed = post(base, fhir.url, patient=f"pat-{i}")
        assert status in (200, 412), body
        assert elapsed < 5 * (BUDGET + 0.5)
        return status

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(one, range(40)))
    assert set(statuses) <= {200, 412} and len(statuses) == 40
    assert audit_count(app) == 40
