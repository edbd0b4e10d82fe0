"""Record chains that do not serialise writers, and the checkpoints that tie them together.

Every record is a link of one hash chain (``chain_id``, ``chain_pos``, ``prev_hash``, ``hash``; see
``hashing.py``). On PostgreSQL each process appends to a chain of its own: at its first write it claims the
lowest free chain number with a session advisory lock (``pg_try_advisory_lock(<schema key>, n)``) held
by one connection kept for that purpose, reads that chain's head once, and from then on appends without
taking any lock another process waits for. Chain numbers are reused: a chain whose process stopped (its
connection closed, so its lock went) is claimed by the next process that starts, which carries on from its
head. The writes of a chain happen on the connection holding its lock, so a writer that lost its
connection (and with it the chain) cannot write to it; it claims a chain again.

On SQLite (one machine, and SQLite serialises writers anyway), and on PostgreSQL when ``own_chains`` is
off, every process appends to chain 1: each transaction takes the chain's lock (on PostgreSQL a
transaction advisory lock on the same key, so it waits for a process that owns chain 1), reads the head
and appends, as the trail did with one chain.

``seq``, the trail's one order (queries, the API, cards), comes from the database: a sequence on
PostgreSQL, the next number under SQLite's write lock. Within a chain, seq grows with chain_pos.

A checkpoint (``audit_checkpoint``, a hash chain of its own) records the head (position and hash) of every
chain at the time it is written, as Certificate Transparency's signed tree heads do for a log: it commits
to each chain up to that point, so that a chain cut back, rewritten or dropped before a checkpoint is found
by ``verify``. Each writer adds one every ``AUDIT_CHECKPOINT_SECONDS`` when any head moved.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
import uuid
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import func, insert, select, text
from sqlalchemy.engine import Connection, Engine

from cds.ledger import append, hashing
from cds.ledger.record import cards_of, columns_of
from cds.ledger.schema import audit_card, audit_checkpoint, audit_record

#: the first key of a chain's advisory lock (the second is the chain number): one per database and schema,
#: so that trails in other schemas of the same database do not share chain locks
CHAIN_LOCK_CLASS = "hashtext(current_database() || '.' || current_schema() || '.cds-audit-chain')"
SHARED_CHAIN = 1
Head = tuple[int, str]  # (position of the last link, its hash); (0, GENESIS) for an empty chain
Contents = list[tuple[dict[str, Any], str]]
Before = Callable[[Connection, Contents], Contents]



def _utc(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def head_of(conn: Connection, chain_id: int) -> Head:
    row = conn.execute(
        select(audit_record.c.chain_pos, audit_record.c.hash)
        .where(audit_record.c.chain_id == chain_id)
        .order_by(audit_record.c.chain_pos.desc())
        .limit(1)
    ).first()
    return (row.chain_pos, row.hash) if row else (0, hashing.GENESIS)


def _next_seqs(conn: Connection, n: int) -> list[int]:
    if conn.dialect.name == "postgresql":
        got = conn.execute(
            text("SELECT nextval('audit_record_seq_seq') FROM generate_series(1, :n)"), {"n": n}
        ).scalars()
        return sorted(got)
    last = conn.execute(select(func.max(audit_record.c.seq))).scalar() or 0
    return list(range(last + 1, last + n + 1))


def _links(
    chain_id: int, head: Head, fresh: list[tuple[dict[str, Any], str]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The rows of ``fresh`` as the next links of ``chain_id`` after ``head`` (all but ``seq``), and their
    cards, each with the ``chain_pos`` of its record."""
    pos, prev = head
    rows, cards = [], []
    for content, content_json in fresh:
        digest = hashing.link_hash(prev, content_json)
        pos += 1
        rows.append(
            {
                "chain_id": chain_id,
                "chain_pos": pos,
                "content": content_json,
                "time": _utc(dt.datetime.fromisoformat(content["time"])),
                "prev_hash": prev,
                "hash": digest,
                **columns_of(content),
            }
        )
        cards += [{**card, "chain_pos": pos} for card in cards_of(content)]
        prev = digest
    return rows, cards


def _insert_rows(conn: Connection, rows: list[dict[str, Any]], cards: list[dict[str, Any]]) -> list[int]:
    """Insert the records and their cards with one statement each, their seqs taken first (SQLite, and
    any database); return the seqs in the order of ``rows``."""
    seqs = _next_seqs(conn, len(rows))
    seq_at = {row["chain_pos"]: seq for row, seq in zip(rows, seqs, strict=True)}
    conn.execute(insert(audit_record), [{**row, "seq": seq} for row, seq in zip(rows, seqs, strict=True)])
    if cards:
        conn.execute(
            insert(audit_card),
            [{**{k: v for k, v in card.items() if k != "chain_pos"}, "record_seq": seq_at[card["chain_pos"]]}
             for card in cards],
        )
    return seqs


