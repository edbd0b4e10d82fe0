"""Finding 8 of the hostile-input review: ``cds audit verify`` must catch tampering with every table the
auditor pages and statistics are built from, not only ``audit_record.content``.

Each kind of tampering (an edit, a deleted row, a forged row) is done by hand in SQL, on SQLite and on
PostgreSQL, to ``audit_card``, ``audit_feedback`` and the derived columns of ``audit_record``; verify must
then fail and name what is wrong. A cut tail, which no chain can show, is caught against a head kept
from an earlier ``verify`` (``--expect-head``).
"""

from __future__ import annotations

import json

import pytest
from audit_support import SERVICE, hook_body
from sqlalchemy import text

from cds.cli import main
from cds.review.verify import verify_all


@pytest.fixture
def trail(app):
    """Three calls (four cards) and three feedback items, from the same client."""
    client = app.test_client()
    cards = []
    for body in (hook_body("ann"), hook_body("bob", dxa_drop=True), hook_body("cat")):
        res = client.post(f"/cds-services/{SERVICE}", json=body)
        assert res.status_code == 200
        cards += res.get_json()["cards"]
    with_suggestion = next(c for c in cards if c.get("suggestions"))
    for card, outcome in ((cards[0], "overridden"), (with_suggestion, "accepted"), (cards[2], "overridden")):
        item = {"card": card["uuid"], "outcome": outcome, "outcomeTimestamp": "2026-11-22T08:00:00Z"}
        if outcome == "accepted":
            item["acceptedSuggestions"] = [{"id": card["suggestions"][0]["uuid"]}]
        else:
            reason = {"code": "declined", "display": "Declined"}
            item["overrideReason"] = {"reason": reason, "userComment": "c"}
        res = client.post(f"/cds-services/{SERVICE}/feedback", json={"feedback": [item]})
        assert res.status_code == 200, res.get_data(as_text=True)
    engine = app.extensions["cds.audit"].engine
    report = verify_all(engine)
    assert report.ok and (report.records, report.feedback) == (3, 3), report.problems
    assert len(cards) == 4
    return engine, cards


def _sql(engine, statement: str, **params) -> None:
    with engine.begin() as conn:
        assert conn.execute(text(statement), params).rowcount == 1


def _broken(engine, *words: str) -> str:
    report = verify_all(engine)
    assert not report.ok, "the tampering went unnoticed"
    found = " | ".join(report.problems)
    assert all(w in found for w in words), found
    return found


# -- audit_card ---------------------------------------------------------------------------------------------
def test_card_summary_edited(trail):
    engine, cards = trail
    _sql(engine, "UPDATE audit_card SET summary = 'All fine' WHERE uuid = :u", u=cards[0]["uuid"])
    _broken(engine, cards[0]["uuid"], "edited")


def test_card_indicator_edited(trail):
    engine, cards = trail
    _sql(engine, "UPDATE audit_card SET indicator = 'info' WHERE uuid = :u", u=cards[1]["uuid"])
    _broken(engine, cards[1]["uuid"], "edited")


def test_card_moved_to_another_record(trail):
    engine, cards = trail
    _sql(engine, "UPDATE audit_card SET record_seq = 3 WHERE uuid = :u", u=cards[0]["uuid"])
    _broken(engine, "record #1", cards[0]["uuid"], "missing")


def test_card_row_deleted(trail):
    engine, cards = trail
    _sql(engine, "DELETE FROM audit_card WHERE uuid = :u", u=cards[3]["uuid"])
    _broken(engine, cards[3]["uuid"], "missing")


def test_card_row_forged(trail):
    engine, _ = trail
    _sql(engine, "INSERT INTO audit_card (uuid, record_seq, rule_id, indicator, summary) "
                 "VALUES ('forged-card', 2, 'vitamin-d-missing', 'critical', 'Forged')")
    _broken(engine, "forged-card", "not a card of this record")


def test_card_row_of_no_record_forged(trail, db_url):
    engine, _ = trail
    postgres = db_url.startswith("postgresql")
    if postgres:  # the foreign key refuses it; drop it as a tamperer would
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE audit_card DROP CONSTRAINT audit_card_record_seq_fkey"))
    try:
        _sql(engine, "INSERT INTO audit_card (uuid, record_seq, rule_id, indicator, summary) "
                     "VALUES ('orphan-card', 99, 'vitamin-d-missing', 'info', 'Orphan')")
        _broken(engine, "orphan-card", "#99")
    finally:  # the schema is shared by later tests: put the foreign key back as the migrations made it
        if postgres:
            with engine.begin() as conn:
                conn.execute(text("DELETE FROM audit_card WHERE uuid = 'orphan-card'"))
                conn.execute(text("ALTER TABLE audit_card ADD CONSTRAINT audit_card_record_seq_fkey "
                                  "FOREIGN KEY (record_seq) REFERENCES audit_record (seq)"))


# -- audit_record's derived columns ----------------------------------------------------------------------
def test_record_time_edited(trail):
    engine, _ = trail
    _sql(engine, "UPDATE audit_record SET time = :t WHERE seq = 2", t="2020-01-01 00:00:00")
    _broken(engine, "record #2", "column time")


def test_record_service_edited(trail):
    engine, _ = trail
    _sql(engine, "UPDATE audit_record SET client_iss = 'https://other.example.org' WHERE seq = 1")
    _broken(engine, "record #1", "column client_iss")


# -- audit_feedback -------------------------------------------------------------------------------------
@pytest.mark.parametrize("column, value", [("outcome", "accepted"), ("comment", "changed"),
                                           ("override_code", "other"), ("card_uuid", "another-card"),
                                           ("known_card", False)])
