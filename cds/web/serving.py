"""Running the service: the development server, or waitress processes for production (``cds serve --prod``).

Production runs ``CDS_WORKERS`` processes (0, the default, means 2 x cores + 1) of ``CDS_THREADS`` threads
each, sharing one socket bound to HOST:PORT (``cds/web/supervisor.py``, ``cds/web/httpserver.py``). Before
they start, ``PROMETHEUS_MULTIPROC_DIR`` is set to a fresh folder (or the one given is emptied) so that
``/metrics`` adds up every process.

``--prod`` refuses to start (one line, exit status 2) without ``CDS_PUBLIC_URL`` or ``CDS_AUDIENCES`` (the
URLs clients call: the ``aud`` of their tokens and the base of card links are never taken from a request's
Host header), with development trust (``CDS_DEV_MODE`` on, or a trusted-clients file that trusts the
development client), and without the link secret (``CDS_LINK_SECRET``, or ``CDS_LINK_SECRET_FILE`` naming a
file that holds one; never the development file).
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def worker_count(setting: int, cores: int | None = None) -> int:
    if setting > 0:
        return setting
    return 2 * (cores or os.cpu_count() or 1) + 1


def prepare_metrics_dir(environ: dict[str, str] | os._Environ[str] = os.environ) -> str:
    """Set ``PROMETHEUS_MULTIPROC_DIR`` to an empty folder (a new temporary one unless already set)."""
    folder = environ.get("PROMETHEUS_MULTIPROC_DIR")
    if folder:
        path = Path(folder)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):
            stale.unlink()
    else:
        folder = tempfile.mkdtemp(prefix="cds-metrics-")
        environ["PROMETHEUS_MULTIPROC_DIR"] = folder
    return folder


def production_problems(values: Mapping[str, Any]) -> list[str]:
    """Why these settings must not run in production (empty when they may)."""
    from cds.auth.client_token import DEV_ISS
    from cds.auth.trusted_clients import load_trusted_clients
    from cds.ledger.keys import production_link_secret_problem

    problems = []
    if not (values.get("PUBLIC_URL") or values.get("AUDIENCES")):
        problems.append("--prod needs CDS_PUBLIC_URL, the base URL clients call (the aud of their tokens)")
    if values.get("DEV_MODE"):
        problems.append("--prod refuses development trust: set CDS_DEV_MODE=false and CDS_TRUSTED_CLIENTS")
    elif values.get("TRUSTED_CLIENTS") and DEV_ISS in load_trusted_clients(values["TRUSTED_CLIENTS"]):
        problems.append(f"--prod refuses development trust: {values['TRUSTED_CLIENTS']} trusts {DEV_ISS}")
    link_secret = production_link_secret_problem(values)
    if link_secret:
        problems.append(link_secret)
    return problems


def run_production(values: Mapping[str, Any]) -> int:
    """Serve until SIGTERM or SIGINT (``cds/web/supervisor.py``); 2 when the settings are refused."""
    problems = production_problems(values)
    if problems:
        print(f"cds: error: {'; '.join(problems)}", file=sys.stderr, flush=True)
        return 2
    from cds.web import supervisor

    prepare_metrics_dir()
    if values.get("LOG_FORMAT") == "json":  # the supervisor's own lines as JSON too (the workers' by the app)
        from cds.web.logs import configure

        configure(values["LOG_LEVEL"], "json")
        supervisor.JSON_LINES = True
    if values.get("METRICS_ENABLED", True) and not values.get("METRICS_TOKEN"):
        supervisor.say("warning: /metrics is open to anyone who reaches the port; set CDS_METRICS_TOKEN or "
                       "keep /metrics from the proxy (docs/security.md)")
    return supervisor.serve(values["HOST"], values["PORT"], worker_count(values["WORKERS"]))
