"""Verifying the whole trail: every table the auditor sees, against the chained content.

    audit_record      every record chain (``record_chains.py``): positions 1, 2, 3 ... with no gap, each
                      prev_hash the hash of the link before it, seq growing along the chain, and every
                      column derived from the content, ``time`` included; a record outside any chain is
                      reported
    audit_card        exactly the cards of each record's content: uuid, rule, indicator, summary and
                      record_seq; a missing, extra or orphaned row is reported
    audit_feedback    its own chain, and every column derived from its content; a row outside the chain
                      (no seq: inserted by hand) is reported
    audit_quarantine  its own chain, and its derived columns
    audit_checkpoint  its own chain; every head it names is in its record chain with that hash, and no
                      chain's head goes back from one checkpoint to the next

The head names the end of every chain: ``<chain>-<position>+<chain>-<position>.<feedback>.<quarantined>.
<checkpoints>:<sha256>`` (``0`` for the records when there are none), the positions and counts and a
sha256 over the last hashes. Kept somewhere else, it lets ``expect_head`` show later that nothing up to
that point was removed from the end of any chain or rewritten (the chains alone cannot show a cut tail;
the checkpoints show one only up to the last checkpoint).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, or_, select, tuple_
from sqlalchemy.engine import Engine
from sqlalchemy.sql.schema import Table

from cds.ledger import feedback, hashing, quarantine, record_chains
from cds.ledger.record import cards_of, columns_of
from cds.ledger.schema import audit_card, audit_checkpoint, audit_feedback, audit_quarantine, audit_record

BATCH = 500
HEAD = re.compile(r"^(0|\d+-\d+(?:\+\d+-\d+)*)\.(\d+)\.(\d+)\.(\d+):([0-9a-f]{64})$")
TABLES = (("feedback", audit_feedback), ("quarantine", audit_quarantine), ("checkpoints", audit_checkpoint))


@dataclass
class Report:
    records: int = 0
    feedback: int = 0
    quarantined: int = 0
    checkpoints: int = 0
    #: record chain -> (last position, hash)
    chains: dict[int, record_chains.Head] = field(default_factory=dict)
    heads: dict[str, str] = field(default_factory=dict)  # feedback | quarantine | checkpoints -> last hash
    problems: list[str] = field(default_factory=list)  # the first problem found in each table
    first_broken: hashing.Broken | None = None  # the first broken record (seq: the record's seq)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def head(self) -> str:
        counts = (self.feedback, self.quarantined, self.checkpoints)
        return head_of(self.chains, counts, self.heads)


def head_of(record_heads: dict[int, record_chains.Head], counts: tuple[int, int, int],
            heads: dict[str, str]) -> str:
    lines = [f"chain {k} {p} {h}" for k, (p, h) in sorted(record_heads.items())]
    lines += [f"{name} {heads.get(name, hashing.GENESIS)}" for name, _ in TABLES]
    digest = hashlib.sha256("\n".join(lines).encode("ascii")).hexdigest()
    positions = "+".join(f"{k}-{p}" for k, (p, _) in sorted(record_heads.items())) or "0"
    return f"{positions}.{counts[0]}.{counts[1]}.{counts[2]}:{digest}"


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


def _is_object(text: str | None) -> bool:
    try:
        return isinstance(json.loads(text or ""), dict)
    except ValueError:
        return False


def _columns_agree(row: Any, derived: Callable[[dict[str, Any]], dict[str, Any]]) -> str | None:
    try:
        expected = derived(json.loads(row.content))
    except (KeyError, TypeError, ValueError, AttributeError):
        return "content lacks the fields its columns are derived from"
    name = _differs(row, expected)
    return f"column {name} does not match the content (edited)" if name else None


def _walk(
    engine: Engine,
    table: Table,
    derived: Callable[[dict[str, Any]], dict[str, Any]],
    extra: Callable[[Any, dict[str, Any]], str | None] | None = None,
) -> tuple[int, str, hashing.Broken | None]:
    """Walk one table chained by seq; return (rows checked, last hash, the first broken link or None)."""
    rows: dict[int, Any] = {}
    last = {"hash": hashing.GENESIS}

    def links() -> Iterator[hashing.Link]:
        for row in _rows(engine, table):
            rows[row.seq] = row
            if table is audit_feedback:  # its id column is a row number; the link's id is in the content
                link_id = json.loads(row.content).get("id") if _is_object(row.content) else None
            else:
                link_id = row.id
            yield hashing.Link(seq=row.seq, id=str(link_id), content=row.content or "",
                             prev_hash=row.prev_hash or "", hash=row.hash or "")

    def check(link: hashing.Link) -> str | None:
        row = rows.pop(link.seq)
        problem = _columns_agree(row, derived) or (extra(row, json.loads(row.content)) if extra else None)
        if problem is None:
            last["hash"] = row.hash
        return problem

    checked, broken = hashing.verify(links(), check=check)
    return checked, last["hash"], broken


# -- the record chains ----------------------------------------------------------------------------------
def _record_columns(content: dict[str, Any]) -> dict[str, Any]:
    return {**columns_of(content), "time": dt.datetime.fromisoformat(content["time"])}


def _record_pages(engine: Engine) -> Iterator[tuple[Any, list[Any]]]:
    """Every chained record in (chain, position) order, each with its audit_card rows."""
    after = (0, 0)
    while True:
        with engine.connect() as conn:
            rows = conn.execute(
                select(audit_record).where(audit_record.c.chain_id.is_not(None),
                                           tuple_(audit_record.c.chain_id, audit_record.c.chain_pos) > after)
                .order_by(audit_record.c.chain_id, audit_record.c.chain_pos).limit(BATCH)
            ).all()
            cards: dict[int, list[Any]] = {}
            if rows:
                for card in conn.execute(
                    select(audit_card).where(audit_card.c.record_seq.in_([r.seq for r in rows]))
                ):
                    cards.setdefault(card.record_seq, []).append(card)
        if not rows:
            return
        for row in rows:
            yield row, cards.get(row.seq, [])
        after = (rows[-1].chain_id, rows[-1].chain_pos)


def _cards_agree(stored_rows: list[Any], content: dict[str, Any]) -> str | None:
    stored = {c.uuid: (c.rule_id, c.indicator, c.summary) for c in stored_rows}
    expected = {c["uuid"]: (c["rule_id"], c["indicator"], c["summary"]) for c in cards_of(content)}
    for uuid in expected.keys() - stored.keys():
        return f"audit_card row {uuid} is missing (deleted, or moved to another record)"
    for uuid in stored.keys() - expected.keys():
        return f"audit_card row {uuid} is not a card of this record (forged, or moved here)"
    for uuid, values in expected.items():
        if stored[uuid] != values:
            return f"audit_card row {uuid} does not match the card in the record (edited)"
    return None


def _walk_one_chain(
    rows: Iterator[tuple[Any, list[Any]]],
) -> tuple[int, record_chains.Head, hashing.Broken | None]:
    """One record chain, in position order; (records checked, its head, the first broken record)."""
    state: dict[str, Any] = {"head": (0, hashing.GENESIS), "seq": 0, "row": None, "cards": []}

    def links() -> Iterator[hashing.Link]:
        for row, cards in rows:
            state["row"], state["cards"] = row, cards
            yield hashing.Link(seq=row.chain_pos, id=row.id, content=row.content, prev_hash=row.prev_hash,
                             hash=row.hash)

    def check(link: hashing.Link) -> str | None:
        row, cards = state["row"], state["cards"]
        if row.seq <= state["seq"]:
            return "seq out of order along its chain (records renumbered or reordered)"
        problem = _columns_agree(row, _record_columns) or _cards_agree(cards, json.loads(row.content))
        if problem is None:
            state["head"], state["seq"] = (row.chain_pos, row.hash), row.seq
        return problem

    checked, broken = hashing.verify(links(), check=check)
    if broken is not None:
        row = state["row"]  # the link hashing.verify stopped at
        where = f"chain {row.chain_id} position {row.chain_pos}"
        broken = hashing.Broken(row.seq, broken.id, f"{where}: {broken.reason}")
    return checked, state["head"], broken


def _verify_records(engine: Engine, report: Report) -> None:
    for chain_id, rows in itertools.groupby(_record_pages(engine), key=lambda pair: pair[0].chain_id):
        checked, head, broken = _walk_one_chain(rows)
        report.records += checked
        report.chains[chain_id] = head
        if broken is not None and report.first_broken is None:
            report.first_broken = broken
            report.problems.append(f"record #{broken.seq} ({broken.id}): {broken.reason}")
    with engine.connect() as conn:
        outside = conn.execute(
            select(audit_record.c.seq)
            .where(audit_record.c.chain_id.is_(None) | audit_record.c.chain_pos.is_(None))
            .limit(1)
        ).first()
        orphan = conn.execute(
            select(audit_card.c.uuid, audit_card.c.record_seq)
            .where(~audit_card.c.record_seq.in_(select(audit_record.c.seq)))
            .limit(1)
        ).first()
    if outside is not None:
        report.problems.append(f"record #{outside.seq} is outside every chain (inserted or edited by hand)")
    if orphan is not None:
        report.problems.append(f"audit_card row {orphan.uuid} names record #{orphan.record_seq}, which does "
                               "not exist (forged, or its record was deleted)")


# -- checkpoints ----------------------------------------------------------------------------------------
def _checkpoints_agree(engine: Engine) -> Callable[[Any, dict[str, Any]], str | None]:
    before: dict[int, record_chains.Head] = {}

    def check(row: Any, content: dict[str, Any]) -> str | None:
        try:
            heads = record_chains.heads_content(content)
        except (KeyError, TypeError, ValueError, AttributeError):
            return "content lacks the chain heads"
        for number, (pos, _) in before.items():
            if heads.get(number, (0, ""))[0] < pos:
                return f"chain {number} is behind the previous checkpoint's position {pos}"
        before.clear()
        before.update(heads)
        if not heads:
            return None
        with engine.connect() as conn:
            stored = dict(((r.chain_id, r.chain_pos), r.hash) for r in conn.execute(
                select(audit_record.c.chain_id, audit_record.c.chain_pos, audit_record.c.hash).where(or_(*(
                    and_(audit_record.c.chain_id == k, audit_record.c.chain_pos == p)
                    for k, (p, _) in heads.items()
                )))
            ))
        for number, (pos, digest) in sorted(heads.items()):
            if (number, pos) not in stored:
                return (f"names chain {number} at position {pos}, which the trail does not hold (records "
                        "removed from the end of that chain, or the chain dropped)")
            if stored[(number, pos)] != digest:
                return f"names chain {number} at position {pos} with another hash (the chain was rewritten)"
        return None

    return check


def _feedback_not_of_its_patient(engine: Engine) -> int | None:
    """The first feedback row whose ``patient_key`` (not chained: the history read finds a patient's
    answered cards by it) is not the ``patient_key`` of the record holding its card (None when no record
    holds it)."""
    owner = (select(audit_record.c.patient_key)
             .join(audit_card, audit_card.c.record_seq == audit_record.c.seq)
             .where(audit_card.c.uuid == audit_feedback.c.card_uuid)
             .scalar_subquery())
    with engine.connect() as conn:
        return conn.execute(select(audit_feedback.c.seq)
                            .where(audit_feedback.c.patient_key.is_distinct_from(owner))
                            .order_by(audit_feedback.c.seq).limit(1)).scalar()


def verify_all(engine: Engine) -> Report:
    report = Report()
    _verify_records(engine, report)
    with engine.connect() as conn:
        unchained = conn.execute(
            select(audit_feedback.c.id).where(audit_feedback.c.seq.is_(None)).limit(1)
        ).first()
    report.feedback, report.heads["feedback"], broken = _walk(engine, audit_feedback, feedback.columns)
    if broken:
        report.problems.append(f"audit_feedback #{broken.seq}: {broken.reason}")
    if unchained is not None:
        report.problems.append(f"audit_feedback row id {unchained.id} is outside the feedback chain "
                               "(inserted by hand)")
    misfiled = _feedback_not_of_its_patient(engine)
    if misfiled is not None:
        report.problems.append(f"audit_feedback #{misfiled}: column patient_key is not that of the record "
                               "holding its card (edited)")
    report.quarantined, report.heads["quarantine"], broken = _walk(engine, audit_quarantine,
                                                                   quarantine.columns)
    if broken:
        report.problems.append(f"audit_quarantine #{broken.seq}: {broken.reason}")
    report.checkpoints, report.heads["checkpoints"], broken = _walk(
        engine, audit_checkpoint, record_chains.checkpoint_columns, _checkpoints_agree(engine))
    if broken:
        report.problems.append(f"audit_checkpoint #{broken.seq}: {broken.reason}")
    return report


def expect_head(engine: Engine, report: Report, kept: str) -> str | None:
    """None when ``kept`` (a head printed earlier) is still the chains' state at that point; else why not.
    ``report`` must be a verified trail (the hashes up to its end are then trusted)."""
    match = HEAD.match(kept.strip())
    if match is None:
        return "the expected head must look like 1-12.3.0.1:<64 hex digits>, as verify prints it"
    positions = {} if match.group(1) == "0" else {
        int(k): int(p) for k, p in (part.split("-") for part in match.group(1).split("+"))}
    counts = (int(match.group(2)), int(match.group(3)), int(match.group(4)))
    for number, want in sorted(positions.items()):
        got = report.chains.get(number, (0, ""))[0]
        if want > got:
            return (f"chain {number} has {got} records, the expected head {want}: entries were removed from "
                    "the end")
    have = (report.feedback, report.quarantined, report.checkpoints)
    names = ("feedback items", "quarantined entries", "checkpoints")
    for name, want, got in zip(names, counts, have, strict=True):
        if want > got:
            return f"the trail has {got} {name}, the expected head {want}: entries were removed from the end"
    record_heads: dict[int, record_chains.Head] = {}
    heads = {}
    with engine.connect() as conn:
        for number, pos in positions.items():
            digest = conn.execute(select(audit_record.c.hash).where(
                audit_record.c.chain_id == number, audit_record.c.chain_pos == pos)).scalar_one()
            record_heads[number] = (pos, digest)
        for (name, table), seq in zip(TABLES, counts, strict=True):
            if seq:
                heads[name] = conn.execute(select(table.c.hash).where(table.c.seq == seq)).scalar_one()
    if head_of(record_heads, counts, heads) != kept.strip():
        return "the trail does not match the expected head: entries up to it were rewritten"
    return None


def verify_lines(engine: Engine, expected: str | None = None) -> tuple[int, list[str]]:
    """``cds audit verify``: (exit code, lines to print); 1 when anything is broken or the head differs."""
    report = verify_all(engine)
    if not report.ok:
        return 1, [f"audit chain BROKEN at {problem}" for problem in report.problems]
    lines = [
        f"audit chain OK: {report.records} record(s) verified in {len(report.chains)} chain(s), cards "
        f"included; {report.feedback} feedback item(s); {report.quarantined} quarantined entr"
        f"{'y' if report.quarantined == 1 else 'ies'}; {report.checkpoints} checkpoint(s) agree with the "
        "chains",
        f"head {report.head}",
    ]
    if expected:
        mismatch = expect_head(engine, report, expected)
        if mismatch:
            return 1, [*lines, f"expected head NOT matched: {mismatch}"]
        lines.append("expected head matched")
    return 0, lines
