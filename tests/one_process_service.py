"""The service in one process (werkzeug, threaded), for tests that watch that process: its memory, or
its death at a chosen moment.

``python one_process_service.py PORT``, configured by the ``CDS_*`` environment as ``cds serve`` is. With
``PAUSE_AT=N`` and ``PAUSE_FILE=path``, the N-th call (counted from 1) stops still right after its record
is durable, before its started-call marker is removed (the moment at which a process killed there must not
leave its call counted twice): it writes its marker's name to the file, then waits for ever (until the
process is killed).
"""

from __future__ import annotations

import itertools
import os
import sys
import threading
import time
from pathlib import Path

os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)  # one process: the metrics stay in it

from werkzeug.serving import make_server  # noqa: E402

from cds import create_app  # noqa: E402
from cds.ledger.store import AuditStore  # noqa: E402

PAUSE_AT = int(os.environ.get("PAUSE_AT", "0"))
PAUSE_FILE = os.environ.get("PAUSE_FILE", "")
_calls = itertools.count(1)
_lock = threading.Lock()
_finished = AuditStore.call_finished


def _pausing(self: AuditStore, marker: Path | None) -> None:
    with _lock:
        n = next(_calls)
    if n == PAUSE_AT and marker is not None:  # the record is committed; the marker is still there
        Path(PAUSE_FILE).write_text(marker.name)
        while True:
            time.sleep(3600)
    _finished(self, marker)


if __name__ == "__main__":
    if PAUSE_AT:
        AuditStore.call_finished = _pausing  # type: ignore[method-assign]
    server = make_server("127.0.0.1", int(sys.argv[1]), create_app(), threaded=True)
    server.serve_forever()
