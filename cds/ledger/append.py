"""What the audit chains share: appending a link to a chained table, storable text, poison entries.

Three tables are hash-chained by ``seq`` (``hashing.py``): ``audit_feedback``, ``audit_quarantine`` and
``audit_checkpoint``; ``audit_record`` (hook calls) is several chains (``record_chains.py``). Each link of the
first three is appended in one transaction under the chain lock of its table:
``pg_advisory_xact_lock`` on PostgreSQL, the store's process lock plus SQLite's write lock (retried when
another process appended between the read of the head and the write) on SQLite.

A *poison* entry is one the database refuses because of what it holds — a value longer than its column,
a type it cannot bind, text that does not encode, a constraint it breaks — as opposed to a database that
cannot be reached. Retrying a poison entry fails forever, so the store sets it aside (``quarantine.py``)
instead of keeping it at the head of the queue. A write path that commits several entries in one
transaction must, when that transaction fails as data, write them again one by one so that only the
poison entry is set aside.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import insert, select, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import (
    DataError,
    DBAPIError,
    IntegrityError,
    OperationalError,
    ProgrammingError,
    StatementError,
)
from sqlalchemy.sql.schema import Table

from cds.ledger import hashing

T = TypeVar("T")
SQLITE_RETRIES = 20

#: advisory-lock keys, one per chain ("cdsaudit" for the records, as before)
RECORD_LOCK = 0x6364_7361_7564_6974 % (2**63)
FEEDBACK_LOCK = RECORD_LOCK + 1
QUARANTINE_LOCK = RECORD_LOCK + 2
CHECKPOINT_LOCK = RECORD_LOCK + 3


class FeedbackRefused(ValueError):
    """A feedback item that names a card of another service or client, or suggestions the card never had
    (found when a spooled item is written): set aside, not stored as feedback."""


def storable(value: Any) -> Any:
    """A string as the indexed columns keep it: lone surrogates and NUL (which no database text column
    stores) replaced by U+FFFD. The exact value stays in the chained ``content`` (escaped)."""
    if not isinstance(value, str) or value.isascii() and "\x00" not in value:
        return value
    return "".join("\ufffd" if c == "\x00" or "\ud800" <= c <= "\udfff" else c for c in value)


def is_sqlite_race(exc: BaseException) -> bool:
    message = str(getattr(exc, "orig", exc)).lower()
    unique = "unique" in message and (".seq" in message or ".chain_pos" in message)
    return unique or "locked" in message or "busy" in message


def _sqlstate(exc: DBAPIError) -> str:
    return str(getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None) or "")


def is_poison(exc: BaseException) -> bool:
    """True when ``exc`` comes from the entry's data, False when from the database being unavailable."""
    if isinstance(exc, FeedbackRefused):
        return True
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated or isinstance(exc, OperationalError):
            return False
        if isinstance(exc, IntegrityError):
            return not is_sqlite_race(exc)
        if isinstance(exc, DataError):
            return True
        if isinstance(exc, ProgrammingError):  # a value that cannot be bound; not a missing table (42xxx)
            return not _sqlstate(exc).startswith("42")
        return False  # InterfaceError, InternalError, ...: the connection or the server
    if isinstance(exc, StatementError):  # a parameter SQLAlchemy could not process
        return True
    return isinstance(exc, (UnicodeError, ValueError, TypeError, KeyError, AttributeError, OverflowError))


def retried(engine: Engine, lock: threading.Lock, work: Callable[[Connection], T]) -> T:
    """Run ``work`` in one transaction under ``lock``; on SQLite, again when another process won a race."""
    attempts = SQLITE_RETRIES if engine.dialect.name == "sqlite" else 1
    for attempt in range(attempts):
        try:
            with lock, engine.begin() as conn:
                return work(conn)
        except (IntegrityError, OperationalError) as exc:
            if attempt + 1 >= attempts or not is_sqlite_race(exc):
                raise
    raise AssertionError("unreachable")


def append_link(
    conn: Connection, table: Table, lock_key: int, content_json: str, columns: dict[str, Any]
) -> tuple[int, str]:
    """Insert the next link of ``table``'s chain; return its (seq, hash)."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": lock_key})
    head = conn.execute(
        select(table.c.seq, table.c.hash)
        .where(table.c.seq.is_not(None))
        .order_by(table.c.seq.desc())
        .limit(1)
    ).first()
    seq, prev = (head.seq + 1, head.hash) if head else (1, hashing.GENESIS)
    digest = hashing.link_hash(prev, content_json)
    conn.execute(insert(table).values(seq=seq, content=content_json, prev_hash=prev, hash=digest, **columns))
    return seq, digest
