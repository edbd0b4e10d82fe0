"""The audit state reported by ``/health``: the database, what waits in the spool or in memory, the
entries lost, quarantined and interrupted."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import func, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from cds.ledger import quarantine
from cds.ledger.inflight import CallMarkers
from cds.ledger.schema import audit_record
from cds.ledger.spool import Spool

log = logging.getLogger("cds.audit")
INTERRUPTED = "interrupted"  # the outcome of a call whose process died before it answered


@dataclass
class Counts:
    """The whole trail's counts last read from the database (kept while it cannot be read)."""

    quarantined: int = 0
    interrupted: int = 0


class Audited(Protocol):
    """What the audit state is read from (``cds.ledger.store.AuditStore``)."""

    engine: Engine
    spool: Spool
    markers: CallMarkers
    lost: int
    counts: Counts

    def reap_interrupted(self) -> int: ...

    def held_count(self) -> int: ...


def state_of(store: Audited) -> dict[str, Any]:
    """The audit state. ``quarantined`` (entries set aside) and ``interrupted`` (calls whose process
    died before answering) count the whole trail, every process; ``lost`` counts this process's."""
    try:
        store.reap_interrupted()
    except Exception:  # noqa: BLE001 - health must answer
        log.exception("interrupted calls could not be recorded")
    try:
        with store.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
            store.counts = Counts(
                quarantined=quarantine.count(store.engine),
                interrupted=conn.execute(
                    select(func.count()).select_from(audit_record)
                    .where(audit_record.c.outcome == INTERRUPTED)
                ).scalar_one(),
            )
        database = "ok"
    except SQLAlchemyError:
        database = "unavailable"  # the counts are the last ones read
    spooled = store.spool.count() + store.held_count()  # waiting on disk, or in memory
    return {
        "ok": database == "ok" and spooled == 0,
        "database": database,
        "spool": spooled,
        "lost": store.lost,
        "quarantined": store.counts.quarantined + store.spool.poisoned(),
        "interrupted": store.counts.interrupted + store.markers.pending(),
    }

