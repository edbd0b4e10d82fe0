"""Finding 15 of the hostile-input review: feedback is accepted only for a card this service issued, on that
service id, to that client, with suggestion ids of that card — over real HTTP, on SQLite and PostgreSQL.

A refused item is a 404/400 OperationOutcome naming it, and nothing of the call is stored. While the card
may still wait in a queue (entries spooled) or the database cannot be read, feedback is accepted and
checked when written: another client's or service's card then lands in the quarantine, not in the
feedback table; a card still unknown is stored and flagged.
"""

from __future__ import annotations

import copy
import fcntl
import json
import os
import uuid

import pytest
import requests
from audit_support import SERVICE, hook_body
from sqlalchemy import func, select
from support import PUBLIC_JWKS, TEST_ISS, make_token

from cds.ledger import quarantine
from cds.ledger.schema import audit_feedback
from cds.review.queries import feedback_for_card
from cds.review.verify import verify_all

OTHER_ISS = "https://other-ehr.example.org/cds-client"
ORDER_SIGN = "bone-health-order-sign"
WHEN = "2026-11-22T08:00:00Z"


def _two_clients(folder) -> str:
    trusted = folder / "two-clients.json"
    trusted.write_text(json.dumps({"clients": [{"iss": iss, "jwks": copy.deepcopy(PUBLIC_JWKS)}
                                               for iss in (TEST_ISS, OTHER_ISS)]}))
    return str(trusted)


@pytest.fixture
def served(db_url, make_app, tmp_path, live_server):
    """The service over real HTTP, trusting two clients (the test client and another EHR)."""
    app = make_app(db_url, TRUSTED_CLIENTS=_two_clients(tmp_path))
    return app, live_server(app)


def _post(base: str, path: str, body: dict, iss: str = TEST_ISS) -> requests.Response:
    url = f"{base}{path}"
    return requests.post(url, json=body, headers={"Authorization": f"Bearer {make_token(url, iss=iss)}"},
                         timeout=60)


def _card(base: str) -> dict:
    res = _post(base, f"/cds-services/{SERVICE}", hook_body("p-owner"))
    assert res.status_code == 200
    return next(c for c in res.json()["cards"] if c.get("suggestions"))


def _feedback(base: str, items: list[dict], *, service: str = SERVICE, iss: str = TEST_ISS):
    return _post(base, f"/cds-services/{service}/feedback", {"feedback": items}, iss=iss)


def _item(card: dict, **extra) -> dict:
    return {"card": card["uuid"], "outcome": "overridden", "outcomeTimestamp": WHEN, **extra}


def _refused(res: requests.Response, status: int, field: str) -> None:
    assert res.status_code == status, res.text
    body = res.json()
    assert body["resourceType"] == "OperationOutcome" and body["issue"][0]["expression"] == [field]


def _stored(app) -> int:
    with app.extensions["cds.audit"].engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(audit_feedback)).scalar_one()


def test_feedback_from_the_issuing_client_on_its_service_is_stored(served):
    app, base = served
    card = _card(base)
    accepted = {"card": card["uuid"], "outcome": "accepted", "outcomeTimestamp": "2026-11-22T08:00:00Z",
                "acceptedSuggestions": [{"id": card["suggestions"][0]["uuid"]}]}
    assert _feedback(base, [_item(card), accepted]).status_code == 200
    stored = feedback_for_card(app.extensions["cds.audit"].engine, card["uuid"])
    assert [f["outcome"] for f in stored] == ["overridden", "accepted"]
    assert all(f["knownCard"] for f in stored)


def test_feedback_on_another_service_is_refused(served):
    app, base = served
    card = _card(base)
    _refused(_feedback(base, [_item(card)], service=ORDER_SIGN), 404, "feedback[0].card")
    assert _stored(app) == 0


def test_feedback_for_a_card_never_issued_is_refused(served):
    app, base = served
    _card(base)
    stranger = {"card": str(uuid.uuid4()), "outcome": "overridden", "outcomeTimestamp": WHEN}
    _refused(_feedback(base, [stranger]), 404, "feedback[0].card")
    assert _stored(app) == 0


