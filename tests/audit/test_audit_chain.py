"""Tamper evidence: `cds audit verify` finds an edited, a deleted and a reordered record."""

from __future__ import annotations

import json

from audit_support import SERVICE, hook_body
from sqlalchemy import text

from cds.cli import main
from cds.ledger import hashing
from cds.review import queries


def test_canonical_json_is_stable():
    assert hashing.canonical({"b": 1, "a": [1, "é"]}) == '{"a":[1,"é"],"b":1}'
    assert hashing.link_hash(hashing.GENESIS, "{}") != hashing.link_hash(hashing.GENESIS, "{ }")


def _five_calls(app) -> None:
    client = app.test_client()
    for i in range(5):
        assert (
            client.post(f"/cds-services/{SERVICE}", json=hook_body(f"p{i}", dxa_drop=i % 2 == 0)).status_code
            == 200
        )


def _verify_cli(app, monkeypatch, capsys) -> tuple[int, str]:
    monkeypatch.setenv("CDS_DATABASE_URL", app.config["DATABASE_URL"])
    code = main(["audit", "verify"])
    return code, capsys.readouterr().out


def _sql(app, statement: str, **params) -> None:
    with app.extensions["cds.audit"].engine.begin() as conn:
        conn.execute(text(statement), params)


def test_intact_chain_verifies(app, monkeypatch, capsys):
    _five_calls(app)
    code, out = _verify_cli(app, monkeypatch, capsys)
    assert code == 0 and "5 record(s) verified" in out


def test_edited_record_is_found(app, monkeypatch, capsys):
    _five_calls(app)
    engine = app.extensions["cds.audit"].engine
    with engine.connect() as conn:
        content = json.loads(
            conn.execute(text("SELECT content FROM audit_record WHERE seq = 3")).scalar_one()
        )
    content["cards"] = []  # hide the cards that were shown
    _sql(app, "UPDATE audit_record SET content = :c WHERE seq = 3", c=hashing.canonical(content))
    code, out = _verify_cli(app, monkeypatch, capsys)
    assert code == 1 and "BROKEN at record #3" in out and "edited" in out


def test_edited_indexed_column_is_found(app, monkeypatch, capsys):
    _five_calls(app)
    _sql(app, "UPDATE audit_record SET outcome = '400' WHERE seq = 2")
    code, out = _verify_cli(app, monkeypatch, capsys)
    assert code == 1 and "#2" in out and "column outcome" in out


def test_deleted_record_is_found(app, monkeypatch, capsys):
    _five_calls(app)
    _sql(app, "DELETE FROM audit_card WHERE record_seq = 2")
    _sql(app, "DELETE FROM audit_record WHERE seq = 2")
    code, out = _verify_cli(app, monkeypatch, capsys)
    assert code == 1 and "BROKEN at record #3" in out and "missing" in out


def test_reordered_records_are_found(app, monkeypatch, capsys):
    _five_calls(app)
    # swap the contents (and hashes) of records 2 and 4, keeping seq numbers in place
    engine = app.extensions["cds.audit"].engine
    with engine.begin() as conn:
        rows = {r.seq: r for r in conn.execute(text("SELECT * FROM audit_record WHERE seq IN (2, 4)"))}
        conn.execute(text("UPDATE audit_record SET id = 'swapping' WHERE seq = 2"))  # ids are unique
        for a, b in ((4, 2), (2, 4)):
            conn.execute(
                text(
                    "UPDATE audit_record SET content = :c, hash = :h, prev_hash = :p, id = :i, "
                    "time = :t, service = :s, patient_key = :k, rules = :r WHERE seq = :seq"
                ),
                {
                    "c": rows[b].content,
                    "h": rows[b].hash,
                    "p": rows[b].prev_hash,
                    "i": rows[b].id,
                    "t": rows[b].time,
                    "s": rows[b].service,
                    "k": rows[b].patient_key,
                    "r": rows[b].rules,
                    "seq": a,
                },
            )
    checked, broken = queries.verify_chain(engine)
    assert broken is not None and broken.seq == 2 and "prev_hash" in broken.reason


def test_swapped_sequence_numbers_are_found(app):
    _five_calls(app)
    engine = app.extensions["cds.audit"].engine
    with engine.connect() as conn:
        found = conn.execute(text("SELECT * FROM audit_card WHERE record_seq IN (3, 4)"))
        cards = [dict(r._mapping) for r in found]
    _sql(app, "DELETE FROM audit_card WHERE record_seq IN (3, 4)")
    _sql(app, "UPDATE audit_record SET seq = 104 WHERE seq = 3")
    _sql(app, "UPDATE audit_record SET seq = 3 WHERE seq = 4")
    _sql(app, "UPDATE audit_record SET seq = 4 WHERE seq = 104")
    for card in cards:  # the cards follow their records, as a careful tamperer would move them
        _sql(app, "INSERT INTO audit_card (uuid, record_seq, rule_id, indicator, summary) "
                  "VALUES (:uuid, :s, :rule_id, :indicator, :summary)", **card, s=7 - card["record_seq"])
    # seq (the trail's order) is not hashed; along the chain it must grow: position 4 now has seq 3
    checked, broken = queries.verify_chain(engine)
    assert broken is not None and broken.seq == 3 and "seq out of order" in broken.reason
