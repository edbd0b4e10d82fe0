"""Started-call markers: a hook call whose process dies before it answers (kill -9, OOM, a worker timeout)
is still counted and recorded.

Each process owns ``<owner>.lock`` in the markers folder (``<spool>/calls``), holding an exclusive
``flock`` on it for as long as it lives; the kernel releases the lock when the process dies, however it
dies. Before a call is evaluated the process creates ``<owner>-<n>.call`` (service and start time; no
patient data) and removes it once the call's audit entry is submitted. A marker whose owner's lock can be
taken belongs to a dead process: ``reap`` (run by ``/health``, ``/metrics`` and at start-up, in any
process sharing the folder) turns each such marker into an audit record with outcome ``interrupted`` and
removes it. Holding the dead owner's lock while reaping keeps two reapers from recording a call twice.

A process can also die after its call's record is durable and before the marker is removed. The marker
therefore names the id the call's record is written with (``record``), and ``reap`` hands it on: the
store records the marker only when no record with that id is in the trail (spool or database), and
gives the ``interrupted`` record that same id, so the trail never holds a call twice.

A marker costs one small file create and one unlink per call, without fsync: it survives the death of
the process, not the loss of the machine's power.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import itertools
import json
import logging
import os
import secrets
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cds.db import private_folder

log = logging.getLogger("cds.audit")


class CallMarkers:
    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self._pid: int | None = None
        self._owner = ""
        self._lock_fd: int | None = None
        self._counter = itertools.count()
        self._mutex = threading.Lock()

    def _own(self) -> str:
        """This process's owner name, taking its lock file the first time (and again after a fork)."""
        if self._pid == os.getpid():
            return self._owner
        with self._mutex:
            if self._pid != os.getpid():
                private_folder(self.folder)
                owner = f"{os.getpid()}.{secrets.token_hex(4)}"
                # locked before it takes its name, so no reaper ever sees it unlocked
                tmp = self.folder / f".{owner}.tmp"
                fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
                fcntl.flock(fd, fcntl.LOCK_EX)
                os.replace(tmp, self.folder / f"{owner}.lock")
                self._owner, self._lock_fd, self._pid = owner, fd, os.getpid()
        return self._owner

    def start(self, service: str, started: dt.datetime, record_id: str | None = None) -> Path | None:
        """Mark a call as started (``record_id``: the id its record will have); None (and a warning) when
        the marker cannot be written."""
        try:
            path = self.folder / f"{self._own()}-{next(self._counter)}.call"
            data = json.dumps({"service": service, "started": started.isoformat(),
                               "record": record_id}).encode()
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
            return path
        except OSError as exc:
            log.warning("started-call marker not written (%s): a crash during this call would go uncounted",
                        type(exc).__name__)
            return None

    def end(self, marker: Path | None) -> None:
        if marker is not None:
            try:
                marker.unlink()
            except OSError:
                pass

    def _dead_owners(self) -> list[Path]:
        try:
            locks = sorted(self.folder.glob("*.lock"))
        except OSError:
            return []
        mine = f"{self._owner}.lock" if self._pid == os.getpid() else None
        return [p for p in locks if p.name != mine]

    def pending(self) -> int:
        """Markers of dead processes not yet recorded."""
        total = 0
        for lock in self._dead_owners():
            with _taken(lock) as taken:
                if taken:
                    total += len(list(self.folder.glob(f"{lock.stem}-*.call")))
        return total

    def reap(self, record: Callable[[dict[str, Any]], bool | None]) -> int:
        """Hand each dead process's markers to ``record`` (then remove them); returns how many it recorded
        (``record`` returns False for a call whose record is in the trail already). When ``record`` raises,
        the marker and its owner's lock stay, for the next reap."""
        done = 0
        for lock in self._dead_owners():
            with _taken(lock) as taken:
                if not taken:
                    continue  # alive, or another process is reaping it
                for marker in sorted(self.folder.glob(f"{lock.stem}-*.call")):
                    try:
                        data = json.loads(marker.read_bytes())
                    except (OSError, ValueError):
                        data = {}
                    recorded = record({"service": str(data.get("service") or "unknown"),
                                       "started": data.get("started"), "marker": marker.name,
                                       "record": data.get("record") if isinstance(data.get("record"), str)
                                       else None})
                    marker.unlink(missing_ok=True)
                    done += recorded is not False
                lock.unlink(missing_ok=True)
        if done:
            log.error("%d hook call(s) interrupted: their process stopped before answering", done)
        return done


class _taken:
    """``with _taken(path) as ok``: ok when an exclusive, non-blocking flock on ``path`` was taken."""

    def __init__(self, path: Path):
        self.path = path
        self.fd: int | None = None

    def __enter__(self) -> bool:
        try:
            self.fd = os.open(self.path, os.O_RDWR)
        except OSError:
            return False
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError:
            os.close(self.fd)
            self.fd = None
            return False

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            os.close(self.fd)
