"""Replay protection in Redis (``CDS_REPLAY_REDIS_URL``) over real HTTP: replicas sharing one Redis refuse
each other's replays; a Redis that is down, cut off under the replicas, or accepts connections and never
answers turns the call into a 503 OperationOutcome (fail closed) rather than a hang or an unchecked token;
``CDS_REPLAY_FALLBACK=host`` keeps calls going on a same-host store whose keys reach Redis once it is back;
``/health`` reports the replay store's state; the Redis URL's password never reaches the log."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pytest
import requests
from redis_support import RedisProxy, SilentServer, closed_port, redis_target
from sqlalchemy import inspect, select
from support import make_token

from cds import create_app
from cds.auth.jti_store import jti_key, seen_jti
from cds.db import engine_for

PUBLIC = "https://cds.example.org"  # both replicas answer to it, as behind one load balancer
DISCOVERY = PUBLIC + "/cds-services"
HTTP_TIMEOUT = 60  # generous: the machine is loaded; the point is that the answer comes, not how fast


@pytest.fixture
def ram_folder():
    folder = Path("/dev/shm") / f"cds-test-jti-{uuid.uuid4().hex}"
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def replicas(auth_config, tmp_path, live_server, n: int = 2, **config) -> list[str]:
    """``n`` app instances, each on its own port, own database and own spool, behind one public URL."""
    bases = []
    for i in range(n):
        app = create_app({**auth_config, "PUBLIC_URL": PUBLIC,
                          "DATABASE_URL": f"sqlite:///{tmp_path}/db-{i}.sqlite3",
                          "AUDIT_SPOOL_DIR": str(tmp_path / f"spool-{i}"), **config})
        bases.append(live_server(app))
    return bases


def discover(base: str, token: str) -> requests.Response:
    return requests.get(base + "/cds-services", headers={"Authorization": f"Bearer {token}"},
                        timeout=HTTP_TIMEOUT)


def assert_unavailable(response: requests.Response) -> None:
    assert response.status_code == 503, response.text
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["code"] == "transient" and "replay" in body["issue"][0]["diagnostics"]
    assert "Traceback" not in response.text


def test_replicas_on_one_redis_refuse_each_others_replays(auth_config, tmp_path, live_server, redis_db):
    first, second = replicas(auth_config, tmp_path, live_server, REPLAY_REDIS_URL=redis_db.url,
                             REPLAY_REDIS_PREFIX=redis_db.prefix)
    token = make_token(DISCOVERY)
    assert discover(first, token).status_code == 200
    assert discover(second, token).status_code == 401
    assert discover(first, token).status_code == 401
    other = make_token(DISCOVERY)
    assert discover(second, other).status_code == 200
    assert discover(first, other).status_code == 401
    assert len(redis_db.keys()) == 2
    for i in (0, 1):  # the database's table is not used
        engine = engine_for(f"sqlite:///{tmp_path}/db-{i}.sqlite3")
        if inspect(engine).has_table("seen_jti"):
            with engine.connect() as conn:
                assert list(conn.execute(select(seen_jti))) == []
        engine.dispose()
    health = requests.get(first + "/health", timeout=HTTP_TIMEOUT).json()
    assert health["replay"] == {"store": "redis", "state": "ok"}


def test_redis_on_a_closed_port_is_503_on_every_replica(auth_config, tmp_path, live_server, caplog):
    url = f"redis://:pw-never-logged@127.0.0.1:{closed_port()}/0"
    bases = replicas(auth_config, tmp_path, live_server, REPLAY_REDIS_URL=url)
    token = make_token(DISCOVERY)
    for base in (*bases, bases[0]):
        assert_unavailable(discover(base, token))
    health = requests.get(bases[0] + "/health", timeout=HTTP_TIMEOUT).json()
    assert health["status"] == "degraded"
    assert health["replay"] == {"store": "redis", "state": "unavailable"}
    assert "replay store unavailable: ConnectionError" in caplog.text
    assert "pw-never-logged" not in caplog.text and token not in caplog.text


def test_a_redis_that_accepts_and_never_answers_is_503_not_a_hang(auth_config, tmp_path, live_server):
    silent = SilentServer()
    try:
        (base,) = replicas(auth_config, tmp_path, live_server, n=1,
                           REPLAY_REDIS_URL=f"redis://127.0.0.1:{silent.port}/0",
                           REPLAY_REDIS_TIMEOUT_SECONDS=0.5)
        for _ in range(3):  # a fresh connection each time, and a pooled one stuck behind no answer
            assert_unavailable(discover(base, make_token(DISCOVERY)))
        assert silent.accepted
        assert requests.get(base + "/health", timeout=HTTP_TIMEOUT).json()["replay"]["state"] == "unavailable"
    finally:
        silent.close()


def test_redis_cut_off_under_two_replicas_fails_closed_then_recovers(auth_config, tmp_path, live_server,
                                                                     redis_db):
    target, db = redis_target(redis_db.url)
    proxy = RedisProxy(target)
    try:
        first, second = replicas(auth_config, tmp_path, live_server, REPLAY_REDIS_URL=proxy.url(db),
                                 REPLAY_REDIS_PREFIX=redis_db.prefix)
        before = make_token(DISCOVERY)
        assert discover(first, before).status_code == 200
        assert discover(second, before).status_code == 401
        proxy.stop()  # Redis is gone for both
        during = make_token(DISCOVERY)
        for base in (first, second):
            assert_unavailable(discover(base, during))
        assert discover(first, before).status_code == 503  # never a 200 to a replayed token either
        proxy.start()
        assert discover(second, during).status_code == 200  # not accepted before: good once
        assert discover(first, during).status_code == 401
        assert discover(first, before).status_code == 401  # still known after the outage
    finally:
        proxy.stop()


def test_host_fallback_keeps_calls_going_and_its_keys_reach_redis_when_it_is_back(
        auth_config, tmp_path, live_server, redis_db, ram_folder):
    target, db = redis_target(redis_db.url)
    proxy = RedisProxy(target)
    other_folder = Path(f"{ram_folder}-other")
    try:
        first, second = (
            live_server(create_app({
                **auth_config, "PUBLIC_URL": PUBLIC, "DATABASE_URL": f"sqlite:///{tmp_path}/db-{i}.sqlite3",
                "AUDIT_SPOOL_DIR": str(tmp_path / f"spool-{i}"), "REPLAY_REDIS_URL": proxy.url(db),
                "REPLAY_REDIS_PREFIX": redis_db.prefix, "REPLAY_FALLBACK": "host",
                "REPLAY_FALLBACK_DIR": str(folder)}))
            for i, folder in ((0, ram_folder), (1, other_folder)))  # two hosts: a folder each
        proxy.stop()
        during = make_token(DISCOVERY)
        assert discover(first, during).status_code == 200  # accepted, checked against this host's store
        assert discover(first, during).status_code == 401  # a replay on the same host is refused
        assert len(list(ram_folder.iterdir())) == 1 and redis_db.keys() == []
        health = requests.get(first + "/health", timeout=HTTP_TIMEOUT).json()
        assert health["status"] == "degraded"
        assert health["replay"] == {"store": "redis", "state": "unavailable", "fallbackKeys": 1}
        proxy.start()
        assert discover(first, make_token(DISCOVERY)).status_code == 200  # Redis answers: keys pushed
        assert redis_db.prefix + jti_key_of(during) in redis_db.keys()
        assert list(ram_folder.iterdir()) == []
        assert discover(second, during).status_code == 401  # the other host now knows it too
        assert requests.get(first + "/health", timeout=HTTP_TIMEOUT).json()["replay"] == {
            "store": "redis", "state": "ok", "fallbackKeys": 0}
    finally:
        proxy.stop()
        shutil.rmtree(other_folder, ignore_errors=True)


def jti_key_of(token: str) -> str:
    import jwt

    claims = jwt.decode(token, options={"verify_signature": False})
    return jti_key(claims["iss"], claims["jti"])


def test_the_database_store_reports_its_state_too(auth_config, tmp_path, live_server):
    (base,) = replicas(auth_config, tmp_path, live_server, n=1)
    health = requests.get(base + "/health", timeout=HTTP_TIMEOUT).json()
    assert health["replay"] == {"store": "database", "state": "ok"}
    token = make_token(DISCOVERY)
    assert discover(base, token).status_code == 200
    assert discover(base, token).status_code == 401
    engine = engine_for(f"sqlite:///{tmp_path}/db-0.sqlite3")
    with engine.connect() as conn:
        assert list(conn.execute(select(seen_jti.c.jti_key))) == [(jti_key_of(token),)]
