"""Record chains that do not serialise writers, checkpoints over their heads, and group commit.

On PostgreSQL every store (every process) appends to a chain of its own, claimed with a session advisory
lock and reused once its owner is gone; the checkpoints commit to every chain's head, so a chain cut back
or rewritten before a checkpoint is found by verify; concurrent calls in one process are written together
by the group-commit writer, each returning only once its record is committed, and a poison entry in a
batch does not cost its batch-mates.
"""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from audit_support import SERVICE
from sqlalchemy import create_engine, select, text

from cds.ledger import record_chains
from cds.ledger.port import CallRecord
from cds.ledger.record import build_content
from cds.ledger.spool import Spool
from cds.ledger.store import AuditStore
from cds.review.verify import verify_all, verify_lines


def _entry(store: AuditStore, i: int, **extra) -> dict:
    call = CallRecord(
        service=SERVICE,
        hook="patient-view",
        hook_instance=f"hi-{i}",
        patient_id=f"p-{i}",
        client_iss=None,
        started=dt.datetime.now(dt.UTC),
        latency_ms=1.0,
        outcome="ok",
        status=200,
    )
    content = build_content(call, store.pack, store.secret)
    content.update(extra)
    return {"kind": "call", "content": content}


@pytest.fixture
def stores(tmp_path):
    """More stores on the database of an app's store, each with an engine of its own (as separate processes
    have)."""
    made: list[tuple[AuditStore, object]] = []

    def make(app, **options) -> AuditStore:
        first = app.extensions["cds.audit"]
        engine = create_engine(str(first.engine.url.render_as_string(hide_password=False)))
        store = AuditStore(
            engine,
            first.pack,
            first.secret,
            Spool(tmp_path / f"spool-{len(made)}"),
            checkpoint_seconds=3600,
            **options,
        )
        made.append((store, engine))
        return store

    yield make
    for store, engine in made:
        store.close()
        engine.dispose()


def _run_threads(count: int, work) -> list[BaseException]:
    errors: list[BaseException] = []
    start = threading.Barrier(count)

    def run(i: int) -> None:
        start.wait()
        try:
            work(i)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a submit never returned"
    return errors


@pytest.mark.postgres
def test_each_store_appends_to_a_chain_of_its_own(pg_url, make_app, stores):
    app = make_app(pg_url)
    a, b = stores(app), stores(app)
    errors = _run_threads(
        8,
        lambda i: (a if i % 2 else b).submit(_entry(a, i)) or (a if i % 2 else b).submit(_entry(a, 100 + i)),
    )
    assert not errors
    assert {a.chains.chain_id, b.chains.chain_id} == {1, 2}
    report = verify_all(app.extensions["cds.audit"].engine)
    assert report.ok, report.problems
    assert report.records == 16 and sorted(p for p, _ in report.chains.values()) == [8, 8]
    assert report.head.startswith("1-8+2-8.0.0.0:")
    with a.engine.connect() as conn:  # seq is the trail's one order, and grows along each chain
        rows = conn.execute(text("SELECT seq, chain_id, chain_pos FROM audit_record ORDER BY seq")).all()
    assert [r.seq for r in rows] == list(range(1, 17))
    for number in (1, 2):
        along = [r.seq for r in sorted((r for r in rows if r.chain_id == number), key=lambda r: r.chain_pos)]
        assert along == sorted(along)


@pytest.mark.postgres
def test_a_chain_whose_owner_stopped_is_taken_over_where_it_ended(pg_url, make_app, stores):
    app = make_app(pg_url)
    a = stores(app)
    for i in range(3):
        a.submit(_entry(a, i))
    assert a.chains.chain_id == 1
    a.close()  # its connection, and with it the chain's lock, is gone
    b = stores(app)
    b.submit(_entry(b, 9))
    assert b.chains.chain_id == 1
    report = verify_all(app.extensions["cds.audit"].engine)
    assert report.ok and report.chains[1][0] == 4 and report.checkpoints == 1, report.problems


@pytest.mark.postgres
def test_one_chain_for_every_process_when_own_chains_is_off(pg_url, make_app, stores):
    app = make_app(pg_url)
    a, b = (
        stores(app, own_chains=False, group_commit=False),
        stores(app, own_chains=False, group_commit=False),
    )
    assert not _run_threads(6, lambda i: (a if i % 2 else b).submit(_entry(a, i)))
    report = verify_all(app.extensions["cds.audit"].engine)
    assert report.ok and report.chains.keys() == {1} and report.records == 6, report.problems


