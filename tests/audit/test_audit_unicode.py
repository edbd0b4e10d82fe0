"""Finding 3 of the hostile-input review: a lone surrogate ("\\ud800", valid in JSON escapes, not in UTF-8)
anywhere in audit content must not cost the record: the chain hashes bytes that always encode, the content
stores exactly (escaped) and verifies, and the indexed columns keep U+FFFD in its place.

The entries are appended through the store (intake validation may refuse such text at the door; the audit
must hold up without it), on SQLite and PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
import json

from audit_support import SERVICE
from sqlalchemy import select

from cds.ledger import hashing
from cds.ledger.port import CallRecord
from cds.ledger.record import build_content
from cds.ledger.schema import audit_feedback, audit_record
from cds.review.verify import verify_all

LONE = "Practitioner/\ud800"


def test_the_chain_hash_of_a_lone_surrogate_encodes():
    text = hashing.canonical({"id": "x", "userId": LONE})
    assert text.encode("utf-8") and "\\ud800" in text
    assert json.loads(text)["userId"] == LONE  # the exact value comes back
    assert hashing.canonical(json.loads(text)) == text  # and writes the same text again
    assert len(hashing.link_hash(hashing.GENESIS, "raw \udfff left in")) == 64


def test_a_call_with_a_lone_surrogate_is_recorded_and_verifies(app):
    store = app.extensions["cds.audit"]
    call = CallRecord(service=SERVICE, hook="patient-view", hook_instance="hi-1", patient_id="p-1",
                      client_iss="https://ehr.example.org/\udc80", started=dt.datetime.now(dt.UTC),
                      latency_ms=1.0, outcome="ok", status=200, context={"userId": LONE})
    store.record_call(call)
    assert store.lost == 0 and store.spool.count() == 0
    with store.engine.connect() as conn:
        row = conn.execute(select(audit_record)).one()
    content = json.loads(row.content)
    assert content["context"]["userId"] == LONE and content["clientIss"].endswith("\udc80")
    assert row.client_iss == "https://ehr.example.org/\ufffd"
    report = verify_all(store.engine)
    assert report.ok and report.records == 1, report.problems


def test_feedback_with_a_lone_surrogate_is_stored_and_verifies(app):
    store = app.extensions["cds.audit"]
    call = CallRecord(service=SERVICE, hook="patient-view", hook_instance="hi-1", patient_id="p-1",
                      client_iss=None, started=dt.datetime.now(dt.UTC), latency_ms=1.0, outcome="ok",
                      status=200)
    store.append(build_content(call, store.pack, store.secret))
    store.submit({"kind": "feedback", "service": SERVICE, "client": None,
                  "item": {"card": "c-\ud800", "outcome": "overridden",
                           "overrideReason": {"reason": {"code": "x", "display": "d\udfff"},
                                              "userComment": "see \ud800 below\x00"}},
                  "received": dt.datetime.now(dt.UTC).isoformat()})
    assert store.spool.count() == 0 and store.health()["quarantined"] == 0
    with store.engine.connect() as conn:
        row = conn.execute(select(audit_feedback)).one()
    assert row.comment == "see \ufffd below\ufffd" and row.override_display == "d\ufffd"
    assert json.loads(row.content)["item"]["overrideReason"]["userComment"] == "see \ud800 below\x00"
    report = verify_all(store.engine)
    assert report.ok and report.feedback == 1, report.problems
