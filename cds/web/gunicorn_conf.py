"""gunicorn settings for ``cds serve --prod`` (loaded as ``-c python:cds.web.gunicorn_conf``).

Workers, bind address and the metrics folder come from the command line ``cds serve --prod`` builds
(``cds/web/serving.py``); this file adds what only a config file can: the worker class, its threads and
time limits, and the worker-exit hook that keeps the Prometheus multi-process metrics right.

The worker (``cds.web.worker.BoundedThreadWorker``) is gunicorn's gthread with the request head read in
its event loop: a slow client costs a socket until ``CDS_HEADER_TIMEOUT_SECONDS``, never a thread, and a
body has ``CDS_BODY_TIMEOUT_SECONDS`` to arrive. Threads serve requests whose head is complete;
processes (``CDS_WORKERS``) give the CPU-bound evaluation the cores.
"""

from __future__ import annotations

from typing import Any

from cds import settings as _settings

_values = _settings.load()

accesslog = "-"
forwarded_allow_ips = "127.0.0.1"
worker_class = "cds.web.worker.BoundedThreadWorker"
threads = max(1, _values["THREADS"])
keepalive = 5  # seconds an idle kept-alive connection stays open
timeout = 60  # a worker whose event loop is silent this long is restarted (a thread busy on a call is not)
graceful_timeout = 20


if _values["LOG_FORMAT"] == "json":  # gunicorn's own lines (start-up, workers, access) as JSON too
    logconfig_dict = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "cds.web.logs.json_formatter"}},
        "filters": {"lines": {"()": "cds.web.logs.CallContext"}},  # no link signature in an access line
        "handlers": {
            "console": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stdout",
                        "filters": ["lines"]},
            "error_console": {"class": "logging.StreamHandler", "formatter": "json",
                              "stream": "ext://sys.stderr"},
        },
        "root": {"level": "INFO", "handlers": []},  # the service's own handler (cds.web.logs.configure)
        "loggers": {
            "gunicorn.error": {"level": "INFO", "handlers": ["error_console"], "propagate": False},
            "gunicorn.access": {"level": "INFO", "handlers": ["console"], "propagate": False},
        },
    }


def child_exit(server: Any, worker: Any) -> None:
    from cds.web.metrics import mark_process_dead

    mark_process_dead(worker.pid)
