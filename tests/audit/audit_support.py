"""Fixtures for the audit-trail tests: hook bodies, apps on SQLite and PostgreSQL, a TCP proxy for outages."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, make_url, text
from support import AuthedClient, TcpProxy, trusted_clients_file_in  # noqa: F401

from cds.web.app import create_app

PG_URL = os.environ.get("CDS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
AUDITOR_TOKEN = "auditor-token-for-tests"
AUDITOR_ENTRY = f"alice:{hashlib.sha256(AUDITOR_TOKEN.encode()).hexdigest()}"
BEARER = {"Authorization": f"Bearer {AUDITOR_TOKEN}"}
SECRET = "test-patient-key-secret-0123456789"

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"


def _ai_order(patient: str, drug: tuple[str, str] = ("84857", "anastrozole")) -> dict[str, Any]:
    return {
        "resourceType": "MedicationRequest",
        "id": f"m-{uuid.uuid4().hex[:8]}",
        "status": "active",
        "intent": "order",
        "subject": {"reference": f"Patient/{patient}"},
        "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": drug[0], "display": drug[1]}]},
    }


def _dxa(patient: str, obs_id: str, date: str, t_score: float) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": obs_id,
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "38267-1"}]},
        "subject": {"reference": f"Patient/{patient}"},
        "effectiveDateTime": date,
        "valueQuantity": {
            "value": t_score,
            "unit": "{T-score}",
            "system": "http://unitsofmeasure.org",
            "code": "{T-score}",
        },
    }


def _calcium(patient: str, obs_id: str, date: str, mg_dl: float) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": obs_id,
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "17861-6"}]},
        "subject": {"reference": f"Patient/{patient}"},
        "effectiveDateTime": date,
        "valueQuantity": {"value": mg_dl, "unit": "mg/dL", "system": "http://unitsofmeasure.org",
                          "code": "mg/dL"},
    }


def _bundle(*resources: dict[str, Any]) -> dict[str, Any] | None:
    if not resources:
        return None
    return {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in resources]}


def hook_body(
    patient: str = "pat-1", *, dxa_drop: bool = False, on_ai: bool = True, instance: str | None = None
) -> dict[str, Any]:
    """A patient-view request: on anastrozole, a recent normal calcium, no vitamin D (one card); ``dxa_drop``
    adds a falling DXA."""
    tag = uuid.uuid4().hex[:8]  # resource ids unrelated to the patient id
    # A recent normal baseline DXA (no "DXA due" card); ``dxa_drop`` adds an earlier scan 0.4 higher, a
    # significant fall that stays in the normal range (one "falling bone density" card and nothing more).
    dxa = (
        (_dxa(patient, f"d1-{tag}", "2024-01-10", -0.2), _dxa(patient, f"d2-{tag}", "2026-01-10", -0.6))
        if dxa_drop
        else (_dxa(patient, f"d2-{tag}", "2026-01-10", -0.2),)
    )
    return {
        "hook": "patient-view",
        "hookInstance": instance or str(uuid.uuid4()),
        "context": {"userId": "Practitioner/dr-1", "patientId": patient},
        "prefetch": {
            "patient": {
                "resourceType": "Patient",
                "id": patient,
                "gender": "female",
                "birthDate": "1958-03-04",
            },
            "estradiol": None,
            "vitaminD": None,
            "monitoring": _bundle(_calcium(patient, f"ca-{tag}", "2026-10-01", 9.4)),
            "dxa": _bundle(*dxa),
            "medications": _bundle(*([_ai_order(patient)] if on_ai else [])),
        },
    }


SERVICE = "bone-health-patient-view"


@pytest.fixture
def pg_url(pg_base_url: str) -> Iterator[str]:
    """The session schema, emptied of audit rows before each test (one chain per test)."""
    engine = create_engine(pg_base_url)
    with engine.begin() as conn:
        exists = conn.execute(text("SELECT to_regclass('audit_record')")).scalar()
        if exists:
            conn.execute(
                text("TRUNCATE audit_checkpoint, audit_quarantine, audit_feedback, audit_card, audit_record, "
                     "seen_jti RESTART IDENTITY")
            )
    engine.dispose()
    yield pg_base_url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/db/audit.sqlite3"
    return request.getfixturevalue("pg_url")


@pytest.fixture
def make_app(tmp_path) -> Callable[..., Any]:
    def trusted_clients_file() -> Path:
        return trusted_clients_file_in(tmp_path)

    def make(url: str, **overrides: Any):
        config = {
            "DEV_MODE": False,
            "TRUSTED_CLIENTS": str(trusted_clients_file()),
            "DATABASE_URL": url,
            "AUDIT_SPOOL_DIR": str(tmp_path / "spool"),
            "AUDIT_PATIENT_KEY_SECRET": SECRET,
            "LINK_SECRET": SECRET,
            "AUDITOR_TOKENS": AUDITOR_ENTRY,
            "AUDIT_SPOOL_RETRY_SECONDS": 0.1,
            "AUDIT_CHECKPOINT_SECONDS": 3600,  # the checkpoint tests write theirs when they want them
            "LOG_LEVEL": "WARNING",
            # the outage tests keep the cards going: replay checked per host meanwhile (off the spool's disk)
            "REPLAY_FALLBACK": "host",
            "REPLAY_FALLBACK_DIR": str(ram_folder),
            **overrides,
        }
        app = create_app(config)
        app.test_client_class = AuthedClient
        apps.append(app)
        return app

    apps: list[Any] = []
    ram_folder = Path("/dev/shm") / f"cds-test-jti-{uuid.uuid4().hex}"
    yield make
    for app in apps:
        app.extensions["cds.audit"].close()
    shutil.rmtree(ram_folder, ignore_errors=True)


@pytest.fixture
def app(db_url, make_app):
    return make_app(db_url)


@pytest.fixture
def pg_proxy(pg_base_url: str) -> Iterator[TcpProxy]:
    target = make_url(PG_URL)
    proxy = TcpProxy((target.host or "127.0.0.1", target.port or 5432))
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture(scope="session", autouse=True)
def _dispose_shared_engines() -> Iterator[None]:
    yield
    from cds import db

    for engine in list(db._ENGINES.values()):
        engine.dispose()
    db._ENGINES.clear()


class PrivateServer:
    """A throw-away PostgreSQL server of this test's own (initdb in a temporary folder), so that a test can
    really stop and restart it without touching the shared server."""

    def __init__(self, bindir: Path, folder: Path, port: int):
        self.bindir, self.folder, self.port = bindir, folder, port
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"

    def _pg_ctl(self, *args: str) -> None:
        subprocess.run(
            [
                "runuser",
                "-u",
                "postgres",
                "--",
                str(self.bindir / "pg_ctl"),
                "-D",
                str(self.folder / "data"),
                *args,
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )

    def start(self) -> None:
        self._pg_ctl(
            "-o",
            f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off",
            "-l",
            str(self.folder / "server.log"),
            "-w",
            "start",
        )

    def stop(self) -> None:
        self._pg_ctl("-m", "fast", "-w", "stop")


@pytest.fixture
def private_pg() -> Iterator[PrivateServer]:
    initdbs = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not initdbs or os.geteuid() != 0 or not shutil.which("runuser"):
        pytest.skip(
            "a private PostgreSQL server needs the server binaries (/usr/lib/postgresql/*/bin) and root"
        )
    folder = Path(tempfile.mkdtemp(prefix="cds-audit-pg-"))
    shutil.chown(folder, "postgres")
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    server = PrivateServer(initdbs[-1].parent, folder, port)
    try:
        subprocess.run(
            [
                "runuser",
                "-u",
                "postgres",
                "--",
                str(initdbs[-1]),
                "-D",
                str(folder / "data"),
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        server.start()
        yield server
    finally:
        try:
            server.stop()
        except (subprocess.SubprocessError, OSError):
            pass
        shutil.rmtree(folder, ignore_errors=True)
