"""A token id (jti) is good for one call, across app instances and processes sharing the database."""

from __future__ import annotations

import datetime as dt
import multiprocessing
import os
import uuid

import pytest
from sqlalchemy import select
from support import make_token

from cds import create_app
from cds.auth.jti_store import FileJtiStore, JtiStore, jti_key, seen_jti
from cds.db import engine_for

PG_URL = os.environ.get("CDS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
DISCOVERY = "http://localhost/cds-services"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def pg(pg_base_url):
    """The session's own PostgreSQL schema (skips, saying why, when PostgreSQL is unreachable)."""
    yield pg_base_url
    engine_for(pg_base_url).dispose()


def _two_apps_share_replay_protection(auth_config, url: str) -> None:
    first = create_app({**auth_config, "DATABASE_URL": url}).test_client()
    second = create_app({**auth_config, "DATABASE_URL": url}).test_client()
    token = make_token(DISCOVERY)
    assert first.get("/cds-services", headers=bearer(token)).status_code == 200
    assert second.get("/cds-services", headers=bearer(token)).status_code == 401
    other = make_token(DISCOVERY)
    assert second.get("/cds-services", headers=bearer(other)).status_code == 200
    assert first.get("/cds-services", headers=bearer(other)).status_code == 401


def test_two_apps_on_one_sqlite_file_share_replay_protection(auth_config, tmp_path):
    _two_apps_share_replay_protection(auth_config, f"sqlite:///{tmp_path}/shared.sqlite3")


@pytest.mark.postgres
def test_two_apps_on_one_postgres_database_share_replay_protection(auth_config, pg):
    _two_apps_share_replay_protection(auth_config, pg)


def _remember_in_child(url: str, iss: str, jti: str, start, results) -> None:
    store = JtiStore.from_url(url)
    start.wait(timeout=30)
    expires = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)
    results.put(store.remember(iss, jti, expires))
    store.engine.dispose()


def _race(url: str, processes: int = 4) -> list[bool]:
    JtiStore.from_url(url).purge()  # creates the table before the race
    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Event(), ctx.Queue()
    jti = str(uuid.uuid4())
    args = (url, "https://ehr.example.org", jti, start, results)
    children = [ctx.Process(target=_remember_in_child, args=args) for _ in range(processes)]
    for child in children:
        child.start()
    start.set()
    outcomes = [results.get(timeout=60) for _ in children]
    for child in children:
        child.join(timeout=30)
        assert child.exitcode == 0
    return outcomes


@pytest.mark.slow
def test_processes_racing_on_one_jti_let_exactly_one_win_sqlite(tmp_path):
    outcomes = _race(f"sqlite:///{tmp_path}/race.sqlite3")
    assert sorted(outcomes) == [False, False, False, True]


@pytest.mark.postgres
@pytest.mark.slow
def test_processes_racing_on_one_jti_let_exactly_one_win_postgres(pg):
    outcomes = _race(pg)
    assert sorted(outcomes) == [False, False, False, True]


def test_store_keeps_a_hash_until_expiry_then_purges(tmp_path):
    now = [1_000_000.0]
    store = JtiStore.from_url(f"sqlite:///{tmp_path}/jti.sqlite3", clock=lambda: now[0], purge_interval=3600)
    at = dt.datetime.fromtimestamp(now[0], dt.UTC)
    assert store.remember("iss-a", "id-1", at + dt.timedelta(seconds=60)) is True
    assert store.remember("iss-a", "id-1", at + dt.timedelta(seconds=60)) is False
    assert store.remember("iss-b", "id-1", at + dt.timedelta(seconds=60)) is True
    with store.engine.connect() as conn:
        keys = set(conn.execute(select(seen_jti.c.jti_key)).scalars())
    assert keys == {jti_key("iss-a", "id-1"), jti_key("iss-b", "id-1")}
    assert all(len(k) == 64 and "id-1" not in k for k in keys)  # only hashes are stored
    now[0] += 61  # both rows have expired
    # an expired row does not block its key
    assert store.remember("iss-a", "id-1", at + dt.timedelta(seconds=200)) is True
    assert store.purge() == 1  # the other expired row
    with store.engine.connect() as conn:
        assert list(conn.execute(select(seen_jti.c.jti_key)).scalars()) == [jti_key("iss-a", "id-1")]


@pytest.fixture
def ram_folder():
    """A folder on the RAM disk, off the disk of the audit spool (which is under tmp_path)."""
    import shutil
    from pathlib import Path

    folder = Path("/dev/shm") / f"cds-test-jti-{uuid.uuid4().hex}"
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_database_down_falls_back_to_the_same_host_store_and_still_refuses_replays(auth_config, tmp_path,
                                                                                   ram_folder):
    app = create_app({**auth_config, "DATABASE_URL": "postgresql+psycopg://nobody@127.0.0.1:1/none",
                      "AUDIT_SPOOL_DIR": str(tmp_path / "spool"), "REPLAY_FALLBACK": "host",
                      "REPLAY_FALLBACK_DIR": str(ram_folder)})
    token = make_token(DISCOVERY)
    assert app.test_client().get("/cds-services", headers=bearer(token)).status_code == 200
    assert app.test_client().get("/cds-services", headers=bearer(token)).status_code == 401
    assert len(list(ram_folder.iterdir())) == 1


def test_fallback_keys_go_into_the_database_when_it_is_back(tmp_path):
    fallback = FileJtiStore(tmp_path / "fallback")
    at = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)
    assert fallback.remember(jti_key("iss", "during-outage"), at, dt.datetime.now(dt.UTC))
    store = JtiStore.from_url(f"sqlite:///{tmp_path}/jti.sqlite3", fallback=fallback)
    assert not store.remember("iss", "during-outage", at)  # seen during the outage: a replay
    store.purge()
    assert list((tmp_path / "fallback").iterdir()) == []
    assert not store.remember("iss", "during-outage", at)  # now known to the database itself


def test_database_and_fallback_both_down_is_503(auth_config, tmp_path, ram_folder):
    app = create_app({**auth_config, "DATABASE_URL": "postgresql+psycopg://nobody@127.0.0.1:1/none",
                      "AUDIT_SPOOL_DIR": str(tmp_path / "spool"), "REPLAY_FALLBACK": "host",
                      "REPLAY_FALLBACK_DIR": str(ram_folder)})
    ram_folder.rmdir()
    ram_folder.write_text("a file where the fallback folder would be")
    response = app.test_client().get("/cds-services", headers=bearer(make_token(DISCOVERY)))
    assert response.status_code == 503
    assert response.get_json()["issue"][0]["code"] == "transient"


def test_expired_rows_are_purged_now_and_then_without_being_asked(tmp_path):
    now = [1_000_000.0]
    store = JtiStore.from_url(f"sqlite:///{tmp_path}/jti.sqlite3", clock=lambda: now[0], purge_interval=60)
    at = dt.datetime.fromtimestamp(now[0], dt.UTC)
    for n in range(5):
        assert store.remember("iss", f"old-{n}", at + dt.timedelta(seconds=10))
    now[0] += 30  # expired, but the last purge was only 30 s ago
    assert store.remember("iss", "new-1", at + dt.timedelta(seconds=300))
    with store.engine.connect() as conn:
        assert len(list(conn.execute(select(seen_jti.c.jti_key)))) == 6
    now[0] += 31
    assert store.remember("iss", "new-2", at + dt.timedelta(seconds=300))
    with store.engine.connect() as conn:
        assert set(conn.execute(select(seen_jti.c.jti_key)).scalars()) == {jti_key("iss", "new-1"),
                                                                          jti_key("iss", "new-2")}
