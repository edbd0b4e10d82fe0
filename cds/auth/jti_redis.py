"""The token-id store in Redis (a ``cds.auth.jti_store.TokenIdStore``), used instead of the database's
``seen_jti`` table when ``CDS_REPLAY_REDIS_URL`` is set.

Each accepted token id becomes one key, ``<CDS_REPLAY_REDIS_PREFIX><sha256(iss + "\\0" + jti)>`` (the same
key derivation as the database store: no client-chosen string is stored), written with
``SET key 1 NX PX <milliseconds until the token's expiry plus leeway>``. ``NX`` makes "first use wins"
atomic across every process and replica using the same Redis; ``PX`` lets Redis drop the key when the
token could no longer pass the ``exp`` check anyway, so nothing needs purging.

Every command has a short deadline (``CDS_REPLAY_REDIS_TIMEOUT_SECONDS``, for connecting and for the
answer) and is never sent again after a timeout (only once after a refused or dropped connection): a
Redis that refuses connections or accepts them and never answers costs a call that long at most, then
counts as unavailable. Connections come from one bounded pool per process (a call
waits for a free one no longer than the same deadline). While Redis is unavailable the store behaves as
the database store does while the database is: a 503 (``AuthUnavailable``) by default, or with
``CDS_REPLAY_FALLBACK=host`` the same-host file store (``FileJtiStore``), whose keys are pushed to Redis
(``SET NX`` with their remaining lifetime) as soon as Redis answers again, and about once a minute after.
The log names Redis by host, port and database number only, never the URL (it may carry a password).
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from cds.auth.jti_store import FileJtiStore, jti_key, take_during_outage
from cds.errors import ConfigurationError
from cds.settings import default as setting_default

log = logging.getLogger("cds.auth")

ABSORB_INTERVAL_SECONDS = 60.0
DEFAULT_PREFIX = setting_default("REPLAY_REDIS_PREFIX")
MIN_POOL = 8


def redis_client(url: str, *, timeout: float, max_connections: int) -> redis.Redis:
    """A client on a bounded, blocking pool: ``timeout`` seconds to connect, for each answer and for a
    free connection. A command is sent again once, at once, on a refused or dropped connection (a pooled
    connection Redis closed while idle or across a restart), never after a timeout (that would multiply
    the time a call waits on a Redis that hangs)."""
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigurationError("setting CDS_REPLAY_REDIS_URL: not a redis://, rediss:// or unix:// URL")
    database = urlsplit(url).path.strip("/")
    if not url.startswith("unix://") and database and not database.isdigit():
        raise ConfigurationError("setting CDS_REPLAY_REDIS_URL: the path must be a database number "
                                 "(redis://host:port/0)")
    if timeout <= 0:
        raise ConfigurationError("setting CDS_REPLAY_REDIS_TIMEOUT_SECONDS must be greater than 0")
    try:
        pool = redis.BlockingConnectionPool.from_url(
            url, max_connections=max_connections, timeout=timeout, socket_timeout=timeout,
            socket_connect_timeout=timeout, health_check_interval=0,
            retry=Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)))
    except ValueError as exc:  # never echo the URL: it may hold a password
        raise ConfigurationError("setting CDS_REPLAY_REDIS_URL: not a usable Redis URL") from exc
    return redis.Redis(connection_pool=pool)


def describe(client: redis.Redis) -> str:
    """Where the client connects, for the log: host, port and database number (no user or password)."""
    kwargs = client.connection_pool.connection_kwargs
    where = kwargs.get("path") or f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}"
    return f"redis {where} db {kwargs.get('db', 0)}"


class RedisJtiStore:
    """The ``TokenIdStore`` in Redis: ``remember(iss, jti, expires_at)`` is True the first time a pair is
    seen, False on a replay; the first ``SET NX`` wins, whichever process or replica sends it."""

    def __init__(self, client: redis.Redis, *, prefix: str = DEFAULT_PREFIX,
                 fallback: FileJtiStore | None = None, clock: Callable[[], float] = time.time,
                 absorb_interval: float = ABSORB_INTERVAL_SECONDS):
        self.client = client
        self.prefix = prefix
        self.fallback = fallback
        self.clock = clock
        self.absorb_interval = absorb_interval
        self.where = describe(client)
        self._lock = threading.Lock()
        self._last_absorb = 0.0
        self._down = False  # the last command failed: absorb the fallback on the next success

    @classmethod
    def from_url(cls, url: str, *, timeout: float, max_connections: int = MIN_POOL,
                 **kwargs: Any) -> RedisJtiStore:
        return cls(redis_client(url, timeout=timeout, max_connections=max_connections), **kwargs)

    def key(self, iss: str, jti: str) -> str:
        return self.prefix + jti_key(iss, jti)

    def remember(self, iss: str, jti: str, expires_at: dt.datetime) -> bool:
        key = jti_key(iss, jti)
        now = dt.datetime.fromtimestamp(self.clock(), dt.UTC)
        try:
            first = self._set_nx(key, expires_at, now)
        except redis.RedisError as exc:
            return self._unavailable(exc, key, expires_at, now)
        self._recovered(now)
        if not first:
            return False
        return not self._in_fallback(key, now)

    def _set_nx(self, key: str, expires_at: dt.datetime, now: dt.datetime) -> bool:
        millis = max(1, math.ceil((expires_at - now).total_seconds() * 1000))
        return bool(self.client.set(self.prefix + key, b"1", nx=True, px=millis))

    def _unavailable(self, exc: redis.RedisError, key: str, expires_at: dt.datetime,
                     now: dt.datetime) -> bool:
        self._down = True
        return take_during_outage(self.fallback, exc, self.where, key, expires_at, now)

    def _in_fallback(self, key: str, now: dt.datetime) -> bool:
        """A key first seen during an outage, not yet pushed to Redis, is in the fallback only: a replay."""
        return self.fallback is not None and self.fallback.holds(key, now)

    def _recovered(self, now: dt.datetime) -> None:
        if self.fallback is None:
            return
        with self._lock:
            due = self._down or self.clock() - self._last_absorb >= self.absorb_interval
            if not due:
                return
            self._down = False
            self._last_absorb = self.clock()
        try:
            pushed = self.absorb_fallback(now)
        except redis.RedisError as exc:
            self._down = True
            log.warning("replay store: fallback keys not pushed to %s yet (%s)", self.where,
                        type(exc).__name__)
            return
        if pushed:
            log.info("replay store: %d token id(s) taken during the outage pushed to %s", pushed, self.where)

    def absorb_fallback(self, now: dt.datetime | None = None) -> int:
        """Push the keys the fallback took during an outage to Redis (``SET NX``, their remaining
        lifetime), then drop them from it; expired ones are only dropped. Returns how many were pushed."""
        if self.fallback is None:
            return 0
        now = now or dt.datetime.fromtimestamp(self.clock(), dt.UTC)

        def put(key: str, expiry: dt.datetime) -> None:  # raises while Redis is still away: the file stays
            self._set_nx(key, expiry, now)

        return self.fallback.move_to(put, now)

    def health(self) -> dict[str, Any]:
        """The token-id store's state for ``/health``: ``ok`` when Redis answers a PING in time."""
        try:
            self.client.ping()
            state = "ok"
        except redis.RedisError:
            state = "unavailable"
            self._down = True
        part: dict[str, Any] = {"ok": state == "ok", "store": "redis", "state": state}
        if self.fallback is not None:
            if state == "ok":
                self._recovered(dt.datetime.fromtimestamp(self.clock(), dt.UTC))
            part["fallbackKeys"] = self.fallback.count()
        return part

    def close(self) -> None:
        self.client.connection_pool.disconnect()
