"""Group commit: the audit entries of concurrent calls made durable together, by one writer per process.

A request thread hands its entry to ``GroupCommit.submit`` and waits. The writer thread takes every entry
waiting (up to ``max_batch``) and hands them to ``write`` (the store's ``_submit_batch``) at once: one
transaction for all of them, or, when that fails, the store's own fallbacks (one by one, so that a poison
entry fails alone; the spool when the database is down). ``submit`` returns once the writer has dealt
with that entry — committed, spooled, set aside or held — and raises what dealing with it raised, so a
call answers only after its record is durable, as it does without group commit.

While a batch is being written the next one gathers: the more calls arrive together, the fewer
transactions (and the fewer waits for the disk) each costs.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

log = logging.getLogger("cds.audit")

Entry = dict[str, Any]
BatchWrite = Callable[[list[Entry]], list[BaseException | None]]


class _Waiter:
    __slots__ = ("entry", "done", "error")

    def __init__(self, entry: Entry):
        self.entry = entry
        self.done = threading.Event()
        self.error: BaseException | None = None


class GroupCommit:
    def __init__(self, write: BatchWrite, *, after: Callable[[], Any] | None = None, max_batch: int = 64):
        self.write = write
        self.after = after  # run by the writer after each batch's callers are woken (checkpoints)
        self.max_batch = max_batch
        self._cv = threading.Condition()
        self._queue: deque[_Waiter] = deque()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._stopped = False
        self.batches = 0  # batches written (since start)
        self.entries = 0  # entries written in them

    def submit(self, entry: Entry) -> None:
        """Wait until the writer has dealt with ``entry``; raise what dealing with it raised."""
        waiter = _Waiter(entry)
        with self._cv:
            if self._stopped:
                raise RuntimeError("the audit writer is stopped")
            self._queue.append(waiter)
            self._ensure_thread()
            self._cv.notify()
        waiter.done.wait()
        if waiter.error is not None:
            raise waiter.error

    def _ensure_thread(self) -> None:
        """Start the writer (caller holds ``_cv``); again in a forked child, whose parent's thread is gone."""
        if self._pid != os.getpid():
            self._pid, self._thread = os.getpid(), None
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="cds-audit-writer", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._queue:
                    if self._stopped:
                        return
                    self._cv.wait()
                batch = [self._queue.popleft() for _ in range(min(self.max_batch, len(self._queue)))]
            try:
                errors = self.write([w.entry for w in batch])
            except BaseException as exc:  # noqa: BLE001 - every waiter must be woken, whatever happened
                log.exception("audit writer failed on a batch of %d entries", len(batch))
                errors = [exc] * len(batch)
            self.batches += 1
            self.entries += len(batch)
            for waiter, error in zip(batch, errors, strict=True):
                waiter.error = error
                waiter.done.set()
            if self.after is not None:
                try:
                    self.after()
                except Exception:  # noqa: BLE001 - the writer keeps writing
                    log.exception("audit writer: after-batch step failed")

    def close(self) -> None:
        """Stop the writer once the entries already waiting are written."""
        with self._cv:
            self._stopped = True
            self._cv.notify_all()
