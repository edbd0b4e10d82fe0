"""What the audit's write side knows of one patient's past cards and the answers to them: the read interface
the call layer's suppression (``cds.call.suppression``) asks through.

A ledger that can answer offers ``card_history(patient_id, since)`` (``CardHistory``): the cards of the
patient's answered calls since ``since``, shown or kept quiet, and the feedback given on them. The patient is
found by its keyed hash (``record.patient_key``), never by the raw id. Feedback counts only when it came from
the client the card was issued to, on the service it was issued on (the feedback endpoint refuses anything
else; a row stored unchecked while its record waited in the spool is held to the same test here), so
feedback can never silence a card of another patient or of another client.

``from_contents`` is pure: the ``AuditStore`` feeds it the records and feedback rows it reads from the
database, the ``MemoryLedger`` its call records (it keeps no feedback: only pending orders and the
encounter rule silence cards there).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import orjson
from sqlalchemy import select
from sqlalchemy.engine import Connection

from cds.ledger.port import CallRecord
from cds.ledger.schema import audit_card, audit_feedback, audit_record


@dataclass(frozen=True)
class PastCard:
    """A card of an earlier call: shown, or kept quiet (``shown`` False) with what silenced it."""

    uuid: str
    rule: str
    indicator: str
    time: dt.datetime
    record_id: str
    service: str
    client_iss: str | None
    hook: str | None
    user: str | None
    encounter: str | None
    shown: bool
    #: fingerprints of the facts it rested on, and of its content (``cds.call.suppression``)
    evidence: frozenset[str] = frozenset()
    content: str | None = None
    card: Mapping[str, Any] = field(default_factory=dict)
    #: for a quiet card: what silenced it (``{"kind": ..., ...}``)
    silenced_by: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class PastFeedback:
    """One feedback item on a past card, as received."""

    id: str
    card: str
    outcome: str
    received: dt.datetime
    reason_code: str | None = None
    reason_system: str | None = None
    accepted: tuple[str, ...] = ()


@dataclass(frozen=True)
class History:
    cards: tuple[PastCard, ...] = ()
    feedback: tuple[PastFeedback, ...] = ()


@runtime_checkable
class CardHistory(Protocol):
    """A ledger that can say what a patient was shown and how the clinician answered."""

    def card_history(self, patient_id: str, since: dt.datetime, *, recent: int | None = None) -> History:
        """The patient's cards since ``since``: of the latest ``recent`` answered calls (None:
        ``RECENT_CALLS``; 0: none) and of
        every call whose cards were answered, with that feedback."""


def _utc(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def cards_of(content: Mapping[str, Any]) -> list[PastCard]:
    """The cards of one record's content: those shown and those kept quiet."""
    if content.get("outcome") != "ok":
        return []
    when = _utc(dt.datetime.fromisoformat(content["time"]))
    context = content.get("context") or {}
    keys = (content.get("suppression") or {}).get("cards") or {}
    rules = content.get("cardRules") or {}
    common = {"time": when, "record_id": content["id"], "service": content["service"],
              "client_iss": content.get("clientIss"), "hook": content.get("hook"),
              "user": context.get("userId"), "encounter": context.get("encounterId")}
    found: list[PastCard] = []
    for card in content.get("cards") or []:
        key = keys.get(card.get("uuid")) or {}
        found.append(PastCard(uuid=card["uuid"], rule=rules.get(card["uuid"], ""),
                              indicator=card.get("indicator", ""), shown=True,
                              evidence=frozenset(key.get("evidence") or ()), content=key.get("content"),
                              card=card, **common))
    for quiet in (content.get("suppression") or {}).get("suppressed") or []:
        card = quiet["card"]
        found.append(PastCard(uuid=card["uuid"], rule=quiet["rule"], indicator=card.get("indicator", ""),
                              shown=False, evidence=frozenset(quiet.get("evidence") or ()),
                              content=quiet.get("content"), card=card, silenced_by=quiet.get("by"), **common))
    return found


def feedback_of(content: Mapping[str, Any]) -> PastFeedback:
    """One chained feedback row's content as a ``PastFeedback``."""
    item = content["item"]
    reason = (item.get("overrideReason") or {}).get("reason") or {}
    return PastFeedback(
        id=content["id"], card=str(item.get("card")), outcome=str(item.get("outcome")),
        received=_utc(dt.datetime.fromisoformat(content["received"])),
        reason_code=reason.get("code") if isinstance(reason.get("code"), str) else None,
        reason_system=reason.get("system") if isinstance(reason.get("system"), str) else None,
        accepted=tuple(str(a.get("id")) for a in item.get("acceptedSuggestions") or []
                       if isinstance(a, dict)),
    )


