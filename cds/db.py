"""The database: one SQLAlchemy engine per URL and one ``MetaData`` every table is declared on.

SQLite by default (no setup); PostgreSQL by ``CDS_DATABASE_URL``. The schema is owned by the Alembic
migrations in ``cds/migrations``; ``ensure_schema`` brings a database up to date.
"""

from __future__ import annotations

import os
import threading
from importlib.resources import files
from pathlib import Path

from sqlalchemy import MetaData, create_engine, event
from sqlalchemy.engine import Engine

metadata = MetaData()

_ENGINES: dict[str, Engine] = {}
_LOCK = threading.Lock()


def engine_for(url: str) -> Engine:
    """A shared engine for ``url``; SQLite files get their folder created, WAL mode and a busy timeout,
    and are readable by their owner only (see ``private_sqlite_file``)."""
    with _LOCK:
        engine = _ENGINES.get(url)
        if engine is not None:
            return engine
        if url.startswith("sqlite:///") and not url.startswith("sqlite:///:memory:"):
            private_sqlite_file(Path(url[len("sqlite:///"):].split("?", 1)[0]))
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


def private_folder(folder: Path) -> None:
    """Create ``folder`` and any missing parent with mode 0700 (existing folders are left as they are)."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for path in reversed(missing):
        try:
            path.mkdir(mode=0o700)
        except FileExistsError:
            pass


def private_sqlite_file(path: Path) -> None:
    """The SQLite database file exists with mode 0600, in a folder created 0700.

    SQLite creates the ``-wal`` and ``-shm`` files with the mode of the database file, so they are 0600
    too; any already there (or a database file made by an older version, 0644) are set to 0600 here.
    """
    private_folder(path.parent)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass
    for name in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        try:
            if name.stat().st_mode & 0o077:
                os.chmod(name, 0o600)
        except OSError:  # not there (yet), or not ours to change
            pass


MIGRATIONS = Path(str(files("cds.migrations")))


#: Alembic keeps the running migration's context in module globals (``alembic.context``), so two threads
#: migrating at once break each other (``KeyError: 'config'``): one migration at a time per process.
_MIGRATING = threading.Lock()


def same_database(a: Engine, b: Engine) -> bool:
    """Whether two engines reach the same database (their URLs alike but for connection options)."""
    return a.url.set(query={}) == b.url.set(query={})


def ensure_schema(engine: Engine) -> str | None:
    """Bring the database up to date by running the Alembic migrations; return the revision reached."""
    with _MIGRATING:
        return _upgrade(engine)


def _upgrade(engine: Engine) -> str | None:
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