def test_checkpoints_commit_to_the_heads_and_catch_a_cut_chain(app):
    store = app.extensions["cds.audit"]
    for i in range(4):
        store.submit(_entry(store, i))
    assert store.maybe_checkpoint(now=True) == 1
    assert store.maybe_checkpoint(now=True) is None  # no head moved: no new checkpoint
    report = verify_all(store.engine)
    assert report.ok and report.checkpoints == 1, report.problems
    with store.engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_card WHERE record_seq = 4"))
        conn.execute(text("DELETE FROM audit_record WHERE seq = 4"))
    code, lines = verify_lines(store.engine)
    assert code == 1 and "audit_checkpoint #1" in lines[0] and "removed from the end" in lines[0], lines


def test_a_rewritten_checkpointed_record_and_an_edited_checkpoint_are_found(app):
    store = app.extensions["cds.audit"]
    for i in range(2):
        store.submit(_entry(store, i))
    store.maybe_checkpoint(now=True)
    with store.engine.begin() as conn:  # the last record replaced by another, correctly linked
        prev = conn.execute(text("SELECT prev_hash FROM audit_record WHERE seq = 2")).scalar_one()
        conn.execute(text("DELETE FROM audit_card WHERE record_seq = 2"))
        conn.execute(text("DELETE FROM audit_record WHERE seq = 2"))
    forged = _entry(store, 7)["content"]
    with store.engine.begin() as conn:
        seqs, _ = record_chains.insert_links(
            conn, store.chains.chain_id or 1, (1, prev),
            [(forged, record_chains.hashing.canonical(forged))], False
        )
    report = verify_all(store.engine)
    assert not report.ok and any("another hash" in p for p in report.problems), report.problems
    with store.engine.begin() as conn:
        conn.execute(
            text("UPDATE audit_checkpoint SET content = replace(content, :a, :b)"),
            {"a": '"pos":2', "b": '"pos":1'},
        )
    report = verify_all(store.engine)
    assert any("audit_checkpoint #1" in p and "edited" in p for p in report.problems), report.problems


def test_concurrent_calls_are_committed_together_and_each_waits_for_its_own(app):
    store = app.extensions["cds.audit"]
    assert store.writer is not None

    def call(i: int) -> None:
        entry = _entry(store, i)
        store.submit(entry)
        with store.engine.connect() as conn:  # committed by the time submit returned
            assert (
                conn.execute(
                    text("SELECT COUNT(*) FROM audit_record WHERE id = :i"), {"i": entry["content"]["id"]}
                ).scalar_one()
                == 1
            )

    assert not _run_threads(24, call)
    report = verify_all(store.engine)
    assert report.ok and report.records == 24, report.problems
    assert store.writer.entries == 24 and store.writer.batches <= 24


def test_a_poison_entry_in_a_batch_does_not_fail_its_batch_mates(app, db_url):
    store = app.extensions["cds.audit"]
    gate = threading.Event()
    real = store.write_batch
    batches: list[tuple[int, bool]] = []  # (size, holds the poison entry)

    def write_batch(entries):  # hold the first batch until every other call has queued behind it
        batches.append((len(entries), any(e["content"]["outcome"] is None for e in entries)))
        gate.wait(timeout=60)
        return real(entries)

    store.write_batch = write_batch
    poison_at = 5

    def call(i: int) -> None:
        extra = {"outcome": None} if i == poison_at else {}  # NOT NULL: refused as data on both backends
        store.submit(_entry(store, i, **extra))

    def wait_until(done) -> None:
        deadline = dt.datetime.now() + dt.timedelta(seconds=60)
        while not done() and dt.datetime.now() < deadline:
            threading.Event().wait(0.02)

    # entry 0 alone first: the writer takes it as its first batch and is held at the gate; the other 11
    # (the poison among them) then queue together and are written as one batch when the gate opens
    first = threading.Thread(target=call, args=(0,))
    first.start()
    wait_until(lambda: len(batches) == 1)
    threads = threading.Thread(target=lambda: _run_threads(11, lambda i: call(i + 1)))
    threads.start()
    wait_until(lambda: len(store.writer._queue) >= 11)
    gate.set()
    first.join(timeout=120)
    threads.join(timeout=120)
    assert any(n > 1 and poisoned for n, poisoned in batches), batches  # the poison came with batch-mates
    report = verify_all(store.engine)
    assert report.ok and (report.records, report.quarantined) == (11, 1), report.problems
    assert store.spool.count() == 0 and store.lost == 0


