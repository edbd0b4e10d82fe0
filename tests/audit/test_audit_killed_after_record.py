"""Finding 11 of the second hostile review: a process killed after its call's record was committed, but
before its started-call marker was removed, must not leave the call counted twice (the record, and an
``interrupted`` record from the marker).

The service runs as a real process (``tests/one_process_service.py``) that stops still right after the
third call's record is durable, before its marker goes: deterministic, not a race. The test kills it there
with SIGKILL, starts the service again on the same database and spool, and the trail holds exactly the
three calls, none ``interrupted``; ``/health`` counts no interrupted call and no marker is left.

Guarantee, by class: whatever the moment a process dies, a call has exactly one record (its started-call
marker names the id its record is written with, and the marker is recorded only when no record with that
id is in the spool or the database). The second test goes through the places the record may have reached
when the process died — nowhere, the spool, the database — with a real process that dies there.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests
from fhir_server_support import complete_prefetch, hook_body
from sqlalchemy import create_engine, select

from cds import create_app
from cds.ledger.port import CallRecord
from cds.ledger.record import build_content
from cds.ledger.schema import audit_record
from cds.review.verify import verify_all

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from service_process import service, sign  # noqa: E402

SERVICE = "bone-health-patient-view"
LAUNCHER = Path(__file__).resolve().parents[1] / "one_process_service.py"
DEADLINE = 120  # seconds: generous, for a loaded machine
CALLS = 3


def _post(base: str, timeout: float = DEADLINE) -> requests.Response:
    url = f"{base}/cds-services/{SERVICE}"
    return requests.post(url, json=hook_body(prefetch=complete_prefetch()), timeout=timeout,
                         headers={"Authorization": f"Bearer {sign(url)}"})


def _wait_for(what: str, probe):
    end = time.monotonic() + DEADLINE
    while True:
        found = probe()
        if found:
            return found
        if time.monotonic() > end:
            raise AssertionError(f"not within {DEADLINE} s: {what}")
        time.sleep(0.1)


def _rows(folder: Path) -> list[tuple[str, str]]:
    engine = create_engine(f"sqlite:///{folder}/audit.sqlite3")
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(audit_record.c.id, audit_record.c.outcome)
                                .order_by(audit_record.c.seq)).all()
        report = verify_all(engine)
        assert report.ok, report.problems
    finally:
        engine.dispose()
    return [tuple(r) for r in rows]


@pytest.mark.slow
def test_a_process_killed_between_its_record_and_its_marker_counts_the_call_once(tmp_path):
    folder = tmp_path / "service"
    paused = tmp_path / "paused"
    markers = folder / "spool" / "calls"
    env = {"PAUSE_AT": str(CALLS), "PAUSE_FILE": str(paused)}
    with service(workers=0, folder=folder, env=env, launcher=LAUNCHER) as proc:
        for _ in range(CALLS - 1):
            assert _post(proc.url).status_code == 200
        try:
            _post(proc.url, timeout=2)  # the third call's answer never comes: its process stops still
        except requests.RequestException:
            pass
        name = _wait_for("the third call's record committed", lambda: paused.exists() and paused.read_text())
        assert (markers / name).exists()  # the marker is still there: the moment of the finding
        assert len(_rows(folder)) == CALLS  # the record is committed
        os.kill(proc.proc.pid, signal.SIGKILL)
        proc.proc.wait(DEADLINE)

    with service(workers=0, folder=folder, launcher=LAUNCHER) as again:
        health = requests.get(f"{again.url}/health", timeout=DEADLINE).json()
        assert health["audit"]["interrupted"] == 0, health
        assert health["audit"]["lost"] == 0, health
        assert not list(markers.glob("*.call"))
        assert _post(again.url).status_code == 200
    rows = _rows(folder)
    assert len(rows) == CALLS + 1, rows  # each call once: none counted again as interrupted
    assert all(outcome == "ok" for _, outcome in rows), rows
    assert len({record_id for record_id, _ in rows}) == len(rows)


CHILD = """
import datetime as dt, json, os, sys
from cds.ledger.inflight import CallMarkers
from cds.ledger.spool import Spool
folder, where, record_id, entry = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.stdin.read())
markers = CallMarkers(os.path.join(folder, "calls"))
markers.start("bone-health-patient-view", dt.datetime.now(dt.UTC), record_id)
if where == "spool":
    Spool(folder).append(entry)
os._exit(0)  # dies with its marker in place
"""


@pytest.mark.parametrize("where", ["nowhere", "spool", "database"])
def test_a_dead_process_s_call_has_one_record_wherever_its_record_got_to(tmp_path, auth_config, where):
    """The class: a process dies after its call started, its record not made, spooled, or committed; the
    reaper leaves exactly one record for the call, ``interrupted`` only when none was made."""
    spool = tmp_path / "spool"
    app = create_app({**auth_config, "AUDIT_SPOOL_DIR": str(spool), "AUDIT_PATIENT_KEY_SECRET": "s" * 32})
    store = app.extensions["cds.audit"]
    try:
        record_id = str(uuid.uuid4())
        call = CallRecord(service=SERVICE, hook="patient-view", hook_instance=str(uuid.uuid4()),
                          patient_id="p1", client_iss=None, started=dt.datetime.now(dt.UTC), latency_ms=1.0,
                          outcome="ok", status=200, record_id=record_id)
        content = build_content(call, store.pack, store.secret, record_id=record_id)
        entry = {"kind": "call", "content": content}
        child = subprocess.run([sys.executable, "-c", CHILD, str(spool), where, record_id],
                               input=json.dumps(entry), text=True, timeout=DEADLINE, capture_output=True)
        assert child.returncode == 0, child.stderr
        assert len(list((spool / "calls").glob("*.call"))) == 1
        if where == "database":
            store.write(entry)  # committed, as the dead process had done
        store.reap_interrupted()
        assert store.wait_drained(DEADLINE)
        assert not list((spool / "calls").glob("*.call"))
        with store.engine.connect() as conn:
            rows = conn.execute(select(audit_record.c.outcome).where(audit_record.c.id == record_id)).all()
        assert [r.outcome for r in rows] == (["interrupted"] if where == "nowhere" else ["ok"])
    finally:
        store.close()
