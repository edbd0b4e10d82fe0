"""The Redis replay store (cds/auth/jti_redis.py) against the real Redis: first use wins, a replay is
refused, the key lives as long as the token, processes racing on one token id let exactly one win, and a
Redis that is down or hangs is an ``AuthUnavailable`` after the configured deadline, not a hang."""

from __future__ import annotations

import datetime as dt
import hashlib
import multiprocessing
import time
import uuid

import pytest
from redis_support import SilentServer, closed_port, wait_for

from cds.auth.jti_redis import RedisJtiStore
from cds.auth.jti_store import FileJtiStore, jti_key
from cds.errors import AuthUnavailable, ConfigurationError

ISS = "https://ehr.example.org"


def later(seconds: float) -> dt.datetime:
    return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)


def store_on(redis_db, **kwargs) -> RedisJtiStore:
    return RedisJtiStore.from_url(redis_db.url, timeout=5.0, prefix=redis_db.prefix, **kwargs)


def test_first_use_wins_and_a_replay_is_refused(redis_db):
    store = store_on(redis_db)
    jti = str(uuid.uuid4())
    assert store.remember(ISS, jti, later(300)) is True
    assert store.remember(ISS, jti, later(300)) is False
    assert store.remember(ISS, jti, later(300)) is False
    assert store.remember("https://other.example.org", jti, later(300)) is True  # another issuer's id
    assert store.remember(ISS, str(uuid.uuid4()), later(300)) is True


def test_the_key_is_the_hash_of_issuer_and_token_id_and_lives_until_expiry(redis_db):
    store = store_on(redis_db)
    jti = "token-id-" + uuid.uuid4().hex
    assert store.remember(ISS, jti, later(120))
    digest = hashlib.sha256(f"{ISS}\0{jti}".encode()).hexdigest()
    assert digest == jti_key(ISS, jti)  # the same derivation as the database store
    assert redis_db.keys() == [redis_db.prefix + digest]
    assert jti not in redis_db.keys()[0] and ISS not in redis_db.keys()[0]
    assert redis_db.client.get(redis_db.prefix + digest) == b"1"
    ttl = redis_db.client.pttl(redis_db.prefix + digest)
    assert 100_000 < ttl <= 120_000


def test_an_expired_key_is_gone_and_its_token_id_may_be_used_again(redis_db):
    store = store_on(redis_db)
    jti = str(uuid.uuid4())
    assert store.remember(ISS, jti, later(3.0))
    assert not store.remember(ISS, jti, later(3.0))
    assert 0 < redis_db.client.pttl(store.key(ISS, jti)) <= 3000
    wait_for("Redis to expire the key", lambda: not redis_db.client.exists(store.key(ISS, jti)))
    assert store.remember(ISS, jti, later(300)) is True
    assert store.remember(ISS, jti, later(300)) is False


def test_prefixes_keep_stores_apart(redis_db):
    jti = str(uuid.uuid4())
    assert store_on(redis_db).remember(ISS, jti, later(60))
    other = RedisJtiStore.from_url(redis_db.url, timeout=5.0, prefix=redis_db.prefix + "other:")
    assert other.remember(ISS, jti, later(60))  # a different prefix is a different store
    assert not store_on(redis_db).remember(ISS, jti, later(60))


def _race_in_child(url: str, prefix: str, jtis: list[str], start, results) -> None:
    store = RedisJtiStore.from_url(url, timeout=10.0, prefix=prefix)
    start.wait(timeout=60)
    won = [jti for jti in jtis if store.remember(ISS, jti, later(300))]
    results.put(won)
    store.close()


@pytest.mark.slow
def test_processes_racing_on_the_same_token_ids_let_exactly_one_win_each(redis_db):
    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Event(), ctx.Queue()
    jtis = [str(uuid.uuid4()) for _ in range(200)]
    processes = 6
    args = (redis_db.url, redis_db.prefix, jtis, start, results)
    children = [ctx.Process(target=_race_in_child, args=args) for _ in range(processes)]
    for child in children:
        child.start()
    start.set()
    wins = [results.get(timeout=120) for _ in children]
    for child in children:
        child.join(timeout=60)
        assert child.exitcode == 0
    every_win = [jti for won in wins for jti in won]
    assert sorted(every_win) == sorted(jtis)  # each token id won once, by one process only
    assert len(redis_db.keys()) == len(jtis)