def _with_cards(store: AuditStore, i: int, cards: int, **extra) -> tuple[dict, str]:
    content = _entry(store, i, **extra)["content"]
    made = [
        {"uuid": f"card-{i}-{n}", "indicator": "warning", "summary": f'R\u00e9sum\u00e9 "{i}.{n}" \\ \ud800'}
        for n in range(cards)
    ]
    content.update(cards=made, cardRules={c["uuid"]: f"rule-{n}" for n, c in enumerate(made)})
    return content, record_chains.hashing.canonical(content)


def _stored(engine) -> tuple[list[dict], list[dict]]:
    """Every record and card (its record by chain position), as comparable values."""
    record, card = record_chains.audit_record, record_chains.audit_card
    with engine.connect() as conn:
        records = [dict(r._mapping) for r in conn.execute(select(record).order_by(record.c.seq))]
        cards = conn.execute(
            select(card.c.uuid, card.c.rule_id, card.c.indicator, card.c.summary, record.c.chain_id,
                   record.c.chain_pos)
            .join(record, record.c.seq == card.c.record_seq)
            .order_by(card.c.uuid)
        ).all()
    for row in records:
        row["time"] = record_chains._utc(row["time"])
    return records, [dict(c._mapping) for c in cards]


@pytest.mark.postgres
def test_postgresql_and_sqlite_store_the_same_links(pg_url, make_app, tmp_path):
    """PostgreSQL writes a batch in one statement, SQLite with one per table: the same rows either way."""
    apps = {"postgres": make_app(pg_url), "sqlite": make_app(f"sqlite:///{tmp_path}/db/links.sqlite3")}
    store = apps["sqlite"].extensions["cds.audit"]
    batches = [
        [_with_cards(store, 0, 2), _with_cards(store, 1, 0, latencyMs=None), _with_cards(store, 2, 3)],
        [_with_cards(store, 3, 1, hook=None, clientIss="https://ehr.example/\U0001f600")],
        [_with_cards(store, 4 + i, i % 2) for i in range(5)],
    ]
    stored = {}
    for name, app in apps.items():
        engine = app.extensions["cds.audit"].engine
        head, returned = (0, record_chains.hashing.GENESIS), []
        for n, batch in enumerate(batches):
            if name == "postgres" and n == 2:  # another writer took seqs meanwhile: this batch's start at 9
                with engine.begin() as conn:
                    conn.execute(text("SELECT nextval('audit_record_seq_seq') FROM generate_series(1, 4)"))
            with engine.begin() as conn:
                seqs, head = record_chains.insert_links(conn, 3, head, batch, False)
            returned += seqs
        records, cards = _stored(engine)
        assert [r["seq"] for r in records] == returned == sorted(returned)  # seq grows with chain_pos
        assert [r["chain_pos"] for r in records] == list(range(1, 10)) and head == (9, records[-1]["hash"])
        assert returned[-5:] == list(range(9, 14) if name == "postgres" else range(5, 10))
        assert len(cards) == 8
        report = verify_all(engine)
        assert report.ok and report.chains == {3: head}, report.problems
        stored[name] = ([{k: v for k, v in r.items() if k != "seq"} for r in records], cards)
    assert stored["postgres"] == stored["sqlite"]



@pytest.mark.postgres
def test_the_batch_statement_is_planned_once_per_connection(pg_url, make_app, stores):
    """Its plan does not depend on the batch, so PostgreSQL keeps one generic plan for it (after psycopg
    prepared it) instead of planning each batch again."""
    store = stores(make_app(pg_url))
    for i in range(20):  # psycopg prepares it at its 5th run; PostgreSQL then tries 5 custom plans first
        store.submit(_entry(store, i))
    conn = store.chains._conn
    with conn.begin():
        plans = conn.execute(
            text("SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE statement LIKE :s"),
            {"s": "%INSERT INTO audit_card%"},
        ).one()
    assert plans.generic_plans > plans.custom_plans, plans
