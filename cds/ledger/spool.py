"""The durable local spool: where audit entries wait while the database is unavailable.

One file per entry in the spool folder, named so that sorting the names gives the order of arrival
(``<time_ns>-<pid>-<counter>.json``). An entry is written to a temporary name, fsynced, renamed into
place and the folder fsynced, so a crash leaves either the whole entry or nothing. Draining takes an
exclusive ``flock`` on ``.drain.lock`` so that one process at a time moves entries to the database, in
name order, deleting each file only after its database transaction committed. Several processes may
share one spool folder.
"""

from __future__ import annotations

import fcntl
import itertools
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cds.db import private_folder

_COUNTER = itertools.count()


class Unstorable(Exception):
    """Raised by a drain's ``write`` for an entry no database write can take: the file is kept as
    ``<name>.poison`` and the drain goes on."""

_COUNTER_LOCK = threading.Lock()


class Spool:
    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    def _ensure(self) -> None:
        private_folder(self.folder)

    def append(self, entry: dict[str, Any]) -> Path:
        """Write one entry durably; raise ``OSError`` when it cannot be written."""
        self._ensure()
        with _COUNTER_LOCK:
            n = next(_COUNTER)
        name = f"{time.time_ns():020d}-{os.getpid():08d}-{n:08d}.json"
        tmp = self.folder / f".{name}.tmp"
        data = json.dumps(entry, separators=(",", ":"), default=str).encode("utf-8")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        final = self.folder / name
        os.replace(tmp, final)
        self._fsync_folder()
        return final

    def _fsync_folder(self) -> None:
        fd = os.open(self.folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def files(self) -> list[Path]:
        try:
            return sorted(
                p for p in self.folder.iterdir() if p.suffix == ".json" and not p.name.startswith(".")
            )
        except (FileNotFoundError, NotADirectoryError):
            return []

    def count(self) -> int:
        return len(self.files())

    def poisoned(self) -> int:
        """Entries set aside as ``.poison`` files (not even the quarantine table could take them)."""
        try:
            return sum(1 for p in self.folder.iterdir() if p.suffix == ".poison")
        except (FileNotFoundError, NotADirectoryError):
            return 0

    def holds(self, text: str) -> bool:
        """Whether any entry waiting here (or set aside as ``.poison``) contains ``text`` (a record id)."""
        needle = text.encode()
        try:
            paths = [p for p in self.folder.iterdir() if p.suffix in (".json", ".poison")]
        except (FileNotFoundError, NotADirectoryError):
            return False
        for path in paths:
            try:
                if needle in path.read_bytes():
                    return True
            except FileNotFoundError:
                continue  # drained meanwhile: the database has it
        return False

    def pending(self) -> bool:
        try:
            with os.scandir(self.folder) as it:
                return any(e.name.endswith(".json") and not e.name.startswith(".") for e in it)
        except (FileNotFoundError, NotADirectoryError):
            return False

    @contextmanager
    def _drain_lock(self, wait: bool) -> Iterator[bool]:
        self._ensure()
        with open(self.folder / ".drain.lock", "a+b") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def drain(self, write: Callable[[dict[str, Any]], None], *, wait: bool = False) -> int:
        """Hand every entry, oldest first, to ``write`` (one database transaction each); delete it after.

        Stops at the first entry ``write`` raises on and re-raises (the entry stays for the next try),
        except ``Unstorable``: that entry's file is renamed ``.poison`` and the drain goes on.
        Returns how many entries were moved; 0 when another process is draining and ``wait`` is false.
        """
        moved = 0
        with self._drain_lock(wait) as locked:
            if not locked:
                return 0
            while True:
                batch = self.files()
                if not batch:
                    return moved
                for path in batch:
                    try:
                        entry = json.loads(path.read_bytes())
                    except FileNotFoundError:
                        continue
                    except ValueError:
                        path.rename(path.with_suffix(".corrupt"))  # kept for a person to look at
                        continue
                    try:
                        write(entry)
                    except Unstorable:
                        path.rename(path.with_suffix(".poison"))
                        continue
                    path.unlink()
                    moved += 1
