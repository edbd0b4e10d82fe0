"""The token-id store: every token id (``jti``) a trusted client used, kept until its token expires, so that
a token used again (a replay) is refused.

``TokenIdStore`` is the interface the request guard holds; ``JtiStore`` (below, the database) and
``cds.auth.jti_redis.RedisJtiStore`` (Redis) implement it, with the same-host fallback handled in one place
(``take_during_outage``, ``FileJtiStore.holds`` and ``FileJtiStore.move_to``).

One row per ``(iss, jti)`` in the ``seen_jti`` table, keyed by ``sha256(iss + "\\0" + jti)`` so the
store neither holds client-chosen strings nor needs a length limit on them. Inserting a key that is
already there fails on the primary key, which makes "first use wins" atomic across every process and
host sharing the database. Expired rows are purged now and then; a key whose row has expired may be
used again (its token can no longer pass the ``exp`` check anyway).

When the database cannot be reached, the default is to fail closed: the call is a 503 (``AuthUnavailable``),
because no other store is shared by every host. ``CDS_REPLAY_FALLBACK=host`` trades that for availability:
keys go to a same-host file store (``FileJtiStore``) meanwhile, which refuses replays across this host's
processes only. That folder (``CDS_REPLAY_FALLBACK_DIR``, by default on the RAM disk ``/dev/shm``) must not
be on the disk of the audit spool (``fallback_store`` refuses to start otherwise), so that a spool disk
filled up during an outage cannot stop the calls.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import Column, DateTime, String, Table, delete, insert, text
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError

from cds import db
from cds.errors import AuthUnavailable, ConfigurationError, TokenReplayed

#: The token ids used (created by the migrations in cds/migrations): sha256 hex of iss + jti, and expiry.
seen_jti = Table(
    "seen_jti",
    db.metadata,
    Column("jti_key", String(128), primary_key=True),
    Column("expires_at", DateTime(timezone=True), nullable=False, index=True),
)

log = logging.getLogger("cds.auth")


PURGE_INTERVAL_SECONDS = 60.0
LOCKED_RETRIES = 2  # a SQLite database locked past its busy timeout is tried again this many times
FALLBACK_MODES = ("none", "host")
RAM_DISK = Path("/dev/shm")


#: ``insert_claims`` on PostgreSQL: every key of a batch in one statement; a key already there (and not
#: expired) is not returned
UPSERT_POSTGRES = text(
    "INSERT INTO seen_jti (jti_key, expires_at) "
    "SELECT k, e FROM unnest(CAST(:keys AS varchar[]), CAST(:expires AS timestamptz[])) AS t(k, e) "
    "ON CONFLICT (jti_key) DO UPDATE SET expires_at = EXCLUDED.expires_at WHERE seen_jti.expires_at < :now "
    "RETURNING jti_key"
)
RECENT_LIMIT = 10_000  # token ids a process keeps in memory to refuse its own replays early


def jti_key(iss: str, jti: str) -> str:
    return hashlib.sha256(f"{iss}\0{jti}".encode()).hexdigest()


class Claim:
    """A token id this process has taken but not yet stored: settled (stored, or found to be a replay)
    with the call's audit record (``JtiStore.insert_claims``), or on its own (``JtiStore.settle``)."""

    __slots__ = ("key", "expires_at", "iss", "settled")

    def __init__(self, key: str, expires_at: dt.datetime, iss: str):
        self.key, self.expires_at, self.iss = key, expires_at, iss
        self.settled = False

    def refused(self) -> TokenReplayed:
        self.settled = True
        return TokenReplayed(self.iss)


class Claiming:
    """The first-use check of one call whose token id is settled with its audit record: takes the claim
    from ``store`` (``JtiStore.claim``) and keeps it in ``claim`` (None until taken, or on a replay this
    process has seen)."""

    __slots__ = ("store", "claim")

    def __init__(self, store: JtiStore):
        self.store = store
        self.claim: Claim | None = None

    def __call__(self, iss: str, jti: str, expires_at: dt.datetime) -> bool:
        self.claim = self.store.claim(iss, jti, expires_at)
        return self.claim is not None


