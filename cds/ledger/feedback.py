"""Feedback tied to its card: which cards a client may give feedback on, and the chained feedback rows.

A feedback item is accepted only for a card this service issued on the same service id to the same
client (the ``iss`` of the client's token, ``None`` for calls made without one), and its
``acceptedSuggestions`` must be suggestions of that card. The card's service and client are those of the
audit record holding it (``audit_record.service`` and ``client_iss``, checked against the chained
content by ``verify``); its suggestions are read from that record's content.

Each stored item is one link of the feedback chain: ``content`` is the canonical JSON of the item as
received plus the service, client, time received and whether the card was known; every other column is
derived from it (``columns``), so ``verify`` can recompute them.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import Connection

from cds.errors import NotFound, RequestError
from cds.ledger.append import FeedbackRefused, storable
from cds.ledger.schema import audit_card, audit_feedback, audit_record


@dataclass(frozen=True)
class IssuedCard:
    uuid: str
    service: str
    client_iss: str | None
    suggestions: frozenset[str]
    record_id: str | None = None  # the key of the audit record holding the card
    hook_instance: str | None = None  # of the call that issued it
    patient_key: str | None = None  # of the audit record holding the card


def issued_cards(conn: Connection, uuids: list[str]) -> dict[str, IssuedCard]:
    """The audited cards among ``uuids``, with the service and client they were issued on."""
    found: dict[str, IssuedCard] = {}
    # a value no column can hold (a lone surrogate, NUL) names no stored card
    wanted = sorted({u for u in uuids if isinstance(u, str) and storable(u) == u})
    for start in range(0, len(wanted), 500):
        rows = conn.execute(
            select(audit_card.c.uuid, audit_record.c.service, audit_record.c.client_iss,
                   audit_record.c.content, audit_record.c.id, audit_record.c.hook_instance,
                   audit_record.c.patient_key)
            .join(audit_record, audit_record.c.seq == audit_card.c.record_seq)
            .where(audit_card.c.uuid.in_(wanted[start : start + 500]))
        ).all()
        for row in rows:
            cards = json.loads(row.content).get("cards", [])
            card: dict[str, Any] = next((c for c in cards if c.get("uuid") == row.uuid), {})
            suggestions = frozenset(
                s["uuid"] for s in card.get("suggestions") or [] if isinstance(s, dict) and "uuid" in s
            )
            found[row.uuid] = IssuedCard(row.uuid, row.service, row.client_iss, suggestions, row.id,
                                         row.hook_instance, row.patient_key)
    return found


def problem(item: dict[str, Any], where: str, card: IssuedCard | None, service: str,
            client_iss: str | None) -> tuple[str, str, int] | None:
    """Why ``item`` is refused for ``card`` (message, field, HTTP status), or None when it is accepted;
    ``card`` None means no audited card has its uuid."""
    if card is None or card.service != service or card.client_iss != client_iss:
        # one answer for "no such card" and "someone else's card": nothing learned about other clients
        return (f"{where}.card: no card {item.get('card')!r} was issued on service {service!r} "
                "to this client",
                f"{where}.card", 404)
    for j, accepted in enumerate(item.get("acceptedSuggestions") or []):
        sid = accepted.get("id") if isinstance(accepted, dict) else None
        if sid not in card.suggestions:
            return (f"{where}.acceptedSuggestions[{j}].id: {sid!r} is not a suggestion of card {card.uuid!r}",
                    f"{where}.acceptedSuggestions[{j}].id", 400)
    return None


def refuse(found: tuple[str, str, int]) -> None:
    message, field, status = found
    raise (NotFound if status == 404 else RequestError)(message, field=field)


def check_on_write(conn: Connection, entry: dict[str, Any]) -> IssuedCard | None:
    """For an item written from the spool (checked when it was received only if the database could be
    read then): raise ``FeedbackRefused`` when it names another service's or client's card or foreign
    suggestions; return the card, or None when no stored record holds it (the item is stored, flagged: its
    record may still be in another host's spool)."""
    item = entry["item"]
    card = issued_cards(conn, [item.get("card")]).get(item.get("card"))
    if card is None:
        return None
    found = problem(item, "feedback", card, entry["service"], entry.get("client"))
    if found:
        raise FeedbackRefused(found[0])
    return card


def link_to_record(conn: Connection, content: dict[str, Any]) -> None:
    """Feedback stored before the record holding its card (which waited in a spool) gets that record's
    patient key, so that the patient's history (``history.read``) finds it by its index."""
    uuids = [c["uuid"] for c in content.get("cards") or [] if isinstance(c, dict) and "uuid" in c]
    if not uuids or not content.get("patientKey"):
        return
    conn.execute(update(audit_feedback)
                 .where(audit_feedback.c.patient_key.is_(None), audit_feedback.c.card_uuid.in_(uuids))
                 .values(patient_key=content["patientKey"]))


def content_of(entry: dict[str, Any], known: bool) -> dict[str, Any]:
    return {
        "id": entry.get("id") or str(uuid.uuid4()),
        "service": entry["service"],
        "clientIss": entry.get("client"),
        "received": entry["received"],
        "knownCard": known,
        "item": entry["item"],
    }


def _utc(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def columns(content: dict[str, Any]) -> dict[str, Any]:
    """The ``audit_feedback`` columns, all derived from the chained content."""
    item = content["item"]
    reason = item.get("overrideReason") or {}
    coding = reason.get("reason") or {}
    return {
        "card_uuid": storable(item["card"]),
        "service": storable(content["service"]),
        "client_iss": storable(content.get("clientIss")),
        "outcome": storable(item["outcome"]),
        "outcome_time": storable(item.get("outcomeTimestamp")),
        "received": _utc(dt.datetime.fromisoformat(content["received"])),
        "accepted": storable(json.dumps([a.get("id") for a in item.get("acceptedSuggestions") or []])),
        "override_code": storable(coding.get("code")),
        "override_display": storable(coding.get("display")),
        "comment": storable(reason.get("userComment")),
        "known_card": bool(content["knownCard"]),
    }
