"""Run the service as a real production process (``cds serve --prod``: waitress) on a free local port.

Used by the robustness scripts (``fuzz_api.py``, ``soak.py``) and their short versions in the test suite.
The process trusts only the published test client (``tests/data/test-client-jwks.json``), so the caller
signs its own tokens with ``sign(url)``.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from cds.auth.client_token import public_jwk, sign_client_token

ROOT = Path(__file__).resolve().parent.parent
KEYS = ROOT / "tests" / "data" / "test-client-jwks.json"
TEST_ISS = "https://ehr.example.org/cds-client"
_PRIVATE = {k["alg"]: k for k in json.loads(KEYS.read_text())["keys"] if "d" in k}


def sign(url: str, *, alg: str = "ES384", **kwargs: Any) -> str:
    """A fresh test-client token (new ``jti``) for a call to exactly ``url``."""
    return sign_client_token(_PRIVATE[alg], TEST_ISS, url, alg=alg, **kwargs)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def trusted_clients(folder: Path) -> Path:
    path = folder / "trusted-clients.json"
    public = {"keys": [public_jwk(k) for k in _PRIVATE.values()]}
    path.write_text(json.dumps({"clients": [{"iss": TEST_ISS, "jwks": copy.deepcopy(public)}]}))
    return path


@dataclass
class ServiceProcess:
    url: str
    proc: subprocess.Popen
    folder: Path
    log: Path

    def worker_pids(self) -> list[int]:
        """The server processes (children of the supervisor)."""
        try:
            text = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        except OSError:
            return []
        return [int(p) for p in text.split()]

    def worker_rss_kib(self) -> dict[int, int]:
        out = {}
        for pid in self.worker_pids():
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        out[pid] = int(line.split()[1])
            except OSError:
                continue
        return out


@contextlib.contextmanager
def service(
    database_url: str | None = None,
    *,
    workers: int = 2,
    folder: Path | None = None,
    env: dict[str, str] | None = None,
    startup_seconds: float = 90,
    launcher: Path | None = None,
) -> Iterator[ServiceProcess]:
    """``cds serve --prod`` on a free port in its own folder; stopped (SIGTERM, then SIGKILL) on exit.
    ``launcher``: a Python script run instead, given the port as its argument (``workers`` 0: one process,
    no workers to wait for)."""
    folder = Path(folder or tempfile.mkdtemp(prefix="cds-robust-"))
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    full_env = {
        **os.environ,
        "CDS_DEV_MODE": "false",
        "CDS_TRUSTED_CLIENTS": str(trusted_clients(folder)),
        "CDS_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "CDS_DATABASE_URL": database_url or f"sqlite:///{folder}/audit.sqlite3",
        "CDS_AUDIT_SPOOL_DIR": str(folder / "spool"),
        "CDS_AUDIT_PATIENT_KEY_SECRET": "robustness-test-patient-key-secret",
        "CDS_LINK_SECRET": "robustness-test-link-secret-0123456789",
        "CDS_AUDIT_SPOOL_RETRY_SECONDS": "0.5",
        "CDS_WORKERS": str(workers),
        "CDS_LOG_LEVEL": "WARNING",
        "PROMETHEUS_MULTIPROC_DIR": str(folder / "metrics"),
        **(env or {}),
    }
    log = folder / "service.log"
    with log.open("w") as out:
        command = [str(launcher), str(port)] if launcher else \
            ["-m", "cds", "serve", "--prod", "--port", str(port)]
        proc = subprocess.Popen(
            [sys.executable, *command],
            cwd=folder,
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    running = ServiceProcess(f"http://127.0.0.1:{port}", proc, folder, log)
    try:
        deadline = time.monotonic() + startup_seconds
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the service stopped at start-up:\n{log.read_text()[-3000:]}")
            try:
                if requests.get(f"{running.url}/health", timeout=2).status_code in (200, 503):
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the service did not answer within {startup_seconds} s:\n{log.read_text()[-3000:]}"
                )
            time.sleep(0.3)
        # every worker must be up (each migrates and loads the rule pack) before the clock starts
        while len(running.worker_pids()) < workers and time.monotonic() < deadline:
            time.sleep(0.2)
        yield running
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
