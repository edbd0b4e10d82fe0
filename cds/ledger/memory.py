"""A ledger in memory: the call records in a list, for the offline evaluator, a batch run and the tests.

``MemoryLedger`` implements ``cds.ledger.port.Ledger``. It is safe to share between threads. It keeps no
token claims (a claim handed to it stays unsettled for its owner to settle) and writes nothing to disk;
its markers are counters, so ``open_calls`` says how many calls have started and not yet finished.
"""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

from cds.ledger import history
from cds.ledger.port import CallRecord


class MemoryLedger:
    """Keeps every ``CallRecord`` in ``calls``, in the order they were recorded."""

    def __init__(self) -> None:
        self.calls: list[CallRecord] = []
        self._lock = threading.Lock()
        self._started = 0
        self._open: set[int] = set()

    def record_call(self, call: CallRecord, claim: Any = None) -> None:
        with self._lock:
            self.calls.append(call)

    def call_started(self, service: str, when: dt.datetime, record_id: str) -> int:
        with self._lock:
            self._started += 1
            self._open.add(self._started)
            return self._started

    def call_finished(self, marker: Any) -> None:
        with self._lock:
            self._open.discard(marker)

    def card_history(self, patient_id: str, since: dt.datetime, *,
                     recent: int | None = None) -> history.History:
        """``CardHistory``: the cards of the patient's latest calls kept here since ``since`` (no feedback is
        kept here, so only the encounter rule reads them)."""
        with self._lock:
            mine = [c for c in self.calls if c.patient_id == patient_id]
        recent = history.RECENT_CALLS if recent is None else recent
        calls = mine[-recent:] if recent > 0 else []  # the latest, as the database ledger reads them
        return history.from_contents([history.content_of_call(c) for c in calls], [], patient_id, since)

    def clear(self) -> None:
        """Drop the records kept so far (a long run keeps only what it still reads)."""
        with self._lock:
            self.calls.clear()

    @property
    def last(self) -> CallRecord | None:
        """The latest record, or None before the first."""
        with self._lock:
            return self.calls[-1] if self.calls else None

    @property
    def started(self) -> int:
        """How many calls have started."""
        return self._started

    @property
    def open_calls(self) -> int:
        """How many calls have started and not finished."""
        with self._lock:
            return len(self._open)
