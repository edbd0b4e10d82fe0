"""Feedback stored against the card's uuid: every item kept, repeats too; unknown cards stored, flagged
while records still wait in the spool (refused otherwise: tests/audit/test_audit_feedback_owner.py)."""

from __future__ import annotations

import fcntl
import uuid

from audit_support import BEARER, SERVICE, hook_body


def _card(client) -> dict:
    res = client.post(f"/cds-services/{SERVICE}", json=hook_body("p-fb"))
    return res.get_json()["cards"][0]


def _send(client, *items) -> None:
    res = client.post(f"/cds-services/{SERVICE}/feedback", json={"feedback": list(items)})
    assert res.status_code == 200 and res.get_json() == {"accepted": len(items)}


def test_repeat_feedback_is_kept_not_overwritten(app):
    client = app.test_client()
    card = _card(client)
    suggestion = card["suggestions"][0]["uuid"]
    _send(
        client,
        {
            "card": card["uuid"],
            "outcome": "overridden",
            "outcomeTimestamp": "2026-11-22T08:00:00Z",
            "overrideReason": {
                "reason": {"system": "x", "code": "patient-declined", "display": "Patient declined"},
                "userComment": "next visit",
            },
        },
    )
    _send(
        client,
        {
            "card": card["uuid"],
            "outcome": "accepted",
            "outcomeTimestamp": "2026-11-22T08:05:00Z",
            "acceptedSuggestions": [{"id": suggestion}],
        },
    )
    found = client.get(f"/audit/api/records/{card['uuid']}", headers=BEARER).get_json()
    feedback = found["feedback"]
    assert [f["outcome"] for f in feedback] == ["overridden", "accepted"]
    assert feedback[0]["overrideReason"] == {"code": "patient-declined", "display": "Patient declined"}
    assert (
        feedback[0]["comment"] == "next visit" and feedback[0]["outcomeTimestamp"] == "2026-11-22T08:00:00Z"
    )
    assert feedback[1]["acceptedSuggestions"] == [suggestion]
    assert all(f["knownCard"] for f in feedback)

    stats = client.get("/audit/api/rules/vitamin-d-missing", headers=BEARER).get_json()
    assert stats["cardsShown"] == 1 and stats["accepted"] == 1 and stats["overridden"] == 1
    assert stats["topOverrideReasons"] == [
        {"code": "patient-declined", "display": "Patient declined", "count": 1}
    ]
    assert stats["recentComments"] == ["next visit"]


def test_feedback_for_unknown_card_is_stored_and_flagged(app):
    """While entries wait in the spool the card's record may be among them: stored, flagged."""
    from cds.review.queries import feedback_for_card

    client = app.test_client()
    store = app.extensions["cds.audit"]
    stranger = str(uuid.uuid4())
    store.spool.folder.mkdir(parents=True, exist_ok=True)
    with open(store.spool.folder / ".drain.lock", "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process is draining: the spool stays non-empty
        store.spool.append({"kind": "feedback", "service": SERVICE, "client": None,
                            "received": "2026-11-22T08:00:00+00:00",
                            "item": {"card": str(uuid.uuid4()), "outcome": "accepted"}})
        _send(client, {"card": stranger, "outcome": "overridden", "outcomeTimestamp": "2026-11-22T08:00:00Z"})
        fcntl.flock(lock, fcntl.LOCK_UN)
    assert store.wait_drained(120)
    stored = feedback_for_card(store.engine, stranger)
    assert len(stored) == 1 and stored[0]["knownCard"] is False


def test_malformed_feedback_is_a_400_and_stores_nothing(app):
    from cds.review.queries import feedback_for_card

    client = app.test_client()
    card = _card(client)
    res = client.post(
        f"/cds-services/{SERVICE}/feedback",
        json={"feedback": [{"card": card["uuid"], "outcome": "maybe", "outcomeTimestamp": "x"}]},
    )
    assert res.status_code == 400 and res.get_json()["resourceType"] == "OperationOutcome"
    assert feedback_for_card(app.extensions["cds.audit"].engine, card["uuid"]) == []
