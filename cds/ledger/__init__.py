"""The audit ledger, its write side: every hook call recorded, hash-chained, and never lost.

    port.py        the ledger port the call layer records through (record_call, call_started, call_finished)
    record.py      CallRecord -> record content (patient as keyed hash, facts kept for a rerun)   pure
    hashing.py     canonical JSON, link hashes, verification of one chain                          pure
    append.py      appending a link to a chained table; poison (data) errors told from outages
    record_chains.py  the record chains that do not serialise writers, and their checkpoints
    schema.py      the tables (on cds.db.metadata); migrations in cds/migrations
    spool.py       the durable local spool used while the database is unavailable
    groupcommit.py one writer thread per process commits concurrent calls' records together
    store.py       AuditStore: the ledger on a database; appends, spools, drains
    memory.py      MemoryLedger: the ledger in memory (offline evaluation, batch runs, tests)
    feedback.py    feedback tied to its card, service and client; the feedback chain's columns
    quarantine.py  entries the database refused as data, set aside (chained)
    inflight.py    started-call markers: calls of a process that died are recorded "interrupted"
    health.py      the ledger state /health reports
    keys.py        the patient-key and link secrets: from a setting or a file (made atomically in development)

The read side (queries, verify, explain, rerun, the auditor's pages, API and CLI) is ``cds.review``; the
clinician's "Why this card?" page is ``cds.clinician``. See docs/audit.md.
"""

from __future__ import annotations

import logging
from typing import Any

from cds.db import engine_for, ensure_schema
from cds.ledger.keys import patient_secret
from cds.rules.pack import RulePack

log = logging.getLogger("cds.audit")


def database_url(values: dict[str, Any]) -> str:
    url = str(values["DATABASE_URL"])
    if url.startswith("postgresql") and "connect_timeout" not in url:
        url += ("&" if "?" in url else "?") + "connect_timeout=5"
    return url


def open_store(values: dict[str, Any], pack: RulePack, *, migrate: bool | None = None):
    from sqlalchemy.exc import OperationalError

    from cds.ledger.spool import Spool
    from cds.ledger.store import AuditStore

    engine = engine_for(database_url(values))
    store = AuditStore(
        engine,
        pack,
        patient_secret(values),
        Spool(values["AUDIT_SPOOL_DIR"]),
        retry_seconds=values["AUDIT_SPOOL_RETRY_SECONDS"],
        own_chains=values["AUDIT_OWN_CHAINS"],
        checkpoint_seconds=values["AUDIT_CHECKPOINT_SECONDS"],
    )
    if values["AUDIT_MIGRATE_ON_START"] if migrate is None else migrate:
        try:
            ensure_schema(engine)
        except OperationalError as exc:
            # Start anyway: records go to the spool, and the schema is brought up to date before the
            # spool is drained into the database.
            log.error(
                "audit database unavailable at start-up (%s); records will be spooled",
                str(exc.orig).splitlines()[0] if exc.orig else exc,
            )
            store.migrate_pending = True
    return store
