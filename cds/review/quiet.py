"""The quiet cards of the audit trail: what silenced each, and per rule how cards fared over a period.

A call's record keeps its quiet cards under ``suppression.suppressed`` (``cds.call.suppression``), each with
what silenced it (``by``) and when that ends (``until``); ``describe`` says it in one line for ``cds audit
show`` and the record page. ``outcome_stats`` counts, per rule and over a period (``from`` inclusive, ``to``
exclusive, by the time of the call that showed or silenced the card), the cards shown, accepted, overridden
(per reason) and kept quiet (per cause), with their rates.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from collections.abc import Mapping
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from cds.ledger.schema import audit_card, audit_feedback, audit_record
from cds.review.queries import _escape


def _utc(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def describe(by: Mapping[str, Any], until: str | None) -> str:
    """One line: what silenced a card, and until when."""
    kind = by.get("kind")
    if kind == "feedback" and by.get("outcome") == "overridden":
        reason = by.get("reason") or {}
        what = (f"overridden ({reason.get('display') or reason.get('code')}) on card {by.get('card')}, "
                f"feedback {by.get('feedback')} received {str(by.get('received'))[:19]}")
    elif kind == "feedback":
        ordered = ", ".join(by.get("ordered") or [])
        what = (f"suggestion accepted on card {by.get('card')} (ordered {ordered}), "
                f"feedback {by.get('feedback')} received {str(by.get('received'))[:19]}")
    elif kind == "pendingOrder":
        orders, ordered = ", ".join(by.get("orders") or []), ", ".join(by.get("ordered") or [])
        what = f"test already ordered: {orders} ({ordered})"
    elif kind == "encounter":
        where = f"encounter {by['encounter']}" if by.get("encounter") else \
            f"the same user within {by.get('window_minutes')} minutes"
        what = f"shown earlier in {where} (card {by.get('card')}, record {by.get('record')}), not acted on"
    else:
        what = str(kind)
    if until:
        ends = f"until {until[:19]}"
    elif kind == "encounter":
        ends = "until the encounter ends"
    else:
        ends = "while the order stays active"
    return f"{what}; quiet {ends}"


def quiet_cards(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The record's quiet cards, each with its rule, the card and why it was quiet."""
    return [{"rule": q.get("rule"), "card": q.get("card") or {}, "by": q.get("by") or {},
             "until": q.get("until"), "why": describe(q.get("by") or {}, q.get("until"))}
            for q in (record.get("suppression") or {}).get("suppressed") or []]


def pending_orders_state(record: Mapping[str, Any]) -> str | None:
    """What the call knew of the patient's pending test orders (None: a record from before it was asked)."""
    return (record.get("suppression") or {}).get("pendingOrders")


def outcome_stats(engine: Engine, rule_id: str, since: dt.datetime | None = None,
                  until: dt.datetime | None = None) -> dict[str, Any]:
    """Cards of ``rule_id`` shown / accepted / overridden by reason / kept quiet, counts and rates, for the
    calls made from ``since`` (inclusive) to ``until`` (exclusive)."""
    when = []
    if since is not None:
        when.append(audit_record.c.time >= _utc(since))
    if until is not None:
        when.append(audit_record.c.time < _utc(until))
    cards = audit_card.join(audit_record, audit_record.c.seq == audit_card.c.record_seq)
    answered = audit_feedback.join(cards, audit_card.c.uuid == audit_feedback.c.card_uuid)
    with engine.connect() as conn:
        shown = conn.execute(select(func.count()).select_from(cards)
                             .where(audit_card.c.rule_id == rule_id, *when)).scalar_one()
        outcomes: dict[str, int] = dict(conn.execute(
            select(audit_feedback.c.outcome, func.count(func.distinct(audit_feedback.c.card_uuid)))
            .select_from(answered).where(audit_card.c.rule_id == rule_id, *when)
            .group_by(audit_feedback.c.outcome)).all())
        reasons = conn.execute(
            select(audit_feedback.c.override_code, func.max(audit_feedback.c.override_display),
                   func.count(func.distinct(audit_feedback.c.card_uuid)))
            .select_from(answered)
            .where(audit_card.c.rule_id == rule_id, audit_feedback.c.outcome == "overridden", *when)
            .group_by(audit_feedback.c.override_code)
            .order_by(func.count(func.distinct(audit_feedback.c.card_uuid)).desc())).all()
        quiet: Counter[str] = Counter()
        rows = conn.execute(select(audit_record.c.content).where(
            audit_record.c.rules.like(f"% {_escape(rule_id)} %", escape="\\"),
            audit_record.c.outcome == "ok", *when))
        for row in rows:
            for q in (json.loads(row.content).get("suppression") or {}).get("suppressed") or []:
                if q.get("rule") == rule_id:
                    quiet[str((q.get("by") or {}).get("kind"))] += 1

    def rate(n: int, of: int) -> float | None:
        return round(n / of, 4) if of else None

    suppressed = sum(quiet.values())
    accepted, overridden = outcomes.get("accepted", 0), outcomes.get("overridden", 0)
    return {
        "rule": rule_id,
        "from": _utc(since).isoformat() if since else None,
        "to": _utc(until).isoformat() if until else None,
        "cardsShown": shown,
        "accepted": accepted,
        "overridden": overridden,
        "overriddenByReason": [{"code": code, "display": display, "count": n, "rate": rate(n, shown)}
                               for code, display, n in reasons],
        "suppressed": suppressed,
        "suppressedBy": dict(sorted(quiet.items())),
        "rates": {"accepted": rate(accepted, shown), "overridden": rate(overridden, shown),
                  "suppressed": rate(suppressed, shown + suppressed)},
    }
