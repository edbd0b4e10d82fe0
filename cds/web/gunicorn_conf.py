"""gunicorn settings for ``cds serve --prod`` (loaded as ``-c python:cds.web.gunicorn_conf``).

Workers, bind address and the metrics folder come from the command line ``cds serve --prod`` builds
(``cds/web/serving.py``); this file adds what only a config file can: the worker-exit hook that keeps the
Prometheus multi-process metrics right.
"""

from __future__ import annotations

from typing import Any

accesslog = "-"
forwarded_allow_ips = "127.0.0.1"


def child_exit(server: Any, worker: Any) -> None:
    from cds.web.metrics import mark_process_dead

    mark_process_dead(worker.pid)
