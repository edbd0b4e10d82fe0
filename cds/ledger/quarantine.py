"""The quarantine: audit entries the database refused as data, set aside so that the rest are written.

An entry whose write fails with a data error (``append.is_poison``: a value too long for its column, a
value that cannot be bound or encoded, a broken constraint; never a connection error) becomes one row of
``audit_quarantine``, itself a hash chain: ``content`` holds the entry as escaped ASCII JSON (it always
stores), the reason and the time. If even that row cannot be written as data, the spool keeps the entry
as a ``.poison`` file beside its other files. Both are counted in ``/health`` (``quarantined``) and in
``/metrics`` (``cds_audit_quarantined_entries``) and shown by ``cds audit drain``.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import uuid
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from cds.ledger import append, hashing
from cds.ledger.schema import audit_quarantine

REASON_CHARS = 300


def reason_of(exc: BaseException) -> str:
    """One line: the error class and the database's first line (never the values: SQL parameters are not
    part of ``orig``)."""
    detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return f"{type(exc).__name__}: {detail[0] if detail else ''}"[:REASON_CHARS]


def content_of(entry: dict[str, Any], reason: str, now: dt.datetime | None = None) -> dict[str, Any]:
    kind = entry.get("kind") if isinstance(entry, dict) else None
    return {
        "id": str(uuid.uuid4()),
        "time": (now or dt.datetime.now(dt.UTC)).isoformat(),
        "kind": kind if kind in ("call", "feedback") else "other",
        "reason": reason,
        "entry": json.dumps(entry, sort_keys=True, ensure_ascii=True, default=str),
    }


def columns(content: dict[str, Any]) -> dict[str, Any]:
    """The ``audit_quarantine`` columns, derived from the chained content."""
    when = dt.datetime.fromisoformat(content["time"])
    return {
        "id": content["id"],
        "time": when.replace(tzinfo=dt.UTC) if when.tzinfo is None else when.astimezone(dt.UTC),
        "kind": content["kind"],
        "reason": append.storable(content["reason"]),
    }


def add(engine: Engine, lock: threading.Lock, entry: dict[str, Any], exc: BaseException) -> int:
    """Set ``entry`` aside; returns its quarantine ``seq``. Raises what the database raises."""
    content = content_of(entry, reason_of(exc))
    content_json = hashing.canonical(content)
    return append.retried(
        engine,
        lock,
        lambda conn: append.append_link(
            conn, audit_quarantine, append.QUARANTINE_LOCK, content_json, columns(content)
        )[0],
    )


def count(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(audit_quarantine)).scalar_one()


def entries(engine: Engine, *, limit: int | None = None, offset: int = 0) -> list[dict[str, Any]]:
    """Quarantined entries, oldest first: seq, time, kind, reason and the entry itself."""
    with engine.connect() as conn:
        query = select(audit_quarantine).order_by(audit_quarantine.c.seq).offset(max(0, offset))
        rows = conn.execute(query.limit(limit) if limit else query).all()
    out = []
    for r in rows:
        content = json.loads(r.content)
        out.append({"seq": r.seq, "time": columns(content)["time"].isoformat(), "kind": r.kind,
                    "reason": r.reason, "entry": json.loads(content["entry"])})
    return out
