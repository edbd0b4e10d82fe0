"""Verifying the whole trail: every table the auditor sees, against the chained content.

    audit_record      the chain (hash, prev_hash, seq) and every column derived from the content,
                      ``time`` included
    audit_card        exactly the cards of each record's content: uuid, rule, indicator, summary and
                      record_seq; a missing, extra or orphaned row is reported
    audit_feedback    its own chain, and every column derived from its content; a row outside the chain
                      (no seq: inserted by hand) is reported
    audit_quarantine  its own chain, and its derived columns

The head names the end of the three chains: ``<records>.<feedback>.<quarantined>:<sha256>``, the counts
and a sha256 over the three last hashes. Kept somewhere else, it lets ``expect_head`` show later that
nothing up to that point was removed from the end or rewritten (the chains alone cannot show a cut tail).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.sql.schema import Table

from cds.audit import chain, feedback, quarantine
from cds.audit.record import cards_of, columns_of
from cds.audit.schema import audit_card, audit_feedback, audit_quarantine, audit_record

BATCH = 500
HEAD = re.compile(r"^(\d+)\.(\d+)\.(\d+):([0-9a-f]{64})$")


@dataclass
class Report:
    records: int = 0
    feedback: int = 0
    quarantined: int = 0
    heads: dict[str, str] = field(default_factory=dict)  # table -> last hash
    problems: list[str] = field(default_factory=list)  # the first problem found in each table
    first_broken: chain.Broken | None = None  # the first broken record (the record chain's own report)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def head(self) -> str:
        return head_of(self.records, self.feedback, self.quarantined, self.heads)


def head_of(records: int, fb: int, quarantined: int, heads: dict[str, str]) -> str:
    names = ("records", "feedback", "quarantine")
    text = "\n".join(f"{name} {heads.get(name, chain.GENESIS)}" for name in names)
    return f"{records}.{fb}.{quarantined}:{hashlib.sha256(text.encode('ascii')).hexdigest()}"


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def _rows(engine: Engine, table: Table) -> Iterator[Any]:
    last = 0
    while True:
        with engine.connect() as conn:
            rows = conn.execute(
                select(table).where(table.c.seq > last).order_by(table.c.seq).limit(BATCH)
            ).all()
        if not rows:
            return
        yield from rows
        last = rows[-1].seq


def _differs(row: Any, expected: dict[str, Any]) -> str | None:
    for name, value in expected.items():
        got = getattr(row, name)
        if isinstance(value, dt.datetime):
            got, value = _utc(got), _utc(value)
        if got != value:
            return name
    return None


def _walk(
    engine: Engine,
    table: Table,
    derived: Callable[[dict[str, Any]], dict[str, Any]],
    extra: Callable[[Any, dict[str, Any]], str | None] | None = None,
) -> tuple[int, str, chain.Broken | None]:
    """Walk one chained table; return (rows checked, last hash, the first broken link or None)."""
    rows: dict[int, Any] = {}
    last = {"hash": chain.GENESIS}

    def links() -> Iterator[chain.Link]:
        for row in _rows(engine, table):
            rows[row.seq] = row
            if table is audit_feedback:  # its id column is a row number; the link's id is in the content
                link_id = json.loads(row.content).get("id") if _is_object(row.content) else None
            else:
                link_id = row.id
            yield chain.Link(seq=row.seq, id=str(link_id), content=row.content or "",
                             prev_hash=row.prev_hash or "", hash=row.hash or "")

    def check(link: chain.Link) -> str | None:
        row = rows.pop(link.seq)
        content = json.loads(row.content)
        try:
            expected = derived(content)
        except (KeyError, TypeError, ValueError, AttributeError):
            return "content lacks the fields its columns are derived from"
        name = _differs(row, expected)
        if name:
            return f"column {name} does not match the content (edited)"
        problem = extra(row, content) if extra else None
        if problem is None:
            last["hash"] = row.hash
        return problem

    checked, broken = chain.verify(links(), check=check)
    return checked, last["hash"], broken


def _is_object(text: str | None) -> bool:
    try:
        return isinstance(json.loads(text or ""), dict)
    except ValueError:
        return False


def _record_columns(content: dict[str, Any]) -> dict[str, Any]:
    return {**columns_of(content), "time": dt.datetime.fromisoformat(content["time"])}


def _cards_agree(engine: Engine) -> Callable[[Any, dict[str, Any]], str | None]:
    cache: dict[int, list[Any]] = {}

    def check(row: Any, content: dict[str, Any]) -> str | None:
        if row.seq not in cache:
            cache.clear()
            with engine.connect() as conn:
                for card in conn.execute(
                    select(audit_card).where(audit_card.c.record_seq.between(row.seq, row.seq + BATCH - 1))
                ):
                    cache.setdefault(card.record_seq, []).append(card)
            for seq in range(row.seq, row.seq + BATCH):
                cache.setdefault(seq, [])
        stored = {c.uuid: (c.rule_id, c.indicator, c.summary) for c in cache[row.seq]}
        expected = {c["uuid"]: (c["rule_id"], c["indicator"], c["summary"]) for c in cards_of(content)}
        for uuid in expected.keys() - stored.keys():
            return f"audit_card row {uuid} is missing (deleted, or moved to another record)"
        for uuid in stored.keys() - expected.keys():
            return f"audit_card row {uuid} is not a card of this record (forged, or moved here)"
        for uuid, values in expected.items():
            if stored[uuid] != values:
                return f"audit_card row {uuid} does not match the card in the record (edited)"
        return None

    return check


def verify_all(engine: Engine) -> Report:
    report = Report()
    report.records, report.heads["records"], report.first_broken = _walk(
        engine, audit_record, _record_columns, _cards_agree(engine)
    )
    if report.first_broken:
        b = report.first_broken
        report.problems.append(f"record #{b.seq} ({b.id}): {b.reason}")
    with engine.connect() as conn:
        orphan = conn.execute(
            select(audit_card.c.uuid, audit_card.c.record_seq)
            .where(~audit_card.c.record_seq.in_(select(audit_record.c.seq)))
            .limit(1)
        ).first()
        unchained = conn.execute(
            select(audit_feedback.c.id).where(audit_feedback.c.seq.is_(None)).limit(1)
        ).first()
    if orphan is not None:
        report.problems.append(f"audit_card row {orphan.uuid} names record #{orphan.record_seq}, which does "
                               "not exist (forged, or its record was deleted)")
    report.feedback, report.heads["feedback"], broken = _walk(engine, audit_feedback, feedback.columns)
    if broken:
        report.problems.append(f"audit_feedback #{broken.seq}: {broken.reason}")
    if unchained is not None:
        report.problems.append(f"audit_feedback row id {unchained.id} is outside the feedback chain "
                               "(inserted by hand)")
    report.quarantined, report.heads["quarantine"], broken = _walk(engine, audit_quarantine,
                                                                   quarantine.columns)
    if broken:
        report.problems.append(f"audit_quarantine #{broken.seq}: {broken.reason}")
    return report


def expect_head(engine: Engine, report: Report, kept: str) -> str | None:
    """None when ``kept`` (a head printed earlier) is still the chains' state at that point; else why not.
    ``report`` must be a verified trail (the hashes up to its end are then trusted)."""
    match = HEAD.match(kept.strip())
    if match is None:
        return "the expected head must look like 12.3.0:<64 hex digits>, as verify prints it"
    counts = [int(g) for g in match.groups()[:3]]
    have = (report.records, report.feedback, report.quarantined)
    names = ("records", "feedback items", "quarantined entries")
    for name, want, got in zip(names, counts, have, strict=True):
        if want > got:
            return f"the trail has {got} {name}, the expected head {want}: entries were removed from the end"
    heads = {}
    with engine.connect() as conn:
        tables = (("records", audit_record), ("feedback", audit_feedback), ("quarantine", audit_quarantine))
        for (name, table), seq in zip(tables, counts, strict=True):
            if seq:
                heads[name] = conn.execute(select(table.c.hash).where(table.c.seq == seq)).scalar_one()
    if head_of(*counts, heads) != kept.strip():
        return "the trail does not match the expected head: entries up to it were rewritten"
    return None


def verify_lines(engine: Engine, expected: str | None = None) -> tuple[int, list[str]]:
    """``cds audit verify``: (exit code, lines to print); 1 when anything is broken or the head differs."""
    report = verify_all(engine)
    if not report.ok:
        return 1, [f"audit chain BROKEN at {problem}" for problem in report.problems]
    lines = [
        f"audit chain OK: {report.records} record(s) verified, cards included; "
        f"{report.feedback} feedback item(s); {report.quarantined} quarantined entr"
        f"{'y' if report.quarantined == 1 else 'ies'}",
        f"head {report.head}",
    ]
    if expected:
        mismatch = expect_head(engine, report, expected)
        if mismatch:
            return 1, [*lines, f"expected head NOT matched: {mismatch}"]
        lines.append("expected head matched")
    return 0, lines