def from_contents(records: Iterable[Mapping[str, Any]], feedback: Iterable[Mapping[str, Any]],
                  patient_key: str, since: dt.datetime) -> History:
    """The history of the patient ``patient_key`` from record and feedback contents: records of that patient
    from ``since`` on, and feedback from the card's own client on the card's own service."""
    cards: list[PastCard] = []
    for content in records:
        if content.get("patientKey") != patient_key \
                or _utc(dt.datetime.fromisoformat(content["time"])) < since:
            continue
        cards.extend(cards_of(content))
    issued = {c.uuid: c for c in cards if c.shown}
    answers = []
    for content in feedback:
        past = feedback_of(content)
        card = issued.get(past.card)
        if card is None or content.get("service") != card.service \
                or content.get("clientIss") != card.client_iss:
            continue
        answers.append(past)
    return History(tuple(sorted(cards, key=lambda c: c.time)),
                   tuple(sorted(answers, key=lambda f: f.received)))


def content_of_call(call: CallRecord) -> dict[str, Any]:
    """The few fields of a record's content that ``cards_of`` reads, from a ``CallRecord`` kept in memory (its
    patient id, unhashed, stands as the key: the memory never leaves the process)."""
    evaluation = call.evaluation
    return {"id": call.record_id or "", "time": call.started.isoformat(), "service": call.service,
            "hook": call.hook, "clientIss": call.client_iss, "patientKey": call.patient_id,
            "outcome": call.outcome, "context": dict(call.context),
            "cards": list(evaluation.cards) if evaluation else [],
            "cardRules": dict(evaluation.card_rules) if evaluation else {},
            "suppression": call.suppression}


#: the patient's latest answered calls read for the encounter rule (an encounter's calls are the latest
#: ones, and a card kept quiet in the encounter carries the encounter on); older calls are read only when a
#: card of theirs was answered (feedback), so one call's read is bounded however many calls the patient had
RECENT_CALLS = 10


def _loads(text: str) -> Any:
    """A stored record's canonical JSON (orjson when it reads it, as it does every content this service
    writes; else the standard library)."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def read(conn: Connection, patient_key: str, since: dt.datetime, recent: int = RECENT_CALLS) -> History:
    """The history of ``patient_key`` from the audit tables: the cards of the patient's latest ``recent``
    answered calls since ``since``, and of every call of theirs since then whose cards were answered, with
    that feedback."""
    # by the patient's key alone, so that the database reads the patient's rows by their index (a filter on
    # the outcome or the time lets a planner scan every answered call); those are filtered here. The answered
    # cards are found from the patient's feedback rows (their own patient key, indexed): as many as the
    # patient's answers, however many calls the patient had
    mine = (audit_record.c.patient_key == patient_key,)
    answered = (select(audit_card.c.record_seq)
                .join(audit_feedback, audit_feedback.c.card_uuid == audit_card.c.uuid)
                .where(audit_feedback.c.patient_key == patient_key, audit_feedback.c.content.is_not(None)))
    seqs = {row[0] for row in conn.execute(answered)}
    if recent > 0:
        latest = select(audit_record.c.seq).where(*mine).order_by(audit_record.c.seq.desc()).limit(recent)
        seqs |= {row[0] for row in conn.execute(latest)}
    ordered = sorted(seqs)
    records: list[dict[str, Any]] = []
    for start in range(0, len(ordered), 500):
        records += [_loads(row.content) for row in conn.execute(
            select(audit_record.c.content).where(audit_record.c.seq.in_(ordered[start: start + 500]))
            .order_by(audit_record.c.seq))]
    uuids = [c["uuid"] for r in records for c in r.get("cards") or []]
    feedback: list[dict[str, Any]] = []
    for start in range(0, len(uuids), 500):
        feedback += [json.loads(row.content) for row in conn.execute(
            select(audit_feedback.c.content)
            .join(audit_card, audit_card.c.uuid == audit_feedback.c.card_uuid)
            .where(audit_feedback.c.card_uuid.in_(uuids[start : start + 500]),
                   audit_feedback.c.content.is_not(None))
            .order_by(audit_feedback.c.seq))]
    return from_contents(records, feedback, patient_key, since)
