"""The audit store: appends hash-chained records and feedback to the database, or to the spool.

A call's record is handed to the process's group-commit writer (``groupcommit.py``), which writes the
records of concurrent calls in one transaction, each a link of this process's own chain on PostgreSQL
(no lock another process waits for) or of the shared chain on SQLite (``record_chains.py``), cards included;
the call answers once its record is committed. A batch the database refuses as data is written again one
entry at a time, so that only the poison entry is set aside.

When the database cannot be written, the entry goes to the spool (``spool.py``) and a background thread
drains the spool into the database once it is back, oldest first. While the spool holds anything, new
entries go to the spool too, so the chain keeps the order in which calls finished. If the spool cannot
be written either, the entry is held in memory (up to ``HOLD_LIMIT`` entries, behind everything spooled;
while anything is held, new entries queue behind it) and moved to the spool or the database by the same
thread once either is back. Only past that limit, or if the process dies while holding entries, is an
entry lost: that is logged as an error and the hook call still answers.

An entry the database refuses as data (``append.is_poison``) is set aside in the quarantine
(``quarantine.py``) instead of waiting at the head of the queue, wherever it is written from: the request
path, the spool or memory. A call whose process dies before it answers is counted through its started-call
marker (``inflight.py``).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
import uuid
from collections import deque
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from cds.auth.jti_store import Claim, JtiStore
from cds.db import ensure_schema, same_database
from cds.errors import AuthUnavailable, TokenReplayed
from cds.hooks.services import hook_of
from cds.ledger import append, feedback, hashing, health, history, quarantine, record_chains
from cds.ledger.groupcommit import GroupCommit
from cds.ledger.inflight import CallMarkers
from cds.ledger.port import CallRecord
from cds.ledger.record import build_content, patient_key
from cds.ledger.record_chains import ChainWriter
from cds.ledger.schema import audit_feedback, audit_record
from cds.ledger.spool import Spool, Unstorable
from cds.rules.pack import RulePack
from cds.settings import default as setting_default

log = logging.getLogger("cds.audit")

INTERRUPTED = health.INTERRUPTED
HOLD_LIMIT = 10_000  # entries kept in memory while neither the database nor the spool can take them


def _utc(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


class AuditStore:
    def __init__(
        self, engine: Engine, pack: RulePack, secret: bytes, spool: Spool, *,
        retry_seconds: float = setting_default("AUDIT_SPOOL_RETRY_SECONDS"),
        own_chains: bool = setting_default("AUDIT_OWN_CHAINS"), group_commit: bool = True,
        checkpoint_seconds: float = setting_default("AUDIT_CHECKPOINT_SECONDS"),
    ):
        self.engine = engine
        self.pack = pack
        self.secret = secret
        self.spool = spool
        self.retry_seconds = retry_seconds
        self._chain_lock = threading.Lock()
        self._drain_state = threading.Lock()
        self._drain_wanted = False
        self._drainer: threading.Thread | None = None
        self._stop = threading.Event()
        self.lost = 0  # entries neither the database, the spool nor memory could take (since start)
        self._held: deque[dict[str, Any]] = deque()  # entries waiting in memory (spool unwritable)
        self._held_lock = threading.Lock()
        self.migrate_pending = False  # the database was down at start-up: migrate before the first write
        self.markers = CallMarkers(Path(spool.folder) / "calls")
        self.counts = health.Counts()  # last read from the database (``health.state_of``)
        self.chains = ChainWriter(engine, self._chain_lock, own_chains=own_chains)
        self.writer = GroupCommit(self._submit_batch, after=self.maybe_checkpoint) if group_commit else None
        self.checkpoint_seconds = checkpoint_seconds
        self._checkpointed = time.monotonic()
        #: the token-id store whose claims are settled with the records (``take_claims``)
        self.token_ids: JtiStore | None = None

    def take_claims(self, token_ids: JtiStore) -> bool:
        """Store the token ids of calls (their ``Claim``) in the transaction of their records, when the
        token-id store is this database: True when it is (and from now on claims are taken), else False."""
        if not same_database(self.engine, token_ids.engine):
            return False
        self.token_ids = token_ids
        return True

    # -- started-call markers -------------------------------------------------------------------------
    def call_started(self, service: str, when: dt.datetime, record_id: str | None = None) -> Path | None:
        return self.markers.start(service, when, record_id)

    def call_finished(self, marker: Path | None) -> None:
        self.markers.end(marker)

    def reap_interrupted(self) -> int:
        """Record the calls of processes that died mid-call (outcome ``interrupted``). While the database
        cannot be read, a marker whose record may be there waits (with its owner's lock) for the next reap."""
        try:
            return self.markers.reap(self._record_interrupted)
        except SQLAlchemyError as exc:
            log.warning("interrupted calls not recorded yet: the audit database cannot be read (%s); tried "
                        "again at the next /health", type(exc).__name__)
            return 0

    def _in_trail(self, record_id: str) -> bool:
        """Whether the record ``record_id`` is durable: in the spool (looked at first: the drain deletes a
        file only after its record is committed) or in the database (which raises when it cannot be read:
        the marker then waits for the next reap)."""
        if self.spool.holds(record_id):
            return True
        with self.engine.connect() as conn:
            found = conn.execute(select(audit_record.c.seq).where(audit_record.c.id == record_id)).first()
        return found is not None

    def _record_interrupted(self, marker: dict[str, Any]) -> bool:
        """Record a dead process's call as ``interrupted`` with the id its record would have had; False
        (nothing recorded) when that record is in the trail: the process died after making it durable."""
        record_id = marker.get("record")
        if record_id and self._in_trail(record_id):
            log.warning("a process stopped after recording its %s call; the call is not counted again",
                        marker["service"][:128])
            return False
        try:
            started = _utc(dt.datetime.fromisoformat(marker["started"]))
        except (TypeError, ValueError):
            started = dt.datetime.now(dt.UTC)
        call = CallRecord(service=marker["service"][:128], hook=hook_of(marker["service"]),
                          hook_instance=None, patient_id=None, client_iss=None, started=started,
                          latency_ms=0.0, outcome=INTERRUPTED, status=0,
                          error="the process handling this call stopped before it answered")
        content = build_content(call, self.pack, self.secret, record_id=record_id or None)
        content["latencyMs"] = None
        content["marker"] = marker["marker"]
        self.submit({"kind": "call", "content": content})
        return True

    # -- the sinks ------------------------------------------------------------------------------------
    def record_call(self, call: CallRecord, claim: Claim | None = None) -> None:
        """``Ledger``: raises only for the call's token ``claim`` (``TokenReplayed``, ``AuthUnavailable``),
        settled in the record's transaction when the token-id store is this database (``take_claims``);
        otherwise the hook call answers whatever happens here."""
        try:
            content = build_content(call, self.pack, self.secret, context=call.context,
                                    record_id=call.record_id)
        except Exception:  # noqa: BLE001 - a bug here must not cost the EHR its cards
            log.exception("audit record could not be built for a %s call", call.service)
            self.lost += 1
            return
        entry: dict[str, Any] = {"kind": "call", "content": content}
        if claim is not None and self.token_ids is not None:
            entry["claim"] = claim
        try:
            self.submit(entry)
        except (TokenReplayed, AuthUnavailable):
            raise  # the call's token: a replay, or not checkable now; its answer says so, nothing is stored
        except Exception:  # noqa: BLE001 - same: the answer goes out, the loss is logged
            self.lost += 1
            log.exception("audit entry LOST for a %s call", call.service)

    def card_history(self, patient_id: str, since: dt.datetime, *,
                     recent: int | None = None) -> history.History:
        """``CardHistory``: the patient's cards since ``since`` and the feedback on them (raises when the
        database cannot be read; the caller then silences nothing)."""
        key = patient_key(self.secret, patient_id)
        if key is None:
            return history.History()
        with self.engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                # each statement on its own (the read needs no snapshot: a record or feedback written
                # meanwhile is seen or not, either way as if the call came a moment earlier or later): no
                # BEGIN and no ROLLBACK round trips, half the read's time on every call
                conn.execution_options(isolation_level="AUTOCOMMIT")
            return history.read(conn, key, _utc(since), history.RECENT_CALLS if recent is None else recent)

    def store_feedback(self, service_id: str, items: list[dict[str, Any]], *, received: dt.datetime,
                       client_iss: str | None = None) -> list[feedback.IssuedCard | None]:
        """Store feedback items, all or none: an item for a card not issued on ``service_id`` to
        ``client_iss``, or naming suggestions the card does not have, refuses the call (``NotFound`` /
        ``RequestError`` naming the item). A card not found while entries still wait in the spool or in
        memory, or while the database cannot be read, is accepted and checked when it is written.
        Returns each item's card as found (its audit record and hook call), None where it was not."""
        queued = bool(self._held) or self.spool.pending()
        try:
            with self.engine.connect() as conn:
                cards = feedback.issued_cards(conn, [str(item.get("card")) for item in items])
        except SQLAlchemyError as exc:
            log.warning("feedback accepted unchecked: the audit database cannot be read (%s); it is "
                        "checked when written", type(exc).__name__)
            cards, queued = {}, True
        for i, item in enumerate(items):
            card = cards.get(str(item.get("card")))
            if card is None and queued:
                continue  # its record may be behind us in the queue: checked when written
            found = feedback.problem(item, f"feedback[{i}]", card, service_id, client_iss)
            if found:
                feedback.refuse(found)
        for item in items:
            self.submit({"kind": "feedback", "id": str(uuid.uuid4()), "service": service_id,
                         "client": client_iss, "item": item, "received": _utc(received).isoformat()})
        return [cards.get(str(item.get("card"))) for item in items]

    def submit(self, entry: dict[str, Any]) -> None:
        """Make ``entry`` durable (database, spool or memory) before returning; call records through the
        group-commit writer, together with those of concurrent calls."""
        if self.writer is not None and entry.get("kind") == "call":
            self.writer.submit(entry)
        else:
            self._submit_one(entry)

    def _submit_batch(self, entries: list[dict[str, Any]]) -> list[BaseException | None]:
        """The writer's batch: one transaction; when it fails as data, one by one (only the poison entry is
        set aside); when the database is down, all to the spool, in order."""
        with self._held_lock:
            queued = bool(self._held)
        if not queued and not self.spool.pending():
            try:
                return self.write_batch(entries)
            except Exception as exc:
                if isinstance(exc, SQLAlchemyError) and not append.is_poison(exc):
                    log.warning("audit database unavailable (%s); spooling %d entries to %s",
                                type(exc).__name__, len(entries), self.spool.folder)
                    return self._each(entries, self._settled_to_spool)
        return self._each(entries, self._submit_one)

    @staticmethod
    def _each(entries: list[dict[str, Any]], step: Any) -> list[BaseException | None]:
        errors: list[BaseException | None] = []
        for entry in entries:
            try:
                step(entry)
                errors.append(None)
            except Exception as exc:  # noqa: BLE001 - handed to that entry's caller
                errors.append(exc)
        return errors

    def _settle(self, entry: dict[str, Any]) -> None:
        """The entry's token claim stored on its own, before the entry is written, spooled or held: raises
        ``TokenReplayed`` (the entry is dropped: its call answers 401) or ``AuthUnavailable`` (503)."""
        claim = entry.pop("claim", None)
        if claim is not None and self.token_ids is not None:
            self.token_ids.settle(claim)

    def _settled_to_spool(self, entry: dict[str, Any]) -> None:
        self._settle(entry)
        self._spool(entry)

    def _submit_one(self, entry: dict[str, Any]) -> None:
        self._settle(entry)
        with self._held_lock:
            if self._held:  # queue behind the entries already held, to keep the order
                self._hold(entry)
                return
        if not self.spool.pending():
            try:
                self.write(entry)
                return
            except Exception as exc:
                if append.is_poison(exc):
                    self._set_aside(entry, exc)
                    return
                if not isinstance(exc, SQLAlchemyError):
                    raise
                log.warning(
                    "audit database unavailable (%s); spooling to %s", type(exc).__name__, self.spool.folder
                )
        self._spool(entry)

    def _set_aside(self, entry: dict[str, Any], exc: BaseException) -> None:
        """Quarantine a poison entry from the request path; spooled if the quarantine cannot take it now
        (the drain tries again, and keeps it as a ``.poison`` file if it never can)."""
        try:
            self._quarantine(entry, exc)
        except Exception:  # noqa: BLE001 - the spool keeps it
            self._spool(entry)

    def _quarantine(self, entry: dict[str, Any], exc: BaseException) -> None:
        seq = quarantine.add(self.engine, self._chain_lock, entry, exc)
        log.error("audit %s entry quarantined as #%d: the database refused it (%s)",
                  entry.get("kind"), seq, quarantine.reason_of(exc))

    def _spool(self, entry: dict[str, Any]) -> None:
        try:
            self.spool.append(entry)
        except OSError as exc:
            log.error("audit database and spool both failed (%s: %s); holding the entry in memory",
                      type(exc).__name__, exc)
            with self._held_lock:
                self._hold(entry)
            return
        self.kick()

    def _hold(self, entry: dict[str, Any]) -> None:
        """Keep ``entry`` in memory (caller holds ``_held_lock``); lost only past ``HOLD_LIMIT``."""
        if len(self._held) >= HOLD_LIMIT:
            self.lost += 1
            log.error("audit entry LOST: database and spool unavailable, %d entries already held", HOLD_LIMIT)
            return
        self._held.append(entry)
        self.kick()

    def held_count(self) -> int:
        """The entries waiting in memory (the spool could not take them)."""
        return len(self._held)

    def release_held(self) -> int:
        """Move held entries, oldest first, behind the spool (or into the database when nothing is spooled);
        stops at the first that neither takes. Returns how many moved."""
        moved = 0
        with self._held_lock:
            while self._held:
                entry = self._held[0]
                try:
                    if self.spool.pending():
                        self.spool.append(entry)
                    else:
                        try:
                            self.write(entry)
                        except Exception as exc:
                            if not isinstance(exc, SQLAlchemyError) and not append.is_poison(exc):
                                raise
                            self.spool.append(entry)  # the drain quarantines it if it is poison
                except OSError:
                    break
                self._held.popleft()
                moved += 1
        if moved:
            log.info("audit: %d entries held in memory moved on (%d still held)", moved, len(self._held))
        return moved

    # -- database writes ------------------------------------------------------------------------------
    def _migrate_if_pending(self) -> None:
        if self.migrate_pending:
            with self._chain_lock:
                if self.migrate_pending:
                    ensure_schema(self.engine)
                    self.migrate_pending = False

    def write(self, entry: dict[str, Any], *, dedupe: bool = False, late: bool = False) -> None:
        """``late``: a record written from the spool, after feedback on its cards may have been stored."""
        self._migrate_if_pending()
        if entry["kind"] == "call":
            self.append(entry["content"], dedupe=dedupe, late=late)
        elif entry["kind"] == "feedback":
            self._insert_feedback(entry)
        else:
            raise ValueError(f"unknown audit entry kind {entry['kind']!r}")

    def append(self, content: dict[str, Any], *, dedupe: bool = False, late: bool = False) -> int:
        """Append one record to this process's chain in one transaction; return its ``seq``. ``late``: in
        the same transaction, feedback already stored on its cards becomes the record's patient's
        (``feedback.link_to_record``)."""

        def link(conn: Connection, rows: record_chains.Contents) -> record_chains.Contents:
            feedback.link_to_record(conn, content)
            return rows

        seq = self.chains.append([(content, hashing.canonical(content))], dedupe=dedupe,
                                 before=link if late else None)[0]
        self.maybe_checkpoint()
        return seq

    def write_batch(self, entries: list[dict[str, Any]]) -> list[BaseException | None]:
        """Call entries into the database in one transaction, all or none, with their token claims: an entry
        whose claim is a replay is not written (its error is ``TokenReplayed``); the others are committed."""
        self._migrate_if_pending()
        contents = [(e["content"], hashing.canonical(e["content"])) for e in entries]
        claims = [e.get("claim") for e in entries]
        token_ids = self.token_ids
        if token_ids is None or not any(claims):
            self.chains.append(contents)
            return [None] * len(entries)
        token_ids.ready()
        kept: list[bool] = []

        def take(conn: Connection, rows: record_chains.Contents) -> record_chains.Contents:
            accepted = token_ids.insert_claims(conn, [c for c in claims if c is not None])
            kept.clear()
            for claim in claims:
                fresh = claim is None or claim.key in accepted
                if claim is not None:
                    accepted.discard(claim.key)  # the same key twice in one batch: the first wins
                kept.append(fresh)
            return [row for row, keep in zip(rows, kept, strict=True) if keep]

        self.chains.append(contents, before=take)
        errors: list[BaseException | None] = []
        for entry, claim, keep in zip(entries, claims, kept, strict=True):
            entry.pop("claim", None)
            if claim is None:
                errors.append(None)
            elif keep:
                claim.settled = True
                errors.append(None)
            else:
                errors.append(claim.refused())
        return errors

    def maybe_checkpoint(self, *, now: bool = False) -> int | None:
        """Write a checkpoint of every chain head when ``checkpoint_seconds`` have passed (or ``now``)."""
        if not now and time.monotonic() - self._checkpointed < self.checkpoint_seconds:
            return None
        self._checkpointed = time.monotonic()
        try:
            return record_chains.write_checkpoint(self.engine, self._chain_lock)
        except Exception as exc:  # noqa: BLE001 - the next one covers what this one would have
            log.warning("audit checkpoint not written (%s); tried again later", type(exc).__name__)
            return None

    def _insert_feedback(self, entry: dict[str, Any]) -> None:
        entry.setdefault("id", str(uuid.uuid4()))  # kept through retries and the spool

        def work(conn: Connection) -> bool:
            card = feedback.check_on_write(conn, entry)
            content = feedback.content_of(entry, card is not None)
            append.append_link(conn, audit_feedback, append.FEEDBACK_LOCK, hashing.canonical(content),
                               {**feedback.columns(content), "patient_key": card and card.patient_key})
            return card is not None

        if not append.retried(self.engine, self._chain_lock, work):
            log.warning("feedback for a card no audit record holds (stored, flagged)")

    # -- the spool ------------------------------------------------------------------------------------
    def drain(self, *, wait: bool = False) -> int:
        """Move spooled entries to the database, oldest first; raises if the database fails mid-way."""
        if not self.spool.pending():
            return 0  # nothing spooled (or no spool folder at all): nothing to lock
        return self.spool.drain(self._drain_write, wait=wait)

    def _drain_write(self, entry: dict[str, Any]) -> None:
        """One spooled entry into the database, or into the quarantine when the database refuses it as data;
        raises (the drain stops, the entry stays) when the database is unavailable."""
        try:
            self.write(entry, dedupe=True, late=True)
        except Exception as exc:
            if not append.is_poison(exc):
                raise
            try:
                self._quarantine(entry, exc)
            except Exception as again:
                if append.is_poison(again):
                    log.error("audit entry kept as a .poison file: not even the quarantine takes it (%s)",
                              quarantine.reason_of(again))
                    raise Unstorable() from again
                raise

    def kick(self) -> None:
        """Make sure a background thread is draining the spool."""
        with self._drain_state:
            self._drain_wanted = True
            if self._drainer is None or not self._drainer.is_alive():
                self._drainer = threading.Thread(target=self._drain_loop, name="cds-audit-drain", daemon=True)
                self._drainer.start()

    def _drain_loop(self) -> None:
        while not self._stop.is_set():
            with self._drain_state:
                if not self._drain_wanted and not self.spool.pending() and not self._held:
                    self._drainer = None
                    return
                self._drain_wanted = False
            try:
                moved = self.drain()
                if moved:
                    log.info("audit spool: %d entries moved to the database", moved)
                if self._held and (not self.release_held() or self._held):
                    self._stop.wait(self.retry_seconds)  # neither the spool nor the database takes them yet
                    continue
                if self.spool.pending():
                    self._stop.wait(0.2)  # another process holds the drain lock, or entries just arrived
            except SQLAlchemyError:
                self._stop.wait(self.retry_seconds)
            except Exception:  # noqa: BLE001 - keep trying; the spool keeps the entries
                log.exception("audit spool drain failed")
                self._stop.wait(self.retry_seconds)

    def wait_drained(self, timeout: float) -> bool:
        """Block until the spool is empty (tests, shutdown); True when it is."""
        deadline = threading.Event()
        end = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=timeout)
        while self.spool.pending() or self._held:
            if dt.datetime.now(dt.UTC) >= end:
                return False
            self.kick()
            deadline.wait(0.05)
        return True

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self._stop.set()
        if self.chains.chain_id is not None:
            self.maybe_checkpoint(now=True)
        self.chains.close()

    # -- health ---------------------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        """The audit state (``health.state_of``)."""
        return health.state_of(self)
