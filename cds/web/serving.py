"""Running the service: the development server, or gunicorn for production (``cds serve --prod``).

Production runs ``gunicorn "cds:create_app()"`` with ``CDS_WORKERS`` workers (0, the default, means
2 x cores + 1) bound to HOST:PORT. Before the workers start, ``PROMETHEUS_MULTIPROC_DIR`` is set to a
fresh folder (or the one given is emptied) so that ``/metrics`` adds up every worker.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path


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


def gunicorn_argv(host: str, port: int, workers: int, extra: list[str] | None = None) -> list[str]:
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "--config",
        "python:cds.web.gunicorn_conf",
        "--workers",
        str(workers),
        "--bind",
        f"{host}:{port}",
        *(extra or []),
        "cds:create_app()",
    ]


def run_production(host: str, port: int, workers: int) -> int:
    """Replace this process by gunicorn (never returns unless exec fails)."""
    prepare_metrics_dir()
    argv = gunicorn_argv(host, port, worker_count(workers))
    print(
        f"cds: starting gunicorn on http://{host}:{port} with {argv[argv.index('--workers') + 1]} workers",
        file=sys.stderr,
        flush=True,
    )
    os.execv(argv[0], argv)
    return 1  # pragma: no cover - only if exec returned
