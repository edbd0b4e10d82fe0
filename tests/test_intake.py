"""Intake validation over real HTTP: a field that cannot be stored is a 400 naming it, and the audit goes on.

Each request here once reached the audit store and stopped it (on PostgreSQL the insert failed, the entry
went to the spool, and every later record queued behind it) or left an answer unaudited (a lone surrogate
cannot be encoded). Now each is refused at intake with an OperationOutcome whose ``expression`` names the
field; afterwards a normal call and its feedback are recorded, the spool is empty and ``/health`` is ok.
Run against SQLite and, when it is reachable, PostgreSQL (whose column sizes and text rules bite).
"""

from __future__ import annotations

import http.client
import json
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

import pytest
from builders import complete_prefetch
from sqlalchemy import text
from support import NOW, make_token

from cds import create_app
from cds.db import engine_for

SERVICE = "/cds-services/bone-health-patient-view"
FEEDBACK = SERVICE + "/feedback"
DEADLINE = 60.0  # seconds; the machine may be loaded


def hook_body(instance: str | None = None, user: str = "Practitioner/1") -> dict[str, Any]:
    """A man on anastrozole with no results: four cards (estradiol, vitamin D, DXA and calcium due)."""
    med = {"resourceType": "MedicationRequest", "id": "m1", "status": "active", "intent": "order",
           "subject": {"reference": "Patient/p1"},
           "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                                                     "code": "84857", "display": "anastrozole"}]}}
    return {"hook": "patient-view", "hookInstance": instance or str(uuid.uuid4()),
            "context": {"userId": user, "patientId": "p1"},
            "prefetch": complete_prefetch(
                patient={"resourceType": "Patient", "id": "p1", "gender": "male", "birthDate": "1960-01-01"},
                medications={"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": med}]})}


def overridden(card: str, **changes: Any) -> dict[str, Any]:
    item = {"card": card, "outcome": "overridden", "outcomeTimestamp": "2026-11-22T10:00:00Z",
            "overrideReason": {"reason": {"system": "https://bone-health-cds.example.org/override-reasons",
                                          "code": "patient-declined", "display": "Patient declined"},
                               "userComment": "discussed"}}
    item.update(changes)
    return item


class Service:
    """The app under werkzeug's threaded server, and its audit database."""

    def __init__(self, base: str, db_url: str):
        self.base = base
        self.engine = engine_for(db_url)  # the app's own engine, disposed after the test
        status, health = self.get("/health")
        assert status == 200, health
        self.quarantined = health["audit"].get("quarantined", 0)

    def post(self, path: str, body: Any) -> tuple[int, Any]:
        """POST JSON (``json.dumps``: a lone surrogate goes out as a ``\\ud800`` escape), with a fresh token
        for each try; retried on any connection error until the deadline."""
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        return self._send("POST", path, payload)

    def get(self, path: str, **claims: Any) -> tuple[int, Any]:
        return self._send("GET", path, None, claims)

    def _send(self, method: str, path: str, payload: bytes | None,
              claims: dict[str, Any] | None = None) -> tuple[int, Any]:
        end = time.monotonic() + DEADLINE
        while True:
            conn = http.client.HTTPConnection(urlsplit(self.base).netloc, timeout=DEADLINE)
            try:
                headers = {"Authorization": "Bearer " + make_token(self.base + path, claims=claims)}
                if payload is not None:
                    headers["Content-Type"] = "application/json"
                conn.request(method, path, body=payload, headers=headers)
                response = conn.getresponse()
                data = response.read()
                text_ = data.decode()
                assert "Traceback" not in text_ and 'File "' not in text_
                return response.status, json.loads(data) if data.strip() else None
            except (OSError, http.client.HTTPException):
                if time.monotonic() > end:
                    raise
                time.sleep(0.2)
            finally:
                conn.close()

    def count(self, sql: str, **params: Any) -> int:
        with self.engine.connect() as conn:
            return conn.execute(text(sql), params).scalar_one()

    def refused(self, path: str, body: Any, field: str) -> dict[str, Any]:
        status, outcome = self.post(path, body)
        assert status == 400, outcome
        assert outcome["resourceType"] == "OperationOutcome"
        issue = outcome["issue"][0]
        assert issue["expression"] == [field], issue
        assert issue["diagnostics"].startswith(field), issue
        return issue

    def still_audits(self) -> None:
        """A normal call and feedback on its card are recorded; nothing waits in the spool."""
        instance = str(uuid.uuid4())
        status, answer = self.post(SERVICE, hook_body(instance))
        assert status == 200 and len(answer["cards"]) == 4, answer
        card = answer["cards"][0]["uuid"]
        status, accepted = self.post(FEEDBACK, {"feedback": [overridden(card)]})
        assert status == 200 and accepted == {"accepted": 1}
        end = time.monotonic() + DEADLINE
        while True:
            status, health = self.get("/health")
            stored = (self.count("SELECT count(*) FROM audit_record WHERE hook_instance = :h", h=instance),
                      self.count("SELECT count(*) FROM audit_feedback WHERE card_uuid = :c", c=card))
            if status == 200 and health["status"] == "ok" and stored == (1, 1):
                break
            assert time.monotonic() < end, (health, stored)
            time.sleep(0.1)
        audit = health["audit"]
        assert (audit["database"], audit["spool"], audit["lost"]) == ("ok", 0, 0)
        # nothing was set aside as poison (the count covers the whole trail: compared with the start)
        assert audit.get("quarantined", 0) == self.quarantined


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def service(request, auth_config, live_server, tmp_path):
    if request.param == "sqlite":
        db_url = f"sqlite:///{tmp_path}/audit.sqlite3"
    else:
        db_url = request.getfixturevalue("pg_base_url")
    app = create_app({**auth_config, "DATABASE_URL": db_url, "NOW": NOW})
    served = Service(live_server(app), db_url)
    yield served
    app.extensions["cds.audit"].close()
    served.engine.dispose()


