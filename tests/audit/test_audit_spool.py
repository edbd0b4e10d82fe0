"""Never lost: the database goes away mid-run, cards still go out, records wait in the spool, then drain in
order with the chain intact.

SQLite: the database's folder is moved away (new connections cannot open the file) and moved back.
PostgreSQL, two ways: a private server of the test's own (initdb in a temporary folder) really stopped
with ``pg_ctl stop`` and started again, always restarted and removed in a ``finally``; and the shared
test server reached through a local TCP proxy that is closed and reopened, which cuts every open
connection and refuses new ones as a stopped server does, without stopping a server other work uses.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import pytest
from audit_support import SERVICE, hook_body

from cds.ledger.port import CallRecord
from cds.ledger.record import build_content
from cds.ledger.spool import Spool
from cds.review import queries
from cds.review.queries import feedback_for_card


def _call(client, i: int) -> dict:
    body = hook_body(f"patient-{i}", instance=f"00000000-0000-4000-8000-{i:012d}")
    res = client.post(f"/cds-services/{SERVICE}", json=body)
    assert res.status_code == 200, res.get_data(as_text=True)
    cards = res.get_json()["cards"]
    assert len(cards) == 1  # the card goes to the EHR whatever happens to the audit
    return cards[0]


def _check_all_recorded(store, n: int) -> None:
    assert store.wait_drained(120), f"spool still holds {store.spool.count()} entries"
    checked, broken = queries.verify_chain(store.engine)
    assert broken is None and checked == n
    rows = list(queries.iter_records(store.engine))
    assert [r.hook_instance for r in rows] == [f"00000000-0000-4000-8000-{i:012d}" for i in range(n)]
    assert store.spool.count() == 0


def _run_outage(app, stop, start) -> None:
    client = app.test_client()
    store = app.extensions["cds.audit"]
    for i in range(3):
        _call(client, i)
    assert store.spool.count() == 0
    stop()
    try:
        cards = [_call(client, i) for i in range(3, 6)]
        res = client.post(
            f"/cds-services/{SERVICE}/feedback",
            json={
                "feedback": [
                    {
                        "card": cards[0]["uuid"],
                        "outcome": "overridden",
                        "outcomeTimestamp": "2026-11-22T10:00:00Z",
                    }
                ]
            },
        )
        assert res.status_code == 200
        health = client.get("/health").get_json()
        assert health["status"] == "degraded"
        assert health["audit"]["database"] == "unavailable" and health["audit"]["spool"] == 4
    finally:
        start()
    for i in range(6, 8):  # arrive while the spool may still hold entries: they queue behind them
        _call(client, i)
    _check_all_recorded(store, 8)
    feedback = feedback_for_card(store.engine, cards[0]["uuid"])
    assert [(f["outcome"], f["knownCard"]) for f in feedback] == [("overridden", True)]
    health = client.get("/health").get_json()
    assert health["status"] == "ok" and health["audit"] == {"database": "ok", "spool": 0, "lost": 0,
                                                        "quarantined": 0, "interrupted": 0}


def test_sqlite_outage_spools_and_drains(make_app, tmp_path):
    folder = tmp_path / "dbdir"
    app = make_app(f"sqlite:///{folder}/audit.sqlite3")
    engine = app.extensions["cds.audit"].engine

    def stop():
        engine.dispose()
        os.rename(folder, tmp_path / "away")

    def start():
        os.rename(tmp_path / "away", folder)

    _run_outage(app, stop, start)


@pytest.mark.postgres
def test_postgres_outage_spools_and_drains(make_app, pg_url, pg_proxy):
    from sqlalchemy import make_url

    url = make_url(pg_url).set(host="127.0.0.1", port=pg_proxy.port).render_as_string(hide_password=False)
    app = make_app(url)
    _run_outage(app, pg_proxy.stop, pg_proxy.start)


@pytest.mark.postgres
def test_postgres_server_stopped_mid_run(make_app, private_pg):
    """A real PostgreSQL server (a private one) stopped with pg_ctl mid-run and started again."""
    app = make_app(private_pg.url)
    _run_outage(app, private_pg.stop, private_pg.start)


@pytest.mark.postgres
def test_service_starts_while_postgres_is_down(make_app, pg_url, pg_proxy):
    from sqlalchemy import make_url

    pg_proxy.stop()
    try:
        url = make_url(pg_url).set(host="127.0.0.1", port=pg_proxy.port).render_as_string(hide_password=False)
        app = make_app(url)
        client = app.test_client()
        _call(client, 0)
        assert app.extensions["cds.audit"].spool.count() == 1
    finally:
        pg_proxy.start()
    _call(client, 1)
    _check_all_recorded(app.extensions["cds.audit"], 2)


def test_spool_survives_a_restart_and_drains_at_start(make_app, tmp_path):
    """Entries spooled by a process that then died are drained by the next one, before its own records."""
    url = f"sqlite:///{tmp_path}/db/audit.sqlite3"
    first = make_app(url)
    _call(first.test_client(), 0)
    spool = Spool(first.config["AUDIT_SPOOL_DIR"])
    store = first.extensions["cds.audit"]
    # a record that reached only the spool (as if the database was down when the process stopped)
    body = hook_body("patient-1", instance="00000000-0000-4000-8000-000000000001")
    call = CallRecord(
        service=SERVICE,
        hook="patient-view",
        hook_instance=body["hookInstance"],
        patient_id="patient-1",
        client_iss=None,
        started=dt.datetime.now(dt.UTC),
        latency_ms=1.0,
        outcome="ok",
        status=200,
    )
    spool.append({"kind": "call", "content": build_content(call, store.pack, store.secret)})
    store.close()
    second = make_app(url)
    assert second.extensions["cds.audit"].wait_drained(120)
    _call(second.test_client(), 2)
    _check_all_recorded(second.extensions["cds.audit"], 3)


def test_spool_writes_whole_files_in_order(tmp_path):
    spool = Spool(tmp_path / "s")
    for i in range(5):
        spool.append({"kind": "call", "n": i})
    assert spool.count() == 5 and not list(Path(spool.folder).glob(".*.tmp"))
    seen: list[int] = []
    assert spool.drain(lambda e: seen.append(e["n"])) == 5
    assert seen == [0, 1, 2, 3, 4] and spool.count() == 0


def test_drain_stops_at_a_failure_and_keeps_the_entry(tmp_path):
    spool = Spool(tmp_path / "s")
    for i in range(3):
        spool.append({"n": i})
    seen: list[int] = []

    def write(entry):
        if entry["n"] == 1:
            raise RuntimeError("database went away")
        seen.append(entry["n"])

    with pytest.raises(RuntimeError):
        spool.drain(write)
    assert seen == [0] and spool.count() == 2
    assert json.loads(spool.files()[0].read_text())["n"] == 1


def test_database_and_spool_both_failing_still_answers(make_app, tmp_path, caplog):
    folder = tmp_path / "dbdir"
    spool_file = tmp_path / "not-a-folder"
    spool_file.write_text("a file where the spool folder should be")
    app = make_app(f"sqlite:///{folder}/audit.sqlite3", AUDIT_SPOOL_DIR=str(spool_file))
    store = app.extensions["cds.audit"]
    store.engine.dispose()
    os.rename(folder, tmp_path / "away")
    try:
        _call(app.test_client(), 0)
        assert store.health()["spool"] == 1  # held in memory
    finally:
        os.rename(tmp_path / "away", folder)
    _call(app.test_client(), 1)  # queues behind the held entry
    assert store.wait_drained(120)
    assert store.lost == 0
    checked, broken = queries.verify_chain(store.engine)
    assert broken is None and checked == 2
    rows = list(queries.iter_records(store.engine))
    assert [r.hook_instance for r in rows] == [f"00000000-0000-4000-8000-{i:012d}" for i in range(2)]


def test_past_the_memory_limit_an_entry_is_lost_and_says_so(make_app, tmp_path, caplog, monkeypatch):
    from cds.ledger import store as store_module

    monkeypatch.setattr(store_module, "HOLD_LIMIT", 0)
    folder = tmp_path / "dbdir"
    spool_file = tmp_path / "not-a-folder"
    spool_file.write_text("a file where the spool folder should be")
    app = make_app(f"sqlite:///{folder}/audit.sqlite3", AUDIT_SPOOL_DIR=str(spool_file))
    store = app.extensions["cds.audit"]
    store.engine.dispose()
    os.rename(folder, tmp_path / "away")
    try:
        _call(app.test_client(), 0)
    finally:
        os.rename(tmp_path / "away", folder)
    assert store.lost == 1
    assert any("LOST" in r.getMessage() for r in caplog.records)
