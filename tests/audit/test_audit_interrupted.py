"""Finding 18 of the hostile-input review: a worker killed with SIGKILL in the middle of a call must not leave
the call uncounted ("lost: 0", no record).

``cds serve --prod`` (two server processes) calls a FHIR server that never answers, so the call hangs in
a worker; the test finds that worker by its started-call marker and kills it with SIGKILL. The surviving
worker then counts the call in ``/health`` (``interrupted``) and ``/metrics``, and the trail holds a
record with outcome ``interrupted`` whose chain verifies.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import requests
from fault_server import FaultServer
from sqlalchemy import create_engine, select

from cds.ledger.schema import audit_record
from cds.review.verify import verify_all

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from service_process import service, sign  # noqa: E402

SERVICE = "bone-health-patient-view"
DEADLINE = 120  # seconds: generous, for a loaded machine


def _body(fhir_url: str) -> dict:
    return {
        "hook": "patient-view",
        "hookInstance": str(uuid.uuid4()),
        "fhirServer": fhir_url,
        "fhirAuthorization": {"access_token": "tok", "token_type": "Bearer", "expires_in": 300,
                              "scope": "patient/*.read", "subject": "cds"},
        "context": {"userId": "Practitioner/dr-1", "patientId": "pat-killed"},
    }


def _post(base: str, fhir_url: str) -> requests.Response:
    url = f"{base}/cds-services/{SERVICE}"
    return requests.post(url, json=_body(fhir_url), headers={"Authorization": f"Bearer {sign(url)}"},
                         timeout=DEADLINE)


def _wait_for(what: str, probe, *, seen=None):
    """``probe()`` once it answers; past the deadline an AssertionError with what ``seen()`` tells."""
    end = time.monotonic() + DEADLINE
    while True:
        try:
            found = probe()
        except (requests.RequestException, OSError, ValueError, KeyError):
            found = None
        if found:
            return found
        if time.monotonic() > end:
            raise AssertionError(f"not within {DEADLINE} s: {what}" + (f"; {seen()}" if seen else ""))
        time.sleep(0.2)


@pytest.mark.slow
def test_a_worker_killed_mid_call_is_counted_and_recorded(tmp_path):
    fhir = FaultServer("hang")
    env = {
        "CDS_FHIR_SERVER_ALLOWLIST": fhir.url,
        "CDS_FHIR_CONNECT_TIMEOUT": "10",
        "CDS_FHIR_READ_TIMEOUT": "600",
        "CDS_FHIR_RESPONSE_SECONDS": "600",
        "CDS_FHIR_RETRIES": "0",
    }
    try:
        with service(workers=2, folder=tmp_path / "service", env=env) as proc:
            markers = proc.folder / "spool" / "calls"
            answers: list[object] = []

            def hanging_call() -> None:
                try:
                    answers.append(_post(proc.url, fhir.url).status_code)
                except requests.RequestException as exc:
                    answers.append(type(exc).__name__)

            caller = threading.Thread(target=hanging_call, daemon=True)
            caller.start()
            marker = _wait_for("a started-call marker", lambda: next(iter(markers.glob("*.call")), None))
            pid = int(marker.name.split(".", 1)[0])
            assert pid in proc.worker_pids()
            _wait_for("the FHIR server reached", lambda: fhir.connections > 0)
            os.kill(pid, signal.SIGKILL)
            caller.join(DEADLINE)
            assert answers and answers[0] != 200  # the caller got no cards: its worker died

            last: list[object] = []

            def counted() -> dict | None:
                health = requests.get(f"{proc.url}/health", timeout=30).json()
                last[:] = [health["audit"]]
                return health if health["audit"]["interrupted"] == 1 else None

            def seen() -> str:  # what to look at if it never counts: the last answer, markers, the log
                log = proc.folder / "service.log"
                tail = log.read_text(errors="replace")[-3000:] if log.exists() else "(no log)"
                names = sorted(p.name for p in markers.iterdir())
                return f"last /health audit part {last}, markers {names}, service log tail:\n{tail}"

            health = _wait_for("/health counting the interrupted call", counted, seen=seen)
            assert health["audit"]["lost"] == 0 and not list(markers.glob("*.call"))
            metrics = _wait_for("/metrics", lambda: requests.get(f"{proc.url}/metrics", timeout=30).text)
            assert "cds_audit_interrupted_calls 1.0" in metrics

            # a call that finishes leaves no marker and is not counted
            fhir.mode = "ok"
            assert _post(proc.url, fhir.url).status_code == 200
            assert not list(markers.glob("*.call"))
            after = requests.get(f"{proc.url}/health", timeout=30).json()["audit"]
            assert after["interrupted"] == 1

        engine = create_engine(f"sqlite:///{proc.folder}/audit.sqlite3")
        try:
            with engine.connect() as conn:
                rows = conn.execute(select(audit_record.c.service, audit_record.c.outcome)
                                    .order_by(audit_record.c.seq)).all()
            assert [tuple(r) for r in rows] == [(SERVICE, "interrupted"), (SERVICE, "ok")]
            report = verify_all(engine)
            assert report.ok and report.records == 2, report.problems
        finally:
            engine.dispose()
    finally:
        fhir.close()
