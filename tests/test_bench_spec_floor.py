"""The benchmark's spec floor (bench/spec_floor.py) really does what it stands for: served by the service's
production server (cds/web/supervisor.py) on a real socket, it refuses a bad token and a replayed jti, and
its records chain (and a tampered record is caught)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench import spec_floor  # noqa: E402

ISS = "urn:cds:spec-floor-test"
PATH = "/cds-services/bone-health-order-sign"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _token(key, aud: str, jti: str | None = None, kid: str = "k1") -> str:
    now = int(time.time())
    claims = {"iss": ISS, "aud": aud, "iat": now, "exp": now + 300, "jti": jti or uuid.uuid4().hex}
    return jwt.encode(claims, key, algorithm="ES384", headers={"kid": kid, "typ": "JWT"})


def _post(url: str, token: str | None, body: dict) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/floor.sqlite3"
    return request.getfixturevalue("pg_base_url")


def test_spec_floor_verifies_tokens_refuses_replays_and_chains(database_url, tmp_path):
    key = ec.generate_private_key(ec.SECP384R1())
    public = jwt.algorithms.ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    public.update(kid="k1", alg="ES384", use="sig")
    trusted = tmp_path / "trusted.json"
    trusted.write_text(json.dumps({"clients": [{"iss": ISS, "jwks": {"keys": [public]}}]}))
    port = _free_port()
    aud = f"http://127.0.0.1:{port}{PATH}"
    env = {**os.environ, "CDS_DATABASE_URL": database_url, "CDS_TRUSTED_CLIENTS": str(trusted),
           "SPEC_FLOOR_AUDIENCE": aud, "PYTHONPATH": str(ROOT)}
    log = (tmp_path / "server.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "cds.web.supervisor", "--workers", "2", "--host", "127.0.0.1",
         "--port", str(port), "--app", "bench.spec_floor:app"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)
    try:
        deadline = time.time() + 90
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5):
                    break
            except OSError:
                assert proc.poll() is None, (tmp_path / "server.log").read_text()[-2000:]
                assert time.time() < deadline, "the spec floor did not answer /health within 90 s"
                time.sleep(0.2)
        url = f"http://127.0.0.1:{port}{PATH}"
        body = {"hook": "order-sign", "hookInstance": str(uuid.uuid4()), "context": {"patientId": "p1"}}

        jtis = [uuid.uuid4().hex for _ in range(5)]
        for jti in jtis:
            assert _post(url, _token(key, aud, jti), body) == (200, {"cards": []})

        replayed = _post(url, _token(key, aud, jtis[2]), body)
        assert replayed[0] == 401 and "used before" in replayed[1]["issue"][0]["diagnostics"]

        stranger = ec.generate_private_key(ec.SECP384R1())
        status, outcome = _post(url, _token(stranger, aud), body)
        assert status == 401 and outcome["resourceType"] == "OperationOutcome"
        assert _post(url, _token(key, "http://elsewhere.example/cds-services/x"), body)[0] == 401
        assert _post(url, _token(key, aud, kid="unknown"), body)[0] == 401
        assert _post(url, None, body)[0] == 401
        expired = jwt.encode({"iss": ISS, "aud": aud, "iat": 1, "exp": 2, "jti": "old"}, key,
                             algorithm="ES384", headers={"kid": "k1"})
        assert _post(url, expired, body)[0] == 401
        assert _post(url, _token(key, aud), {"context": {}})[0] == 400
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
        log.close()

    engine = spec_floor.make_engine(database_url)
    try:
        assert spec_floor.verify_chain(engine) == 5  # the five accepted calls, nothing for the refused ones
        with engine.connect() as conn:
            stored = conn.execute(text("SELECT content FROM spec_floor_chain WHERE seq = 3")).scalar()
        record = json.loads(stored)
        assert "p1" not in json.dumps(record) and record["hook"] == "order-sign"
        with engine.begin() as conn:
            conn.execute(text("UPDATE spec_floor_chain SET content = :c WHERE seq = 3"),
                         {"c": spec_floor.canonical({**record, "hook": "patient-view"})})
        with pytest.raises(ValueError, match="record 3 does not chain"):
            spec_floor.verify_chain(engine)
    finally:
        engine.dispose()