def test_a_hook_instance_padded_with_hyphens_is_refused(service):
    padded = "{" + uuid.uuid4().hex + "-" * 100 + "}"  # uuid.UUID accepts this
    service.refused(SERVICE, hook_body(padded), "hookInstance")
    service.refused(SERVICE, hook_body(uuid.uuid4().hex), "hookInstance")  # no hyphens: not canonical
    service.still_audits()


def test_a_service_id_over_128_characters_is_refused(service):
    long_id = "/cds-services/" + "x" * 129
    issue = service.refused(long_id, hook_body(), "service")
    assert "x" * 129 not in issue["diagnostics"]
    service.refused(long_id + "/feedback", {"feedback": [overridden(str(uuid.uuid4()))]}, "service")
    service.still_audits()


def test_a_lone_surrogate_in_the_user_id_is_refused_and_the_refusal_audited(service):
    refusals = "SELECT count(*) FROM audit_record WHERE outcome = '400'"
    before = service.count(refusals)
    issue = service.refused(SERVICE, hook_body(user="Practitioner/\ud800"), "context.userId")
    assert "surrogate" in issue["diagnostics"]
    assert service.count(refusals) == before + 1  # the 400 itself is on the record
    service.still_audits()


def test_a_lone_surrogate_deep_in_prefetch_is_refused(service):
    body = hook_body()
    body["prefetch"]["medications"]["entry"][0]["resource"]["note"] = [{"text": "dose \udfff"}]
    service.refused(SERVICE, body, "prefetch.medications.entry[0].resource.note[0].text")
    service.still_audits()


@pytest.mark.parametrize(("change", "field"), [
    ({"outcomeTimestamp": "2026-11-22T10:00:00" + "0" * 60 + "Z"}, "feedback[0].outcomeTimestamp"),
    ({"outcomeTimestamp": "yesterday"}, "feedback[0].outcomeTimestamp"),
    ({"outcomeTimestamp": "2026-13-22T10:00:00Z"}, "feedback[0].outcomeTimestamp"),
    ({"overrideReason": {"reason": {"code": {"$gt": ""}}}}, "feedback[0].overrideReason.reason.code"),
    ({"overrideReason": {"reason": {"code": "x" * 129}}}, "feedback[0].overrideReason.reason.code"),
    ({"overrideReason": {"reason": {"code": "x", "display": ["Patient declined"]}}},
     "feedback[0].overrideReason.reason.display"),
    ({"overrideReason": {"userComment": "no \ud800"}}, "feedback[0].overrideReason.userComment"),
    ({"overrideReason": {"userComment": "nul \x00 inside"}}, "feedback[0].overrideReason.userComment"),
    ({"overrideReason": {"userComment": "x" * 4001}}, "feedback[0].overrideReason.userComment"),
    ({"outcome": "accepted", "overrideReason": None, "acceptedSuggestions": [{"id": 7}]},
     "feedback[0].acceptedSuggestions[0].id"),
    ({"outcome": "ACCEPTED"}, "feedback[0].outcome"),
])
def test_a_feedback_field_that_cannot_be_stored_is_refused(service, change, field):
    service.refused(FEEDBACK, {"feedback": [overridden(str(uuid.uuid4()), **change)]}, field)
    service.still_audits()


def test_a_feedback_card_must_be_a_canonical_uuid(service):
    card = str(uuid.uuid4())
    good = overridden(card)
    service.refused(FEEDBACK, {"feedback": [good, overridden("{" + card + "}")]}, "feedback[1].card")
    assert service.count("SELECT count(*) FROM audit_feedback WHERE card_uuid = :c", c=card) == 0
    service.still_audits()


def test_more_than_100_feedback_items_are_refused_before_any_is_stored(service):
    card = str(uuid.uuid4())
    issue = service.refused(FEEDBACK, {"feedback": [overridden(card)] * 101}, "feedback")
    assert "100" in issue["diagnostics"]
    assert service.count("SELECT count(*) FROM audit_feedback WHERE card_uuid = :c", c=card) == 0
    service.still_audits()


def test_a_trusted_token_whose_jti_holds_a_lone_surrogate_is_a_bare_401(service):
    """The jti is hashed into the replay store: one that cannot be encoded is refused like any unusable
    jti, not answered 500."""
    assert service.get("/cds-services", jti=f"jti-{uuid.uuid4()}-\ud800") == (401, None)
    status, discovery = service.get("/cds-services", jti=f"jti-{uuid.uuid4()}")
    assert status == 200 and len(discovery["services"]) == 3
    service.still_audits()
