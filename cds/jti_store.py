"""Replay protection: every token id (``jti``) a trusted client used, kept until its token expires.

One row per ``(iss, jti)`` in the ``seen_jti`` table, keyed by ``sha256(iss + "\\0" + jti)`` so the
store neither holds client-chosen strings nor needs a length limit on them. Inserting a key that is
already there fails on the primary key, which makes "first use wins" atomic across every process and
host sharing the database. Expired rows are purged now and then; a key whose row has expired may be
used again (its token can no longer pass the ``exp`` check anyway).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import threading
import time
from collections.abc import Callable

from sqlalchemy import Column, DateTime, String, Table, delete, insert
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from . import db
from .errors import AuthUnavailable

log = logging.getLogger("cds.auth")

seen_jti = Table(
    "seen_jti",
    db.metadata,
    Column("jti_key", String(128), primary_key=True),
    Column("expires_at", DateTime(timezone=True), nullable=False, index=True),
)

PURGE_INTERVAL_SECONDS = 60.0


def jti_key(iss: str, jti: str) -> str:
    return hashlib.sha256(f"{iss}\0{jti}".encode()).hexdigest()


class JtiStore:
    """``remember(iss, jti, expires_at)`` is True the first time a pair is seen, False on a replay."""

    def __init__(self, engine: Engine, *, clock: Callable[[], float] = time.time,
                 purge_interval: float = PURGE_INTERVAL_SECONDS):
        self.engine = engine
        self.clock = clock
        self.purge_interval = purge_interval
        self._lock = threading.Lock()
        self._schema_ready = False
        self._last_purge = 0.0

    @classmethod
    def from_url(cls, url: str, **kwargs) -> JtiStore:
        return cls(db.engine_for(url), **kwargs)

    def remember(self, iss: str, jti: str, expires_at: dt.datetime) -> bool:
        key = jti_key(iss, jti)
        now = dt.datetime.fromtimestamp(self.clock(), dt.UTC)
        try:
            self._ensure_schema()
            self._maybe_purge(now)
            with self.engine.begin() as conn:
                # A row left over from an expired token does not block the key; a live one does.
                conn.execute(delete(seen_jti).where(seen_jti.c.jti_key == key, seen_jti.c.expires_at < now))
            try:
                with self.engine.begin() as conn:
                    conn.execute(insert(seen_jti).values(jti_key=key, expires_at=expires_at))
            except IntegrityError:
                return False
            return True
        except SQLAlchemyError as exc:
            log.error("replay store unavailable: %s", type(exc).__name__)
            raise AuthUnavailable("the service cannot check tokens for replay just now") from exc

    def purge(self, now: dt.datetime | None = None) -> int:
        now = now or dt.datetime.fromtimestamp(self.clock(), dt.UTC)
        self._ensure_schema()
        with self.engine.begin() as conn:
            return conn.execute(delete(seen_jti).where(seen_jti.c.expires_at < now)).rowcount or 0

    def _maybe_purge(self, now: dt.datetime) -> None:
        with self._lock:
            if self.clock() - self._last_purge < self.purge_interval:
                return
            self._last_purge = self.clock()
        removed = self.purge(now)
        if removed:
            log.debug("purged %d expired token ids", removed)

    def _ensure_schema(self) -> None:
        if self._schema_ready:
            return
        with self._lock:
            if not self._schema_ready:
                db.ensure_schema(self.engine)
                self._schema_ready = True