class TokenIdStore(Protocol):
    """Where the token ids (``jti``) of trusted clients are kept until their tokens expire; what the request
    guard holds. ``remember`` is True the first time an ``(iss, jti)`` pair is seen, False when it is seen
    again (a replay), and raises ``AuthUnavailable`` when it cannot tell; ``health`` is the store's part
    of ``/health``."""

    fallback: FileJtiStore | None

    def remember(self, iss: str, jti: str, expires_at: dt.datetime) -> bool: ...

    def health(self) -> dict[str, Any]: ...


class FileJtiStore:
    """The same-host fallback used while the shared store is unavailable: one file per key, created with
    ``O_CREAT | O_EXCL`` (atomic across the processes of this host), holding the expiry time."""

    def __init__(self, directory: Path):
        self.directory = directory

    def remember(self, key: str, expires_at: dt.datetime, now: dt.datetime) -> bool:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / key
        for _ in range(2):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
            except FileExistsError:
                expiry = self._expiry(path)
                if expiry is not None and expiry >= now:
                    return False
                path.unlink(missing_ok=True)  # an expired key may be used again
                continue
            with os.fdopen(fd, "w") as out:
                out.write(expires_at.isoformat())
            return True
        return False

    @staticmethod
    def _expiry(path: Path) -> dt.datetime | None:
        try:
            return dt.datetime.fromisoformat(path.read_text())
        except (OSError, ValueError):
            return None

    def holds(self, key: str, now: dt.datetime) -> bool:
        """Whether the key was taken here during an outage, has not expired and is not moved on yet."""
        if not self.directory.is_dir():
            return False
        expiry = self._expiry(self.directory / key)
        return expiry is not None and expiry >= now

    def count(self) -> int:
        """How many keys the fallback holds (expired ones too, until they are absorbed)."""
        return sum(1 for _ in self.directory.iterdir()) if self.directory.is_dir() else 0

    def entries(self) -> list[tuple[str, dt.datetime, Path]]:
        if not self.directory.is_dir():
            return []
        found = []
        for path in self.directory.iterdir():
            expiry = self._expiry(path)
            if expiry is not None:
                found.append((path.name, expiry, path))
        return found

    def move_to(self, put: Callable[[str, dt.datetime], None], now: dt.datetime) -> int:
        """Hand every key still live to ``put(key, expiry)`` (the shared store, back again), dropping each
        once handed over (expired ones are only dropped); a ``put`` that raises leaves its key here and
        stops the move. Returns how many were handed over."""
        moved = 0
        for key, expiry, path in self.entries():
            if expiry >= now:
                put(key, expiry)
                moved += 1
            path.unlink(missing_ok=True)
        return moved


def take_during_outage(fallback: FileJtiStore | None, exc: Exception, shared: str, key: str,
                       expires_at: dt.datetime, now: dt.datetime) -> bool:
    """The shared store (``shared``: "database", or where Redis is) is unavailable (``exc``): the key goes to
    the same-host ``fallback`` (True the first time, False on a replay); without one the call fails closed
    (``AuthUnavailable``, 503), as it does when the fallback cannot be written either."""
    if fallback is None:
        log.error("replay store unavailable: %s (%s)", type(exc).__name__, shared)
        raise AuthUnavailable("the service cannot check tokens for replay just now") from exc
    log.warning("replay store: %s unavailable (%s); using the same-host fallback", shared, type(exc).__name__)
    try:
        return fallback.remember(key, expires_at, now)
    except OSError as file_exc:
        log.error("replay store unavailable: %s and the same-host fallback both failed", shared)
        raise AuthUnavailable("the service cannot check tokens for replay just now") from file_exc


def _device(path: Path) -> int:
    """The device (disk) a path is on, or would be on: that of its nearest existing folder."""
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return os.stat(path).st_dev