def test_redis_on_a_closed_port_is_unavailable(caplog):
    store = RedisJtiStore.from_url(f"redis://:pw-not-for-logs@127.0.0.1:{closed_port()}/0", timeout=5.0)
    with pytest.raises(AuthUnavailable, match="replay"):
        store.remember(ISS, str(uuid.uuid4()), later(60))
    assert store.health() == {"ok": False, "store": "redis", "state": "unavailable"}
    assert "replay store unavailable: ConnectionError" in caplog.text
    assert "pw-not-for-logs" not in caplog.text


def test_a_redis_that_accepts_and_never_answers_is_unavailable_after_the_deadline():
    silent = SilentServer()
    try:
        store = RedisJtiStore.from_url(f"redis://127.0.0.1:{silent.port}/0", timeout=0.5)
        started = time.monotonic()
        with pytest.raises(AuthUnavailable):
            store.remember(ISS, str(uuid.uuid4()), later(60))
        waited = time.monotonic() - started
        wait_for("the silent server to have accepted the connection", lambda: bool(silent.accepted))
        # one deadline, not one per retry: far below what retries with back-off would take
        assert waited < 30, waited
        assert store.health()["state"] == "unavailable"
    finally:
        silent.close()


def test_fallback_takes_keys_while_redis_is_down_and_pushes_them_when_it_is_back(redis_db, tmp_path):
    fallback = FileJtiStore(tmp_path / "fallback")
    down = RedisJtiStore.from_url(f"redis://127.0.0.1:{closed_port()}/0", timeout=5.0, fallback=fallback,
                                  prefix=redis_db.prefix)
    jti = str(uuid.uuid4())
    assert down.remember(ISS, jti, later(300)) is True  # into the same-host store
    assert down.remember(ISS, jti, later(300)) is False
    assert fallback.count() == 1 and redis_db.keys() == []
    back = store_on(redis_db, fallback=fallback)  # the same host, Redis answering again
    assert back.remember(ISS, str(uuid.uuid4()), later(300)) is True
    assert fallback.count() == 0  # pushed to Redis on the first command that worked
    assert redis_db.prefix + jti_key(ISS, jti) in redis_db.keys()
    assert back.remember(ISS, jti, later(300)) is False
    assert store_on(redis_db).remember(ISS, jti, later(300)) is False  # and another host knows it


def test_a_key_only_in_the_fallback_is_still_a_replay(redis_db, tmp_path):
    fallback = FileJtiStore(tmp_path / "fallback")
    jti = str(uuid.uuid4())
    assert fallback.remember(jti_key(ISS, jti), later(300), dt.datetime.now(dt.UTC))
    store = store_on(redis_db, fallback=fallback, absorb_interval=3600)
    store._last_absorb = time.time()  # no absorb due: the key stays in the fallback only
    assert store.remember(ISS, jti, later(300)) is False
    assert fallback.count() == 1


def test_expired_fallback_keys_are_dropped_not_pushed(redis_db, tmp_path):
    fallback = FileJtiStore(tmp_path / "fallback")
    now = dt.datetime.now(dt.UTC)
    expired = now - dt.timedelta(seconds=1)
    assert fallback.remember(jti_key(ISS, "old"), expired, now - dt.timedelta(seconds=9))
    assert store_on(redis_db, fallback=fallback).absorb_fallback() == 0
    assert fallback.count() == 0 and redis_db.keys() == []


@pytest.mark.parametrize("url, message", [
    ("http://127.0.0.1:6379/0", "CDS_REPLAY_REDIS_URL: not a redis://"),
    ("redis://:secret-pw@127.0.0.1:6379/not-a-number", "CDS_REPLAY_REDIS_URL: the path must be a database"),
    ("redis://:secret-pw@127.0.0.1:no-port/0", "CDS_REPLAY_REDIS_URL: not a usable Redis URL"),
])
def test_a_bad_url_is_a_configuration_error_that_does_not_echo_it(url, message):
    with pytest.raises(ConfigurationError) as caught:
        RedisJtiStore.from_url(url, timeout=1.0)
    assert message in str(caught.value) and "secret-pw" not in str(caught.value)


def test_a_timeout_of_zero_is_refused():
    with pytest.raises(ConfigurationError, match="CDS_REPLAY_REDIS_TIMEOUT_SECONDS"):
        RedisJtiStore.from_url("redis://127.0.0.1:6379/0", timeout=0)
