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


MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def ensure_schema(engine: Engine) -> str | None:
    """Bring the database up to date by running the Alembic migrations; return the revision reached."""
    from alembic import command
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":  # one migrating process at a time
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7301983200001)")
        config.attributes["connection"] = conn
        command.upgrade(config, "head")
        return MigrationContext.configure(conn).get_current_revision()