def fallback_store(mode: str, directory: str, spool_dir: str) -> FileJtiStore | None:
    """The same-host fallback the settings ask for (``None`` for ``none``: fail closed), checked at start-up.

    Raises ``ConfigurationError`` naming the setting for an unknown mode, a folder that cannot be made, or a
    folder on the audit spool's disk.
    """
    if mode not in FALLBACK_MODES:
        raise ConfigurationError(f"setting CDS_REPLAY_FALLBACK: {mode!r} is not one of "
                                 f"{', '.join(FALLBACK_MODES)}")
    if mode == "none":
        return None
    if directory:
        folder = Path(directory)
    elif RAM_DISK.is_dir():
        folder = RAM_DISK / f"cds-jti-fallback-{os.getuid()}"
    else:
        raise ConfigurationError("setting CDS_REPLAY_FALLBACK_DIR: no RAM disk (/dev/shm) here; name a "
                                 "folder that is not on the audit spool's disk")
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigurationError(f"setting CDS_REPLAY_FALLBACK_DIR: {folder} cannot be made "
                                 f"({exc.strerror})") from exc
    if _device(folder) == _device(Path(spool_dir)):
        raise ConfigurationError(f"setting CDS_REPLAY_FALLBACK_DIR: {folder} is on the same disk as the "
                                 f"audit spool ({spool_dir}); a full spool disk would stop every call")
    return FileJtiStore(folder)


