"""Finding 1 of the hostile-input review: one poison entry must never block the audit queue.

An entry the database refuses as data (a value overflowing its column on PostgreSQL, a NULL where the
column forbids it, a value that cannot be bound) is set aside in ``audit_quarantine`` — itself chained and
verified — and counted in ``/health`` and ``/metrics``; the entries behind it are written, whether it was
met on the request path, in the spool after an outage, or in a spool a stopped process left behind
(drained by ``cds audit drain`` in a process of its own, which exits 0 and reports the count).

The poison entries are appended through the store, as intake validation would stop them at the door.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from audit_support import BEARER, SERVICE, hook_body

from cds.ledger import quarantine
from cds.ledger.port import CallRecord
from cds.ledger.record import build_content
from cds.ledger.spool import Spool
from cds.review import queries
from cds.review.verify import verify_all

ROOT = Path(__file__).resolve().parents[2]


def _feedback(**item) -> dict:
    base = {"card": str(uuid.uuid4()), "outcome": "accepted", "outcomeTimestamp": "2026-11-22T08:00:00Z"}
    return {"kind": "feedback", "service": SERVICE, "client": None, "item": {**base, **item},
            "received": dt.datetime.now(dt.UTC).isoformat()}


def _poison(backend: str) -> list[dict]:
    """Entries the database refuses as data: on both backends a NULL outcome (NOT NULL) and an object
    where a string belongs (cannot be bound); on PostgreSQL also values longer than their columns."""
    out = [_feedback(outcome=None), _feedback(overrideReason={"reason": {"code": {"nested": "object"}}})]
    if backend == "postgres":
        out.append(_feedback(outcomeTimestamp="2026-11-22T08:00:00Z" + "-" * 100))
    return out


def _call_entry(store, i: int, **extra) -> dict:
    call = CallRecord(service=SERVICE, hook="patient-view", hook_instance=f"hi-{i}", patient_id=f"p-{i}",
                      client_iss=None, started=dt.datetime.now(dt.UTC), latency_ms=1.0, outcome="ok",
                      status=200)
    content = build_content(call, store.pack, store.secret)
    content.update(extra)
    return {"kind": "call", "content": content}


def _backend(db_url: str) -> str:
    return "postgres" if db_url.startswith("postgresql") else "sqlite"


def _assert_intact(store, records: int, quarantined: int) -> None:
    report = verify_all(store.engine)
    assert report.ok, report.problems
    assert (report.records, report.quarantined) == (records, quarantined)


def test_poison_on_the_request_path_is_set_aside_and_later_records_land(app, db_url):
    client = app.test_client()
    store = app.extensions["cds.audit"]
    poison = _poison(_backend(db_url))
    assert client.post(f"/cds-services/{SERVICE}", json=hook_body("p-1")).status_code == 200
    for entry in poison:
        store.submit(entry)
    if _backend(db_url) == "postgres":  # a call record whose hookInstance overflows String(64)
        store.submit(_call_entry(store, 99, hookInstance="0" * 8 + "-" * 100))
        poison.append("call")
    assert client.post(f"/cds-services/{SERVICE}", json=hook_body("p-2")).status_code == 200

    assert store.spool.count() == 0  # nothing queued behind the poison
    _assert_intact(store, records=2, quarantined=len(poison))
    held = quarantine.entries(store.engine)
    assert [e["kind"] for e in held] == ["feedback"] * 2 + (["feedback", "call"] if len(poison) > 2 else [])
    assert held[0]["entry"]["item"]["outcome"] is None and "IntegrityError" in held[0]["reason"]
    if len(poison) > 2:
        assert held[2]["entry"]["item"]["outcomeTimestamp"].endswith("-" * 100)
        assert "DataError" in held[2]["reason"]
    health = client.get("/health").get_json()
    assert health["status"] == "ok"
    assert health["audit"]["quarantined"] == len(poison) and health["audit"]["spool"] == 0
    metrics = client.get("/metrics").get_data(as_text=True)
    assert f"cds_audit_quarantined_entries {float(len(poison))}" in metrics
    listed = client.get("/audit/api/quarantine", headers=BEARER).get_json()
    assert listed["total"] == len(poison) and [e["seq"] for e in listed["entries"]] == list(
        range(1, len(poison) + 1)
    )
    assert listed["entries"][0]["entry"] == poison[0]


def test_poison_in_the_spool_after_an_outage_does_not_block_the_drain(app, db_url):
    """The database is back, the spool holds [call, poison..., call]: the drain quarantines the poison and
    writes both calls, in order."""
    store = app.extensions["cds.audit"]
    poison = _poison(_backend(db_url))
    spool = store.spool
    spool.append(_call_entry(store, 1))
    for entry in poison:
        spool.append(entry)
    spool.append(_call_entry(store, 2))
    assert store.wait_drained(120), f"spool still holds {spool.count()} entries"
    assert [r.hook_instance for r in queries.iter_records(store.engine)] == ["hi-1", "hi-2"]
    _assert_intact(store, records=2, quarantined=len(poison))
    # a call made afterwards goes straight in
    client = app.test_client()
    assert client.post(f"/cds-services/{SERVICE}", json=hook_body("p-3")).status_code == 200
    _assert_intact(store, records=3, quarantined=len(poison))


def test_cds_audit_drain_quarantines_a_spool_left_by_a_stopped_process(app, db_url, tmp_path):
    store = app.extensions["cds.audit"]
    poison = _poison(_backend(db_url))
    left = Spool(tmp_path / "left-spool")  # as a stopped process left it: poison first
    for entry in poison:
        left.append(entry)
    left.append(_call_entry(store, 1))
    left.append(_call_entry(store, 2))
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "CDS_DATABASE_URL": db_url,
        "CDS_AUDIT_SPOOL_DIR": str(left.folder),
        "CDS_AUDIT_PATIENT_KEY_SECRET": app.config["AUDIT_PATIENT_KEY_SECRET"],
        "CDS_LOG_LEVEL": "WARNING",
    }
    done = subprocess.run([sys.executable, "-m", "cds", "audit", "drain"], env=env, capture_output=True,
                          text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"moved {2 + len(poison)} spooled entries" in done.stdout
    assert f"0 left; {len(poison)} quarantined in all" in done.stdout
    assert left.count() == 0
    assert [r.hook_instance for r in queries.iter_records(store.engine)] == ["hi-1", "hi-2"]
    _assert_intact(store, records=2, quarantined=len(poison))


def test_an_entry_not_even_the_quarantine_takes_is_kept_as_a_poison_file(app, monkeypatch):
    store = app.extensions["cds.audit"]

    def refuse(*args, **kwargs):
        raise ValueError("quarantine refuses it too")

    monkeypatch.setattr(quarantine, "add", refuse)
    store.spool.append(_feedback(outcome=None))
    store.spool.append(_call_entry(store, 1))
    assert store.wait_drained(120)
    assert [r.hook_instance for r in queries.iter_records(store.engine)] == ["hi-1"]
    assert len(list(store.spool.folder.glob("*.poison"))) == 1
    assert store.health()["quarantined"] == 1


@pytest.mark.postgres
def test_a_database_outage_is_not_mistaken_for_poison(make_app, pg_url, pg_proxy):
    """Connection errors keep entries queued (spooled), never quarantined."""
    from sqlalchemy import make_url

    url = make_url(pg_url).set(host="127.0.0.1", port=pg_proxy.port).render_as_string(hide_password=False)
    app = make_app(url)
    client = app.test_client()
    store = app.extensions["cds.audit"]
    pg_proxy.stop()
    try:
        for i in range(3):
            assert client.post(f"/cds-services/{SERVICE}", json=hook_body(f"p-{i}")).status_code == 200
        assert store.spool.count() == 3
    finally:
        pg_proxy.start()
    assert store.wait_drained(120)
    _assert_intact(store, records=3, quarantined=0)
