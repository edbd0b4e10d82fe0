"""A population run's record in the audit trail: one link of the record chain per ``cds gaps`` run.

The record is appended through the same chain writer as a hook call's (``record_chains.ChainWriter``), with
a checkpoint of the chain heads after it, so that ``cds audit list``/``show``, the auditor's pages and
``cds audit verify`` cover it as any other record. It has the fields every record has (``run_content``:
no patient, no hook, no cards) and its own service name; what the run read and wrote is under ``run``:
who ran it, the rule pack, the sha256 of every input and output file and the counts. No patient id.
"""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from typing import Any

from cds.db import engine_for, ensure_schema
from cds.ledger import database_url, hashing, record_chains
from cds.ledger.record import no_evaluation
from cds.rules.pack import RulePack

SERVICE = "population-gaps"


def run_content(pack: RulePack, *, started: dt.datetime, elapsed_seconds: float, outcome: str,
                run: dict[str, Any], record_id: str | None = None) -> dict[str, Any]:
    """The record's content: the fields of a call's record (empty where a run has none) and ``run``."""
    return {
        "id": record_id or str(uuid.uuid4()),
        "time": started.astimezone(dt.UTC).isoformat(),
        "service": SERVICE,
        "hook": None,
        "hookInstance": None,
        "clientIss": None,
        "patientKey": None,
        "rulePack": {"id": pack.id, "version": pack.version, "contentHash": pack.content_hash},
        "outcome": outcome,
        "status": 0,
        "latencyMs": round(elapsed_seconds * 1000, 3),
        "error": None,
        "provenance": {},
        "context": {},
        **no_evaluation(),
        "run": run,
    }


def append_run(values: dict[str, Any], content: dict[str, Any]) -> int:
    """Append ``content`` to the record chain of the database the settings name (migrated first), and a
    checkpoint after it; return the record's seq."""
    engine = engine_for(database_url(values))
    ensure_schema(engine)
    lock = threading.Lock()
    writer = record_chains.ChainWriter(engine, lock, own_chains=values["AUDIT_OWN_CHAINS"])
    try:
        seq = writer.append([(content, hashing.canonical(content))])[0]
    finally:
        writer.close()
    record_chains.write_checkpoint(engine, lock)
    return seq
