"""The audit store on a real database: migrations, what a record holds (and must not), concurrent appends."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import uuid

import pytest
from audit_support import BEARER, PG_URL, SECRET, SERVICE, hook_body
from sqlalchemy import create_engine, inspect, text

from cds.auth.links import verify as verify_link
from cds.db import engine_for, ensure_schema, metadata
from cds.ledger.spool import Spool
from cds.ledger.store import AuditStore
from cds.review import queries
from cds.rules.pack import load as load_pack


def _tables(engine) -> set[str]:
    return set(inspect(engine).get_table_names())


def test_migrations_from_empty_sqlite(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path}/empty.sqlite3")
    assert _tables(engine) == set()
    assert ensure_schema(engine) == "0004"
    assert {"audit_record", "audit_card", "audit_feedback", "seen_jti", "alembic_version"} <= _tables(engine)
    assert ensure_schema(engine) == "0004"  # idempotent
    cols = {c["name"]: c for c in inspect(engine).get_columns("seen_jti")}
    assert set(cols) == {"jti_key", "expires_at"}
    assert inspect(engine).get_pk_constraint("seen_jti")["constrained_columns"] == ["jti_key"]
    assert any(ix["column_names"] == ["expires_at"] for ix in inspect(engine).get_indexes("seen_jti"))
    engine.dispose()


@pytest.mark.postgres
def test_migrations_from_empty_postgres(pg_base_url):
    schema = f"audit_mig_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine = create_engine(f"{PG_URL}?options=-csearch_path%3D{schema}")
    try:
        assert _tables(engine) == set()
        assert ensure_schema(engine) == "0004"
        assert {"audit_record", "audit_card", "audit_feedback", "seen_jti"} <= _tables(engine)
        cols = {c["name"]: c for c in inspect(engine).get_columns("seen_jti")}
        assert str(cols["jti_key"]["type"]) == "VARCHAR(128)"
        assert "TIMESTAMP" in str(cols["expires_at"]["type"]) and cols["expires_at"]["type"].timezone
        assert cols["expires_at"]["nullable"] is False
        assert any(ix["column_names"] == ["expires_at"] for ix in inspect(engine).get_indexes("seen_jti"))
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def test_seen_jti_is_declared_on_shared_metadata():
    from cds.auth.jti_store import seen_jti

    assert metadata.tables["seen_jti"] is seen_jti
    assert [c.name for c in seen_jti.primary_key] == ["jti_key"]


def test_record_holds_the_call_but_no_patient_id_or_token(app):
    client = app.test_client()
    body = hook_body("secret-patient-42", dxa_drop=True)
    body["fhirServer"] = "https://ehr.example.org/fhir"
    body["fhirAuthorization"] = {
        "access_token": "ACCESS-TOKEN-XYZ",
        "token_type": "Bearer",
        "expires_in": 300,
        "scope": "patient/*.read",
        "subject": "cds",
    }
    res = client.post(f"/cds-services/{SERVICE}", json=body)
    assert res.status_code == 200
    cards = res.get_json()["cards"]
    assert {c["indicator"] for c in cards} == {"info", "warning"}
    for card in cards:
        link = card["links"][-1]
        assert link["label"] == "Why this card?" and link["type"] == "absolute"
        # the clinician's page: a link signed for this card (no auditor login), see test_clinician_why.py
        assert link["url"].startswith("http://localhost/why/")
        assert verify_link(SECRET.encode(), link["url"].rsplit("/", 1)[1]) == card["uuid"]

    found = client.get("/audit/api/records/1", headers=BEARER).get_json()
    raw = json.dumps(found)
    assert "secret-patient-42" not in raw and "ACCESS-TOKEN-XYZ" not in raw
    record = found["record"]
    assert record["hookInstance"] == body["hookInstance"] and record["outcome"] == "ok"
    assert len(record["patientKey"]) == 64
    assert (
        record["rulePack"]["version"] == load_pack().version and len(record["rulePack"]["contentHash"]) == 64
    )
    assert sorted(c["uuid"] for c in record["cards"]) == sorted(c["uuid"] for c in cards)
    fired = {f["rule"]: f for f in record["fired"]}
    assert fired["falling-bone-density"]["version"] == "1.0.0"
    assert fired["falling-bone-density"]["facts"]["change"]["t"] == "dxa_change"
    assert record["provenance"] == {
        "patient": "client",
        "estradiol": "empty",
        "vitaminD": "empty",
        "monitoring": "client",
        "dxa": "client",
        "medications": "client",
        "pendingOrders": "failed",  # not sent, no fhirServer: the call goes on, every card shown
    }
    assert record["suppression"]["pendingOrders"].startswith("not known")
    assert any(f["t"] == "dxa" for f in record["facts"])  # kept for replay
    assert record["latencyMs"] > 0


def test_error_outcomes_are_recorded(app):
    client = app.test_client()
    body = hook_body("p-err")
    del body["prefetch"]["medications"]  # must be fetched, and there is no FHIR server: 412
    assert client.post(f"/cds-services/{SERVICE}", json=body).status_code == 412
    body = hook_body("p-err")
    body["context"].pop("userId")
    assert client.post(f"/cds-services/{SERVICE}", json=body).status_code == 400
    listing = client.get("/audit/api/records", headers=BEARER).get_json()
    assert [r["outcome"] for r in listing["records"]] == ["400", "412"]


def _append_many(store: AuditStore, n: int, tag: str, errors: list[BaseException]) -> None:
    try:
        for i in range(n):
            store.append(
                {
                    "id": str(uuid.uuid4()),
                    "time": "2026-11-22T05:00:00+00:00",
                    "service": tag,
                    "rulePack": {"version": "x", "contentHash": "y"},
                    "outcome": "ok",
                    "n": i,
                }
            )
    except BaseException as exc:  # noqa: BLE001 - reported by the test
        errors.append(exc)


def test_concurrent_appends_keep_the_chains_straight(db_url, tmp_path):
    """Several writers at once, each a store with its own lock (like separate processes); on PostgreSQL
    each also has its own engine, and so a chain of its own (claimed by the database's lock); on SQLite
    they share one chain, kept straight by SQLite's write lock."""
    pack = load_pack()
    first = engine_for(db_url)
    ensure_schema(first)
    stores = [
        AuditStore(
            first if db_url.startswith("sqlite") else create_engine(db_url),
            pack,
            b"k" * 32,
            Spool(tmp_path / f"spool{i}"),
        )
        for i in range(4)
    ]
    errors: list[BaseException] = []
    threads = [
        threading.Thread(target=_append_many, args=(s, 15, f"w{i}", errors)) for i, s in enumerate(stores)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    checked, broken = queries.verify_chain(first)
    assert (checked, broken) == (60, None)
    for s in stores:
        s.close()
        if s.engine is not first:
            s.engine.dispose()


WRITER = """
import sys, uuid
from cds.ledger.spool import Spool
from cds.ledger.store import AuditStore
from cds.auth.links import verify as verify_link
from cds.db import engine_for
from cds.rules.pack import load
url, tag, n, spool = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
store = AuditStore(engine_for(url), load(), b"k" * 32, Spool(spool))
for i in range(n):
    store.append({"id": str(uuid.uuid4()), "time": "2026-11-22T05:00:00+00:00", "service": tag,
                  "rulePack": {"version": "x", "contentHash": "y"}, "outcome": "ok", "n": i})
store.close()
store.engine.dispose()
"""


def test_several_processes_append_to_one_chain(db_url, tmp_path):
    engine = engine_for(db_url)
    ensure_schema(engine)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, db_url, f"proc{i}", "20", str(tmp_path / f"s{i}")],
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(3)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    checked, broken = queries.verify_chain(engine)
    assert (checked, broken) == (60, None)
    services = [r.service for r in queries.iter_records(engine)]
    assert sorted(set(services)) == ["proc0", "proc1", "proc2"] and len(services) == 60


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_migrations_match_the_declared_tables(backend, tmp_path, request):
    """The tables declared in cds/ledger/schema.py are exactly what the migrations create."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    url = f"sqlite:///{tmp_path}/m.sqlite3" if backend == "sqlite" else request.getfixturevalue("pg_url")
    engine = create_engine(url)
    ensure_schema(engine)
    ours = {"audit_record", "audit_card", "audit_feedback", "audit_quarantine", "seen_jti"}
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn,
            opts={
                "include_object": lambda obj, name, kind, reflected, compare_to: (
                    kind != "table" or name in ours
                )
            },
        )
        diff = compare_metadata(context, metadata)
    engine.dispose()
    assert diff == []


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_migration_0002_chains_the_feedback_already_stored(backend, tmp_path, request):
    """Feedback rows written under revision 0001 are chained by 0002 and verify; new ones follow them."""
    import datetime as dt

    from alembic import command
    from alembic.config import Config

    from cds.db import MIGRATIONS
    from cds.review.verify import verify_all

    if backend == "sqlite":
        url = f"sqlite:///{tmp_path}/old.sqlite3"
    else:
        url = request.getfixturevalue("pg_url")
        admin = create_engine(url)
        with admin.begin() as conn:  # the session schema is at head: start it again at 0001
            conn.execute(text("DROP TABLE IF EXISTS audit_checkpoint, audit_quarantine, audit_feedback, "
                              "audit_card, audit_record, seen_jti, alembic_version CASCADE"))
        admin.dispose()
    engine = create_engine(url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0001")
        received = dt.datetime(2026, 11, 22, 8, 0, tzinfo=dt.UTC)
        for i, (code, comment) in enumerate([("declined", "later"), (None, None), ("other", None)]):
            conn.execute(text(
                "INSERT INTO audit_feedback (card_uuid, service, outcome, outcome_time, received, accepted, "
                "override_code, override_display, comment, known_card) "
                "VALUES (:c, 'bone-health-patient-view', :o, '2026-11-22T08:00:00Z', :r, :a, :code, :d, :m, "
                ":k)"),
                {"c": f"card-{i}", "o": "overridden" if code else "accepted", "r": received,
                 "a": "[]" if code else '["s-1"]', "code": code, "d": code and code.title(), "m": comment,
                 "k": i != 2})
    assert ensure_schema(engine) == "0004"
    report = verify_all(engine)
    assert report.ok and report.feedback == 3, report.problems
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT card_uuid, seq, comment, accepted, known_card FROM audit_feedback "
                                 "ORDER BY seq")).all()
    assert [(r[0], r[1], r[2], r[3], bool(r[4])) for r in rows] == [
        ("card-0", 1, "later", "[]", True),
        ("card-1", 2, None, '["s-1"]', True),
        ("card-2", 3, None, "[]", False),
    ]
    engine.dispose()


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_migration_0003_makes_the_records_already_stored_chain_1(backend, tmp_path, request):
    """Records chained by seq under revision 0002 become chain 1 (their hashes unchanged) and verify; the
    next record continues that chain, and seq is assigned by the database from there on."""
    import datetime as dt

    from alembic import command
    from alembic.config import Config

    from cds.db import MIGRATIONS
    from cds.ledger import hashing
    from cds.ledger.port import CallRecord
    from cds.ledger.record import build_content, cards_of, columns_of
    from cds.review.verify import verify_all

    schema = f"audit_mig3_{uuid.uuid4().hex[:8]}"  # a schema of its own: its chain locks are its own too
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path}/old.sqlite3"
    else:
        request.getfixturevalue("pg_base_url")
        admin = create_engine(PG_URL)
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        admin.dispose()
        url = f"{PG_URL}?options=-csearch_path%3D{schema}"
    engine = create_engine(url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    pack = load_pack()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0002")
        prev = hashing.GENESIS
        for seq in (1, 2, 3):  # as 0002's store wrote them: seq, prev_hash, hash, cards
            call = CallRecord(service=SERVICE, hook="patient-view", hook_instance=f"hi-{seq}",
                              patient_id=f"p-{seq}", client_iss=None, started=dt.datetime.now(dt.UTC),
                              latency_ms=1.0, outcome="ok", status=200)
            content = build_content(call, pack, SECRET.encode())
            content_json = hashing.canonical(content)
            digest = hashing.link_hash(prev, content_json)
            conn.execute(text(
                "INSERT INTO audit_record (seq, id, time, service, hook, hook_instance, client_iss, "
                "patient_key, pack_version, pack_hash, outcome, latency_ms, rules, content, prev_hash, hash) "
                "VALUES (:seq, :id, :time, :service, :hook, :hook_instance, :client_iss, :patient_key, "
                ":pack_version, :pack_hash, :outcome, :latency_ms, :rules, :content, :prev, :hash)"),
                {**columns_of(content), "seq": seq, "time": dt.datetime.fromisoformat(content["time"]),
                 "content": content_json, "prev": prev, "hash": digest})
            assert not cards_of(content)
            prev = digest
    assert ensure_schema(engine) == "0004"
    report = verify_all(engine)
    assert report.ok and report.records == 3 and report.chains == {1: (3, prev)}, report.problems
    store = AuditStore(engine, pack, SECRET.encode(), Spool(tmp_path / "spool"), checkpoint_seconds=3600)
    call = CallRecord(service=SERVICE, hook="patient-view", hook_instance="hi-4", patient_id="p-4",
                      client_iss=None, started=dt.datetime.now(dt.UTC), latency_ms=1.0, outcome="ok",
                      status=200)
    assert store.append(build_content(call, pack, SECRET.encode())) == 4
    store.close()  # writes a checkpoint of chain 1 at position 4
    report = verify_all(engine)
    assert report.ok and report.records == 4 and report.chains[1][0] == 4 and report.checkpoints == 1
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT seq, chain_id, chain_pos FROM audit_record ORDER BY seq")).all()
    assert [tuple(r) for r in rows] == [(1, 1, 1), (2, 1, 2), (3, 1, 3), (4, 1, 4)]
    engine.dispose()
    if backend == "postgres":
        admin = create_engine(PG_URL)
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def test_migration_0004_gives_the_feedback_already_stored_its_patient_key(app):
    """Feedback stored before revision 0004 gets the patient key of its card's record (feedback on a card no
    record holds keeps none); going down to 0003 and up again leaves a trail that verifies."""
    import datetime as dt

    from alembic import command
    from alembic.config import Config

    from cds.db import MIGRATIONS
    from cds.review.verify import verify_all

    client = app.test_client()
    body = hook_body("p-mig4")
    card = client.post(f"/cds-services/{SERVICE}", json=body).get_json()["cards"][0]
    item = {"card": card["uuid"], "outcome": "overridden", "outcomeTimestamp": "2026-11-22T08:00:00Z"}
    assert client.post(f"/cds-services/{SERVICE}/feedback", json={"feedback": [item]}).status_code == 200
    store = app.extensions["cds.audit"]
    stranger = str(uuid.uuid4())  # as another process stores it while the record may wait in its spool
    store.write({"kind": "feedback", "id": str(uuid.uuid4()), "service": SERVICE, "client": None,
                 "item": {**item, "card": stranger}, "received": dt.datetime.now(dt.UTC).isoformat()})
    with store.engine.begin() as conn:
        key = conn.execute(text("SELECT patient_key FROM audit_record WHERE hook_instance = :h"),
                           {"h": body["hookInstance"]}).scalar_one()
        stored = dict(conn.execute(text("SELECT card_uuid, patient_key FROM audit_feedback")).all())
        assert stored == {card["uuid"]: key, stranger: None}
        conn.execute(text("UPDATE audit_feedback SET patient_key = NULL"))  # as revision 0003 stored them
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with store.engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0003")
        command.upgrade(config, "head")
    with store.engine.connect() as conn:
        stored = dict(conn.execute(text("SELECT card_uuid, patient_key FROM audit_feedback")).all())
    assert stored == {card["uuid"]: key, stranger: None}
    report = verify_all(store.engine)
    assert report.ok and report.feedback == 2, report.problems
