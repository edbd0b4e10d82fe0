"""The database: one SQLAlchemy engine per URL and one ``MetaData`` every table is declared on.

SQLite by default (no setup); PostgreSQL by ``CDS_DATABASE_URL``. The schema is owned by the Alembic
migrations in ``cds/migrations``; ``ensure_schema`` brings a database up to date.
"""

from __future__ import annotations

import threading
from pathlib import Path

from sqlalchemy import MetaData, create_engine, event
from sqlalchemy.engine import Engine

metadata = MetaData()

_ENGINES: dict[str, Engine] = {}
_LOCK = threading.Lock()


def engine_for(url: str) -> Engine:
    """A shared engine for ``url``; SQLite files get their folder created, WAL mode and a busy timeout."""
    with _LOCK:
        engine = _ENGINES.get(url)
        if engine is not None:
            return engine
        if url.startswith("sqlite:///") and not url.startswith("sqlite:///:memory:"):
            Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, pool_pre_ping=True, future=True)
        if engine.dialect.name == "sqlite":
            @event.listens_for(engine, "connect")
            def _sqlite_pragmas(conn, _record):  # pragma: no cover - exercised by every SQLite test
                cur = conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA busy_timeout=5000")
                cur.close()
        _ENGINES[url] = engine
        return engine


def ensure_schema(engine: Engine) -> None:
    """Create every declared table that is missing (replaced by Alembic migrations with the audit store)."""
    metadata.create_all(engine)