def test_feedback_column_edited(trail, column, value):
    engine, _ = trail
    _sql(engine, f"UPDATE audit_feedback SET {column} = :v WHERE seq = 1", v=value)
    _broken(engine, "audit_feedback #1", f"column {column}")


@pytest.mark.parametrize("value", ["0" * 64, None], ids=["another patient", "none"])
def test_feedback_patient_key_edited(trail, value):
    """The patient key a feedback row carries (which the history read finds a patient's answers by) is that
    of the record holding its card: another, or none, is caught."""
    engine, _ = trail
    _sql(engine, "UPDATE audit_feedback SET patient_key = :v WHERE seq = 2", v=value)
    _broken(engine, "audit_feedback #2", "column patient_key")


def test_feedback_content_edited(trail):
    engine, _ = trail
    with engine.connect() as conn:
        stored = conn.execute(text("SELECT content FROM audit_feedback WHERE seq = 2")).scalar_one()
    content = json.loads(stored)
    content["item"]["outcome"] = "overridden"
    _sql(engine, "UPDATE audit_feedback SET content = :c, outcome = 'overridden' WHERE seq = 2",
         c=json.dumps(content, sort_keys=True, separators=(",", ":")))
    _broken(engine, "audit_feedback #2", "edited")


def test_feedback_row_deleted(trail):
    engine, _ = trail
    _sql(engine, "DELETE FROM audit_feedback WHERE seq = 2")
    _broken(engine, "audit_feedback #3", "missing")


def test_feedback_row_forged_outside_the_chain(trail, db_url):
    engine, cards = trail
    _sql(engine, "INSERT INTO audit_feedback (card_uuid, service, outcome, received, known_card) "
                 "VALUES (:u, :s, 'overridden', :r, :k)", u=cards[3]["uuid"], s=SERVICE,
         r="2026-11-22 08:00:00", k=True)
    _broken(engine, "outside the feedback chain")


def test_feedback_row_forged_into_the_chain(trail):
    engine, cards = trail
    content = json.dumps({"id": "f", "item": {"card": cards[3]["uuid"], "outcome": "accepted"}})
    _sql(engine, "INSERT INTO audit_feedback (card_uuid, service, outcome, received, known_card, seq, "
                 "content, prev_hash, hash) VALUES (:u, :s, 'accepted', :r, :k, 4, :c, :p, :h)",
         u=cards[3]["uuid"], s=SERVICE, r="2026-11-22 08:00:00", k=True, c=content, p="0" * 64, h="1" * 64)
    _broken(engine, "audit_feedback #4")


# -- the head, kept elsewhere ------------------------------------------------------------------------------
@pytest.fixture
def cli(app, monkeypatch, capsys):
    monkeypatch.setenv("CDS_DATABASE_URL", app.config["DATABASE_URL"])
    monkeypatch.setenv("CDS_AUDIT_PATIENT_KEY_SECRET", app.config["AUDIT_PATIENT_KEY_SECRET"])
    monkeypatch.setenv("CDS_AUDIT_SPOOL_DIR", app.config["AUDIT_SPOOL_DIR"])

    def run(*argv: str) -> tuple[int, str]:
        code = main(list(argv))
        return code, capsys.readouterr().out

    return run


def _head(out: str) -> str:
    return next(line.split()[1] for line in out.splitlines() if line.startswith("head "))


def test_verify_prints_the_head_and_checks_a_kept_one(trail, cli, app):
    engine, _ = trail
    code, out = cli("audit", "verify")
    assert code == 0 and "3 record(s) verified" in out and "3 feedback item(s)" in out
    kept = _head(out)
    assert kept.startswith("1-3.3.0.0:")  # chain 1 at 3; 3 feedback items, 0 quarantined, 0 checkpoints
    assert cli("audit", "verify", "--expect-head", kept)[0] == 0

    # more calls later: the kept head is still a point of the trail
    assert app.test_client().post(f"/cds-services/{SERVICE}", json=hook_body("dan")).status_code == 200
    code, out = cli("audit", "verify", "--expect-head", kept)
    assert code == 0 and "expected head matched" in out and _head(out).startswith("1-4.3.0.0:")

    code, out = cli("audit", "verify", "--expect-head", "1-3.3.0.0:" + "ab" * 32)
    assert code == 1 and "NOT matched" in out and "rewritten" in out
    code, out = cli("audit", "verify", "--expect-head", "not-a-head")
    assert code == 1 and "must look like" in out


def test_a_cut_tail_is_caught_by_the_kept_head(trail, cli):
    engine, _ = trail
    kept = _head(cli("audit", "verify")[1])
    _sql(engine, "DELETE FROM audit_feedback WHERE seq = 3")
    code, out = cli("audit", "verify")
    assert code == 0  # a cut tail cannot be seen from the chain alone ...
    code, out = cli("audit", "verify", "--expect-head", kept)
    assert code == 1 and "removed from the end" in out  # ... but against the head kept elsewhere it can
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_card WHERE record_seq = 3"))
        conn.execute(text("DELETE FROM audit_record WHERE seq = 3"))
    code, out = cli("audit", "verify", "--expect-head", kept)
    assert code == 1 and "2 records" in out


def test_verify_names_the_broken_table_on_the_command_line(trail, cli):
    engine, cards = trail
    _sql(engine, "UPDATE audit_card SET summary = 'x' WHERE uuid = :u", u=cards[0]["uuid"])
    code, out = cli("audit", "verify")
    assert code == 1 and "BROKEN at record #1" in out and "audit_card" in out and "head" not in out