def _arrays(table: Any, names: Iterable[str], prefix: str) -> str:
    """The parameters ``%(<prefix><name>)b``, one array of a column's values each (sent in binary: no
    quoting of the JSON text), as ``unnest``'s arguments. Each is read by a sub-select, so that the plan
    knows no array's length: the plan is the same for every batch and PostgreSQL keeps the one generic plan
    of the prepared statement instead of planning it again for each batch."""
    types = {int: "integer[]", float: "float8[]", dt.datetime: "timestamptz[]"}
    return ", ".join(
        f"(SELECT CAST(%({prefix}{name})b AS {types.get(table.c[name].type.python_type, 'text[]')}))"
        for name in names
    )


#: the columns of a record and of a card (but their seqs), passed as one array each by ``_insert_rows_pg``
PG_RECORD_COLUMNS = tuple(c.name for c in audit_record.c if c.name != "seq")
PG_CARD_COLUMNS = tuple(c.name for c in audit_card.c if c.name != "record_seq")

#: the whole batch in one statement: the seqs, sorted (so that within a chain seq grows with chain_pos,
#: however the sequence's values came), the records numbered in chain order, their cards (each joined to
#: its record by chain_pos); the seqs come back in chain_pos order
PG_INSERT_LINKS = f"""
WITH seqs AS (
    SELECT seq, row_number() OVER (ORDER BY seq) AS i
    FROM (
        SELECT nextval('audit_record_seq_seq') AS seq
        FROM generate_series(1, (SELECT CAST(%(n)b AS integer)))
    ) AS taken
), records AS (
    INSERT INTO audit_record (seq, {", ".join(PG_RECORD_COLUMNS)})
    SELECT seqs.seq, {", ".join(f"r.{name}" for name in PG_RECORD_COLUMNS)}
    FROM unnest({_arrays(audit_record, PG_RECORD_COLUMNS, "r_")})
        WITH ORDINALITY AS r({", ".join(PG_RECORD_COLUMNS)}, i)
    JOIN seqs USING (i)
    RETURNING seq, chain_pos
), cards AS (
    INSERT INTO audit_card (record_seq, {", ".join(PG_CARD_COLUMNS)})
    SELECT records.seq, {", ".join(f"c.{name}" for name in PG_CARD_COLUMNS)}
    FROM unnest((SELECT CAST(%(c_chain_pos)b AS integer[])), {_arrays(audit_card, PG_CARD_COLUMNS, "c_")})
        AS c(chain_pos, {", ".join(PG_CARD_COLUMNS)})
    JOIN records USING (chain_pos)
)
SELECT seq FROM records ORDER BY chain_pos
"""


def _insert_rows_pg(conn: Connection, rows: list[dict[str, Any]], cards: list[dict[str, Any]]) -> list[int]:
    """``_insert_rows`` on PostgreSQL in one statement: one round trip for the seqs, the records and the
    cards, and no SQL compiled (the statement is prepared once per connection by psycopg)."""
    params: dict[str, Any] = {"n": len(rows)}
    params.update({f"r_{name}": [row[name] for row in rows] for name in PG_RECORD_COLUMNS})
    params.update({f"c_{name}": [card[name] for card in cards] for name in ("chain_pos", *PG_CARD_COLUMNS)})
    return list(conn.exec_driver_sql(PG_INSERT_LINKS, params).scalars())


def insert_links(
    conn: Connection, chain_id: int, head: Head, contents: list[tuple[dict[str, Any], str]], dedupe: bool
) -> tuple[list[int], Head]:
    """Insert ``contents`` (content, canonical JSON) as the next links of ``chain_id`` after ``head``, their
    cards with them; return their seqs and the new head. ``dedupe``: a record whose id is stored already
    (a spooled entry written before a crash) is not written again, its seq is returned."""
    existing: dict[str, int] = {}
    if dedupe:
        ids = [content["id"] for content, _ in contents]
        found = conn.execute(select(audit_record.c.id, audit_record.c.seq).where(audit_record.c.id.in_(ids)))
        existing = {row.id: row.seq for row in found}
    fresh = [(content, text_) for content, text_ in contents if content["id"] not in existing]
    if fresh:
        rows, cards = _links(chain_id, head, fresh)
        write = _insert_rows_pg if conn.dialect.name == "postgresql" else _insert_rows
        seqs = write(conn, rows, cards)
        existing.update((content["id"], seq) for (content, _), seq in zip(fresh, seqs, strict=True))
        head = (rows[-1]["chain_pos"], rows[-1]["hash"])
    return [existing[content["id"]] for content, _ in contents], head


