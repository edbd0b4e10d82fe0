"""Migrations run from several threads of one process at once (the replay store's first use in each request
thread or audit writer, several stores on one database) all succeed: Alembic keeps the running migration in
module globals, so ``cds.db.ensure_schema`` runs one at a time per process. Before, such threads failed with
``KeyError: 'config'``."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import create_engine, inspect

from cds.db import ensure_schema


def _race(url: str, threads: int = 6) -> list[str]:
    engines = [create_engine(url) for _ in range(threads)]
    start = threading.Barrier(threads)
    failures: list[str] = []
    revisions: list[str | None] = []

    def migrate(engine) -> None:
        start.wait(timeout=60)
        try:
            revisions.append(ensure_schema(engine))
        except Exception as exc:  # noqa: BLE001 - what the test looks for
            failures.append(f"{type(exc).__name__}: {exc}")

    workers = [threading.Thread(target=migrate, args=(e,)) for e in engines]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
    assert len(set(revisions)) <= 1, revisions
    assert "seen_jti" in inspect(engines[0]).get_table_names()
    for engine in engines:
        engine.dispose()
    return failures


@pytest.mark.parametrize("migrated_first", [False, True])
def test_threads_migrating_one_sqlite_database_at_once(tmp_path, migrated_first):
    url = f"sqlite:///{tmp_path}/cds.sqlite3"
    if migrated_first:  # as the audit store does at start-up, before the replay store's first use
        ensure_schema(create_engine(url))
    for _ in range(3):
        assert _race(url) == []


@pytest.mark.postgres
def test_threads_migrating_one_postgres_schema_at_once(pg_base_url):
    for _ in range(3):
        assert _race(pg_base_url) == []
