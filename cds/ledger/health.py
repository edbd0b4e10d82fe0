"""The audit state reported by ``/health``: the database, what waits in the spool or in memory, the
entries lost, quarantined and interrupted."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select, text
from sqlalchemy.exc import SQLAlchemyError

from cds.ledger import quarantine
from cds.ledger.schema import audit_record

if TYPE_CHECKING:
    from cds.ledger.store import AuditStore

log = logging.getLogger("cds.audit")
INTERRUPTED = "interrupted"  # the outcome of a call whose process died before it answered


def state_of(store: AuditStore) -> dict[str, Any]:
    """The audit state. ``quarantined`` (entries set aside) and ``interrupted`` (calls whose process
    died before answering) count the whole trail, every process; ``lost`` counts this process's."""
    try:
        store.reap_interrupted()
    except Exception:  # noqa: BLE001 - health must answer
        log.exception("interrupted calls could not be recorded")
    try:
        with store.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
            store._counts = {
                "quarantined": quarantine.count(store.engine),
                "interrupted": conn.execute(
                    select(func.count()).select_from(audit_record)
                    .where(audit_record.c.outcome == INTERRUPTED)
                ).scalar_one(),
            }
        database = "ok"
    except SQLAlchemyError:
        database = "unavailable"  # the counts are the last ones read
    spooled = store.spool.count() + len(store._held)  # waiting on disk, or in memory
    return {
        "ok": database == "ok" and spooled == 0,
        "database": database,
        "spool": spooled,
        "lost": store.lost,
        "quarantined": store._counts["quarantined"] + store.spool.poisoned(),
        "interrupted": store._counts["interrupted"] + store.markers.pending(),
    }

