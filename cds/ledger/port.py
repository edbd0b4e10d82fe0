"""The ledger port: what the call layer records each hook call through, and the record it hands over.

The call layer holds a ``Ledger`` and never a store: ``cds.ledger.store.AuditStore`` writes to a database,
``cds.ledger.memory.MemoryLedger`` keeps records in memory (the offline evaluator, a batch run, the tests).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Protocol

from cds.decide.evaluate import Evaluation


class Ledger(Protocol):
    """Where each call's record goes, with the bracket around the call that counts a call whose process
    dies before it answers.

    ``call_started(service, when, record_id) -> marker`` is called when a call starts and
    ``call_finished(marker)`` when it ends, whatever its end (``record_id``: the id the call's record is
    given, so that a call whose record was made durable is never counted again). ``record_call(call,
    claim)`` receives one ``CallRecord`` per call, answered or refused. ``claim`` is opaque to the caller:
    the unit of work of the call's token id (``cds.auth.jti_store.Claim``) that a ledger able to take it
    settles in the record's transaction, raising ``TokenReplayed`` (the call answers 401 and nothing is
    kept) or ``AuthUnavailable``; a ledger that cannot take it leaves it unsettled for its owner."""

    def record_call(self, call: CallRecord, claim: Any = None) -> None: ...

    def call_started(self, service: str, when: dt.datetime, record_id: str) -> Any: ...

    def call_finished(self, marker: Any) -> None: ...


@dataclass
class CallRecord:
    """Everything the audit trail keeps about one hook call (no raw patient id, no token)."""

    service: str
    hook: str | None
    hook_instance: str | None
    patient_id: str | None  # hashed by the audit store before it is written
    client_iss: str | None
    started: dt.datetime
    latency_ms: float
    outcome: str  # ok | 4xx code | 412 | 5xx code
    status: int
    evaluation: Evaluation | None = None
    provenance: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    context: dict[str, Any] = field(default_factory=dict)  # hook context (the audit keeps a few fields)
    #: the record's key (a uuid), chosen when the call starts (its started-call marker and the call's log
    #: lines name it; the caller may choose it); the store makes one when it is None
    record_id: str | None = None
    #: which cards were kept quiet and why, with the fingerprints later calls compare against
    #: (``cds.call.suppression``); None when the call made no such decision
    suppression: dict[str, Any] | None = None
