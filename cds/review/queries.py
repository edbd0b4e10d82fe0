"""Reading the audit trail: filtered lists, one record, per-rule statistics, chain verification."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, exists, func, select
from sqlalchemy.engine import Engine

from cds.ledger import hashing
from cds.ledger.schema import audit_card, audit_feedback, audit_record

MAX_PAGE = 500
MAX_INT64 = 2**63 - 1  # the largest seq or offset a database query takes


@dataclass
class Filters:
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    service: str | None = None
    rule: str | None = None
    indicator: str | None = None
    outcome: str | None = None
    patient_key: str | None = None  # the full 64-hex key, or a prefix of it (the 16 digits the pages show)
    hook_instance: str | None = None  # the call's hookInstance, as the EHR logs it

    def where(self) -> list[Any]:
        c = audit_record.c
        out: list[Any] = []
        if self.since:
            out.append(c.time >= _utc(self.since))
        if self.until:
            out.append(c.time < _utc(self.until))
        if self.service:
            out.append(c.service == self.service)
        if self.rule:
            out.append(c.rules.like(f"% {_escape(self.rule)} %", escape="\\"))
        if self.indicator:
            out.append(
                exists().where(
                    and_(audit_card.c.record_seq == c.seq, audit_card.c.indicator == self.indicator)
                )
            )
        if self.outcome:
            out.append(c.outcome == self.outcome)
        if self.patient_key:
            if len(self.patient_key) >= 64:
                out.append(c.patient_key == self.patient_key)
            else:
                out.append(c.patient_key.like(_escape(self.patient_key) + "%", escape="\\"))
        if self.hook_instance:
            out.append(c.hook_instance == self.hook_instance)
        return out


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _utc(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def parse_time(raw: str | None) -> dt.datetime | None:
    """An ISO date or date-time (UTC when it names no zone); ``ValueError`` when malformed or when it
    falls outside the years 1 to 9999 once moved to UTC (``9999-12-31T23:59:59-05:00``)."""
    if not raw:
        return None
    value = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    try:
        return _utc(value)
    except OverflowError as exc:
        raise ValueError(f"{raw!r} is outside the years 1 to 9999 in UTC") from exc


def parse_until(raw: str | None) -> dt.datetime | None:
    """``until`` as ``parse_time``, except that a bare date (``2026-12-01``) includes that whole day."""
    value = parse_time(raw)
    if value is not None and raw and len(raw.strip()) == 10 and "T" not in raw:
        try:
            return value + dt.timedelta(days=1)
        except OverflowError as exc:
            raise ValueError(f"{raw!r} is outside the years 1 to 9999 in UTC") from exc
    return value


def summary(row: Any, cards: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "seq": row.seq,
        "id": row.id,
        "time": _utc(row.time).isoformat(),
        "service": row.service,
        "hook": row.hook,
        "outcome": row.outcome,
        "hookInstance": row.hook_instance,
        "patientKey": row.patient_key,
        "rulePackVersion": row.pack_version,
        "latencyMs": row.latency_ms,
        "rules": row.rules.split(),
        "cards": cards or [],
    }


def list_records(engine: Engine, filters: Filters, *, limit: int = 50, offset: int = 0) -> dict[str, Any]:
    limit = max(1, min(limit, MAX_PAGE))
    where = filters.where()
    with engine.connect() as conn:
        total = conn.execute(select(func.count()).select_from(audit_record).where(*where)).scalar_one()
        rows = conn.execute(
            select(audit_record)
            .where(*where)
            .order_by(audit_record.c.seq.desc())
            .limit(limit)
            .offset(max(0, offset))
        ).all()
        cards: dict[int, list[dict[str, Any]]] = {}
        if rows:
            for c in conn.execute(
                select(audit_card).where(audit_card.c.record_seq.in_([r.seq for r in rows]))
            ):
                cards.setdefault(c.record_seq, []).append(
                    {"uuid": c.uuid, "rule": c.rule_id, "indicator": c.indicator, "summary": c.summary}
                )
    return {
        "total": total,
        "limit": limit,
        "offset": offset,
        "records": [summary(r, cards.get(r.seq)) for r in rows],
    }


def get_record(engine: Engine, key: str) -> dict[str, Any] | None:
    """One record in full by ``seq``, record id or card uuid; with chain fields and feedback per card."""
    with engine.connect() as conn:
        query = select(audit_record)
        if key.isascii() and key.isdigit() and int(key) <= MAX_INT64:
            query = query.where(audit_record.c.seq == int(key))
        else:
            card = conn.execute(select(audit_card.c.record_seq).where(audit_card.c.uuid == key)).first()
            query = (
                query.where(audit_record.c.seq == card.record_seq)
                if card
                else query.where(audit_record.c.id == key)
            )
        row = conn.execute(query).first()
        if row is None:
            return None
        content = json.loads(row.content)
        uuids = [c["uuid"] for c in content.get("cards", [])]
        feedback = [
            _feedback(f)
            for f in conn.execute(
                select(audit_feedback)
                .where(audit_feedback.c.card_uuid.in_(uuids))
                .order_by(audit_feedback.c.id)
            )
        ]
    return {
        "seq": row.seq,
        "prevHash": row.prev_hash,
        "hash": row.hash,
        "record": content,
        "feedback": feedback,
    }


def _feedback(f: Any) -> dict[str, Any]:
    return {
        "id": f.id,
        "card": f.card_uuid,
        "service": f.service,
        "outcome": f.outcome,
        "outcomeTimestamp": f.outcome_time,
        "received": _utc(f.received).isoformat(),
        "acceptedSuggestions": json.loads(f.accepted or "[]"),
        "overrideReason": {"code": f.override_code, "display": f.override_display}
        if f.override_code
        else None,
        "comment": f.comment,
        "knownCard": bool(f.known_card),
    }


def feedback_for_card(engine: Engine, card_uuid: str) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [
            _feedback(f)
            for f in conn.execute(
                select(audit_feedback)
                .where(audit_feedback.c.card_uuid == card_uuid)
                .order_by(audit_feedback.c.id)
            )
        ]


def rule_stats(engine: Engine, rule_ids: list[str], *, top: int = 5) -> list[dict[str, Any]]:
    """Per rule: calls it fired in, cards shown, cards accepted / overridden, top override reasons."""
    out = []
    with engine.connect() as conn:
        for rule_id in rule_ids:
            fired = conn.execute(
                select(func.count())
                .select_from(audit_record)
                .where(audit_record.c.rules.like(f"% {_escape(rule_id)} %", escape="\\"))
            ).scalar_one()
            shown = conn.execute(
                select(func.count()).select_from(audit_card).where(audit_card.c.rule_id == rule_id)
            ).scalar_one()
            joined = audit_feedback.join(audit_card, audit_card.c.uuid == audit_feedback.c.card_uuid)
            counts: dict[str, int] = dict(
                conn.execute(
                    select(audit_feedback.c.outcome, func.count(func.distinct(audit_feedback.c.card_uuid)))
                    .select_from(joined)
                    .where(audit_card.c.rule_id == rule_id)
                    .group_by(audit_feedback.c.outcome)
                ).all()
            )
            reasons = conn.execute(
                select(
                    audit_feedback.c.override_code,
                    func.max(audit_feedback.c.override_display),
                    func.count().label("n"),
                )
                .select_from(joined)
                .where(audit_card.c.rule_id == rule_id, audit_feedback.c.override_code.is_not(None))
                .group_by(audit_feedback.c.override_code)
                .order_by(func.count().desc())
                .limit(top)
            ).all()
            comments = (
                conn.execute(
                    select(audit_feedback.c.comment)
                    .select_from(joined)
                    .where(audit_card.c.rule_id == rule_id, audit_feedback.c.comment.is_not(None))
                    .order_by(audit_feedback.c.id.desc())
                    .limit(top)
                )
                .scalars()
                .all()
            )
            out.append(
                {
                    "rule": rule_id,
                    "fired": fired,
                    "cardsShown": shown,
                    "accepted": counts.get("accepted", 0),
                    "overridden": counts.get("overridden", 0),
                    "topOverrideReasons": [{"code": r[0], "display": r[1], "count": r[2]} for r in reasons],
                    "recentComments": list(comments),
                }
            )
    return out


def iter_records(engine: Engine, filters: Filters | None = None, *, batch: int = 500) -> Iterator[Any]:
    """Every record row in chain order (``seq`` ascending), read in batches."""
    where = (filters or Filters()).where()
    last = 0
    while True:
        with engine.connect() as conn:
            rows = conn.execute(
                select(audit_record)
                .where(audit_record.c.seq > last, *where)
                .order_by(audit_record.c.seq)
                .limit(batch)
            ).all()
        if not rows:
            return
        yield from rows
        last = rows[-1].seq


def verify_chain(engine: Engine) -> tuple[int, hashing.Broken | None]:
    """(records checked, the first problem or None) over every audit table (``verify.verify_all``)."""
    from cds.review.verify import verify_all

    report = verify_all(engine)
    if report.first_broken is not None or report.ok:
        return report.records, report.first_broken
    return report.records, hashing.Broken(0, "-", report.problems[0])


def seqs_for_hook_instance(engine: Engine, hook_instance: str) -> list[int]:
    """The ``seq`` of every record of the call with this ``hookInstance`` (what the EHR logs), oldest first:
    usually one, more when the client sent the same instance again."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(audit_record.c.seq)
            .where(audit_record.c.hook_instance == hook_instance)
            .order_by(audit_record.c.seq)
        ).all()
    return [row.seq for row in rows]