class ChainWriter:
    """Appends records to this process's chain (or to the shared chain 1)."""

    def __init__(self, engine: Engine, lock: threading.Lock, *, own_chains: bool = True):
        self.engine = engine
        self.lock = lock  # the store's process lock: one transaction of this process's at a time
        self.own = own_chains and engine.dialect.name == "postgresql"
        self.chain_id: int | None = None
        self._head: Head = (0, hashing.GENESIS)
        self._conn: Connection | None = None  # holds the chain's session lock; the chain's writes run on it
        self._pid = os.getpid()
        self._release: weakref.finalize | None = None  # closes the chain's connection, also when collected

    def append(self, contents: list[tuple[dict[str, Any], str]], *, dedupe: bool = False,
               before: Before | None = None) -> list[int]:
        """Append ``contents`` (content, canonical JSON) in one transaction; return their seqs. ``before``
        runs first in the same transaction and returns the contents to append (the token claims of the
        records are stored that way, and a record whose claim is a replay is left out)."""
        if not self.own:
            return append.retried(
                self.engine, self.lock,
                lambda conn: self._shared(conn, before(conn, contents) if before else contents, dedupe),
            )
        with self.lock:
            conn = self._claimed()
            try:
                with conn.begin():
                    rows = before(conn, contents) if before else contents
                    seqs, head = insert_links(conn, self.chain_id or 0, self._head, rows, dedupe)
            except Exception as exc:
                if not append.is_poison(exc):
                    self._drop()  # the connection (and the chain with it) may be gone: claim again
                raise
            self._head = head
            return seqs

    def _shared(
        self, conn: Connection, contents: list[tuple[dict[str, Any], str]], dedupe: bool
    ) -> list[int]:
        if conn.dialect.name == "postgresql":
            conn.execute(text(f"SELECT pg_advisory_xact_lock({CHAIN_LOCK_CLASS}, :n)"), {"n": SHARED_CHAIN})
        self.chain_id = SHARED_CHAIN
        return insert_links(conn, SHARED_CHAIN, head_of(conn, SHARED_CHAIN), contents, dedupe)[0]

    def _claimed(self) -> Connection:
        if self._pid != os.getpid():  # a forked child: the parent's connection and chain are not ours
            self._conn, self.chain_id, self._pid = None, None, os.getpid()
        if self._conn is not None:
            return self._conn
        conn = self.engine.connect()
        try:
            number = 0
            while True:
                number += 1
                if conn.execute(
                    text(f"SELECT pg_try_advisory_lock({CHAIN_LOCK_CLASS}, :n)"), {"n": number}
                ).scalar_one():
                    break
            self._head = head_of(conn, number)
            conn.commit()  # the session lock outlives the transaction
        except Exception:
            conn.close()
            raise
        self._conn, self.chain_id = conn, number
        self._release = weakref.finalize(self, _close, conn)
        return conn

    def _drop(self) -> None:
        release, self._release, self._conn, self.chain_id = self._release, None, None, None
        if release is not None:
            release()

    def close(self) -> None:
        with self.lock:
            self._drop()


def _close(conn: Connection) -> None:
    """Close the chain's connection for good (not back to the pool): its session lock goes with it."""
    try:
        conn.invalidate()
    except Exception:  # noqa: BLE001 - already broken
        pass


# -- checkpoints --------------------------------------------------------------------------------------------
def chain_heads(conn: Connection) -> dict[int, Head]:
    """The head of every chain, by chain number (chains are numbered from 1 up, reused, so few)."""
    top = conn.execute(select(func.max(audit_record.c.chain_id))).scalar() or 0
    heads = {}
    for number in range(1, top + 1):
        head = head_of(conn, number)
        if head[0]:
            heads[number] = head
    return heads


def heads_content(content: dict[str, Any]) -> dict[int, Head]:
    return {int(k): (int(v["pos"]), str(v["hash"])) for k, v in content["heads"].items()}


def checkpoint_columns(content: dict[str, Any]) -> dict[str, Any]:
    return {"id": content["id"], "time": _utc(dt.datetime.fromisoformat(content["time"]))}


def last_checkpoint(conn: Connection) -> dict[int, Head] | None:
    row = conn.execute(
        select(audit_checkpoint.c.content).order_by(audit_checkpoint.c.seq.desc()).limit(1)
    ).first()
    if row is None:
        return None
    return heads_content(json.loads(row.content))


def write_checkpoint(engine: Engine, lock: threading.Lock) -> int | None:
    """Append a checkpoint of every chain head, unless none moved since the last; return its seq."""

    def work(conn: Connection) -> int | None:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": append.CHECKPOINT_LOCK})
        heads = chain_heads(conn)
        if not heads or heads == last_checkpoint(conn):
            return None
        content = {
            "id": str(uuid.uuid4()),
            "time": dt.datetime.now(dt.UTC).isoformat(),
            "heads": {str(k): {"pos": p, "hash": h} for k, (p, h) in sorted(heads.items())},
        }
        return append.append_link(
            conn,
            audit_checkpoint,
            append.CHECKPOINT_LOCK,
            hashing.canonical(content),
            checkpoint_columns(content),
        )[0]

    return append.retried(engine, lock, work)


def describe(heads: Iterable[tuple[int, Head]]) -> str:
    return ", ".join(f"chain {k} at {p}" for k, (p, _) in heads)