class JtiStore:
    """The ``TokenIdStore`` in the database: ``remember(iss, jti, expires_at)`` is True the first time a pair
    is seen, False on a replay.

    The database is the store shared by every process and host. Without a fallback (the default), an
    unavailable database is a 503. With one, keys go to the same-host file store (``fallback``) while the
    database is unavailable, so that hook calls keep working with replay protection across this host's
    processes; the keys are copied into the database when it is back.
    """

    def __init__(self, engine: Engine, *, clock: Callable[[], float] = time.time,
                 purge_interval: float = PURGE_INTERVAL_SECONDS, fallback: FileJtiStore | None = None):
        self.engine = engine
        self.clock = clock
        self.purge_interval = purge_interval
        self.fallback = fallback
        self._lock = threading.Lock()
        self._schema_ready = False
        self._last_purge = 0.0
        self._recent: dict[str, float] = {}  # keys claimed in this process, with their expiry (epoch s)

    @classmethod
    def from_url(cls, url: str, **kwargs) -> JtiStore:
        return cls(db.engine_for(url), **kwargs)

    def remember(self, iss: str, jti: str, expires_at: dt.datetime) -> bool:
        return self._remember_key(jti_key(iss, jti), expires_at)

    # -- claims: the token id written in the audit record's transaction -----------------------------------
    def claim(self, iss: str, jti: str, expires_at: dt.datetime) -> Claim | None:
        """Take a token id for a call whose audit record will store it (``insert_claims``); ``None`` when this
        process has seen it already (a replay, refused before any work). Whether another process or host
        has seen it is known only when the claim is settled."""
        key = jti_key(iss, jti)
        now = self.clock()
        with self._lock:
            known = self._recent.get(key)
            if known is not None and known >= now:
                return None
            if len(self._recent) >= RECENT_LIMIT:
                self._recent = {k: e for k, e in self._recent.items() if e >= now}
                if len(self._recent) >= RECENT_LIMIT:  # all still live: forget the oldest half
                    self._recent = dict(list(self._recent.items())[RECENT_LIMIT // 2:])
            self._recent[key] = expires_at.timestamp()
        return Claim(key, expires_at, iss)

    def settle(self, claim: Claim) -> None:
        """Store a claim on its own (its own transaction, with the fallback of ``remember``); raises
        ``TokenReplayed`` on a replay, ``AuthUnavailable`` when it cannot be checked. Once only."""
        if claim.settled:
            return
        accepted = self._remember_key(claim.key, claim.expires_at)
        claim.settled = True
        if not accepted:
            raise claim.refused()

    def insert_claims(self, conn: Connection, claims: list[Claim]) -> set[str]:
        """Store ``claims`` in ``conn``'s transaction, in one statement; return the keys accepted (the others
        are replays: seen before by any process or host sharing the database). A key whose stored row has
        expired is taken again, as ``remember`` does. The caller marks them settled once committed."""
        if not claims:
            return set()
        now = dt.datetime.fromtimestamp(self.clock(), dt.UTC)
        rows, seen = [], set()
        for claim in claims:
            if claim.key not in seen:
                seen.add(claim.key)
                rows.append({"jti_key": claim.key, "expires_at": claim.expires_at})
        if conn.dialect.name == "postgresql":  # one statement whatever the count, compiled once
            found = conn.execute(UPSERT_POSTGRES, {"keys": [r["jti_key"] for r in rows],
                                                   "expires": [r["expires_at"] for r in rows], "now": now})
        else:
            stmt = sqlite.insert(seen_jti).values(rows)
            found = conn.execute(stmt.on_conflict_do_update(
                index_elements=[seen_jti.c.jti_key], set_={"expires_at": stmt.excluded.expires_at},
                where=seen_jti.c.expires_at < now,
            ).returning(seen_jti.c.jti_key))
        accepted = set(found.scalars())
        return {key for key in accepted if self._not_in_fallback(key, now)}

    def ready(self) -> None:
        """The schema in place and old rows purged now and then: what ``remember`` does before its write."""
        self._ensure_schema()
        self._maybe_purge(dt.datetime.fromtimestamp(self.clock(), dt.UTC))

    def _remember_key(self, key: str, expires_at: dt.datetime) -> bool:
        now = dt.datetime.fromtimestamp(self.clock(), dt.UTC)
        for attempt in range(LOCKED_RETRIES + 1):
            try:
                return self._remember(key, expires_at, now)
            except OperationalError as exc:  # SQLite busy past its timeout: a moment, not an outage
                if "locked" not in str(exc.orig).lower() or attempt == LOCKED_RETRIES:
                    return self._unavailable(exc, key, expires_at, now)
                time.sleep(0.2 * (attempt + 1))
            except SQLAlchemyError as exc:
                return self._unavailable(exc, key, expires_at, now)
        raise AssertionError("unreachable")  # pragma: no cover

    def _remember(self, key: str, expires_at: dt.datetime, now: dt.datetime) -> bool:
        self._ensure_schema()
        self._maybe_purge(now)
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(seen_jti).values(jti_key=key, expires_at=expires_at))
            return self._not_in_fallback(key, now)
        except IntegrityError:
            pass
        # The key is known: a replay, unless the row is left over from an expired token.
        with self.engine.begin() as conn:
            removed = conn.execute(delete(seen_jti).where(seen_jti.c.jti_key == key,
                                                          seen_jti.c.expires_at < now)).rowcount
        if not removed:
            return False
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(seen_jti).values(jti_key=key, expires_at=expires_at))
        except IntegrityError:
            return False
        return True

    def _unavailable(self, exc: SQLAlchemyError, key: str, expires_at: dt.datetime, now: dt.datetime) -> bool:
        return take_during_outage(self.fallback, exc, "database", key, expires_at, now)

    def _not_in_fallback(self, key: str, now: dt.datetime) -> bool:
        """A key first seen during an outage is in the fallback only: still a replay."""
        return self.fallback is None or not self.fallback.holds(key, now)

    def purge(self, now: dt.datetime | None = None) -> int:
        now = now or dt.datetime.fromtimestamp(self.clock(), dt.UTC)
        self._ensure_schema()
        self._absorb_fallback(now)
        with self.engine.begin() as conn:
            return conn.execute(delete(seen_jti).where(seen_jti.c.expires_at < now)).rowcount or 0

    def _absorb_fallback(self, now: dt.datetime) -> None:
        """Copy keys the fallback took during an outage into the database, then drop them from it."""
        if self.fallback is None:
            return

        def put(key: str, expiry: dt.datetime) -> None:
            try:
                with self.engine.begin() as conn:
                    conn.execute(insert(seen_jti).values(jti_key=key, expires_at=expiry))
            except IntegrityError:
                pass

        self.fallback.move_to(put, now)

    def health(self) -> dict[str, Any]:
        """The token-id store's state for ``/health``: ``ok`` when the database answers."""
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            state = "ok"
        except SQLAlchemyError:
            state = "unavailable"
        part: dict[str, Any] = {"ok": state == "ok", "store": "database", "state": state}
        if self.fallback is not None:
            part["fallbackKeys"] = self.fallback.count()
        return part

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