def test_made_up_suggestion_ids_are_refused(served):
    app, base = served
    card = _card(base)
    made_up = {"card": card["uuid"], "outcome": "accepted", "outcomeTimestamp": "2026-11-22T08:00:00Z",
               "acceptedSuggestions": [{"id": card["suggestions"][0]["uuid"]}, {"id": str(uuid.uuid4())}]}
    _refused(_feedback(base, [made_up]), 400, "feedback[0].acceptedSuggestions[1].id")
    assert _stored(app) == 0


def test_another_client_cannot_override_the_card(served):
    app, base = served
    card = _card(base)
    _refused(_feedback(base, [_item(card)], iss=OTHER_ISS), 404, "feedback[0].card")
    assert _stored(app) == 0


def test_one_refused_item_stores_nothing_of_the_call(served):
    app, base = served
    card = _card(base)
    bad = {"card": str(uuid.uuid4()), "outcome": "overridden", "outcomeTimestamp": "2026-11-22T08:00:00Z"}
    _refused(_feedback(base, [_item(card), bad]), 404, "feedback[1].card")
    assert _stored(app) == 0


def test_feedback_while_records_wait_in_the_spool_is_checked_when_written(served):
    """The card's own record may be queued: unknown cards are accepted and stored, flagged; a card the
    database holds is still checked at once."""
    app, base = served
    store = app.extensions["cds.audit"]
    card = _card(base)
    stranger = str(uuid.uuid4())
    store.spool.folder.mkdir(parents=True, exist_ok=True)
    with open(store.spool.folder / ".drain.lock", "a+b") as lock:
        # hold the spool's drain lock, as another process draining would: the spool stays non-empty
        fcntl.flock(lock, fcntl.LOCK_EX)
        store.spool.append({"kind": "feedback", "service": SERVICE, "client": TEST_ISS,
                            "item": _item(card, outcome="accepted"), "received": "2026-11-22T08:00:00+00:00"})
        res = _feedback(base, [{"card": stranger, "outcome": "overridden",
                                "outcomeTimestamp": "2026-11-22T08:00:00Z"}])
        assert res.status_code == 200, res.text
        _refused(_feedback(base, [_item(card)], iss=OTHER_ISS), 404, "feedback[0].card")
        fcntl.flock(lock, fcntl.LOCK_UN)
    assert store.wait_drained(120)
    unknown = feedback_for_card(store.engine, stranger)
    assert len(unknown) == 1 and unknown[0]["knownCard"] is False
    mine = feedback_for_card(store.engine, card["uuid"])
    assert [f["outcome"] for f in mine] == ["accepted"]  # the other client's override is not among them
    report = verify_all(store.engine)
    assert report.ok and report.feedback == 2 and report.quarantined == 0, report.problems


def test_feedback_while_the_database_is_down_is_kept(make_app, tmp_path, live_server):
    folder = tmp_path / "dbdir"
    app = make_app(f"sqlite:///{folder}/audit.sqlite3", TRUSTED_CLIENTS=_two_clients(tmp_path))
    base = live_server(app)
    store = app.extensions["cds.audit"]
    card = _card(base)
    store.engine.dispose()
    os.rename(folder, tmp_path / "away")
    try:
        assert _feedback(base, [_item(card)]).status_code == 200
        # another client's override cannot be checked now: accepted, and checked when written
        suggestion = card["suggestions"][0]["uuid"]
        accepted = _item(card, outcome="accepted", acceptedSuggestions=[{"id": suggestion}])
        assert _feedback(base, [accepted], iss=OTHER_ISS).status_code == 200
        assert store.spool.count() == 2
    finally:
        os.rename(tmp_path / "away", folder)
    assert store.wait_drained(120)
    stored = feedback_for_card(store.engine, card["uuid"])
    assert [(f["outcome"], f["knownCard"]) for f in stored] == [("overridden", True)]
    held = quarantine.entries(store.engine)
    assert len(held) == 1 and held[0]["entry"]["client"] == OTHER_ISS
    assert "FeedbackRefused" in held[0]["reason"]
    report = verify_all(store.engine)
    assert report.ok and report.feedback == 1 and report.quarantined == 1, report.problems
