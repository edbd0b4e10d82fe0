"""Development mode: a local client key pair made once, trusted with a loud warning; `cds dev-token`."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from cds import cli, create_app
from cds.auth.client_token import DEV_ISS, dev_client, sign_client_token

DISCOVERY = "http://localhost/cds-services"


def dev_token(capsys, url: str = DISCOVERY) -> str:
    assert cli.main(["dev-token", "--url", url]) == 0
    return capsys.readouterr().out.strip()


def test_dev_mode_makes_a_key_once_trusts_it_and_warns(tmp_path, caplog, capsys):
    caplog.set_level("WARNING", logger="cds.auth")
    folder = Path(os.environ["CDS_DEV_CLIENT_DIR"])
    app = create_app()
    assert any("DEVELOPMENT TRUST IS ON" in r.getMessage() for r in caplog.records)
    private_file = folder / "private-jwk.json"
    assert stat.S_IMODE(private_file.stat().st_mode) == 0o600
    public = json.loads((folder / "jwks.json").read_text())
    assert all("d" not in k for k in public["keys"])
    assert public["keys"][0]["alg"] == "ES384"
    first = private_file.read_bytes()

    token = dev_token(capsys)
    client = app.test_client()
    assert client.get("/cds-services", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert client.get("/cds-services", headers={"Authorization": f"Bearer {token}"}).status_code == 401

    create_app()  # a second start keeps the same key
    assert private_file.read_bytes() == first


def test_dev_client_is_not_trusted_once_trusted_clients_are_configured(auth_config, capsys):
    client = create_app({**auth_config, "DEV_MODE": True}).test_client()
    token = dev_token(capsys)
    assert client.get("/cds-services", headers={"Authorization": f"Bearer {token}"}).status_code == 401


def test_dev_client_is_not_trusted_with_dev_mode_off(tmp_path):
    private, _ = dev_client(os.environ["CDS_DEV_CLIENT_DIR"])
    client = create_app({"DEV_MODE": False}).test_client()
    token = sign_client_token(private, DEV_ISS, DISCOVERY)
    assert client.get("/cds-services", headers={"Authorization": f"Bearer {token}"}).status_code == 401


def test_processes_starting_together_agree_on_one_dev_key(tmp_path):
    results = []
    threads = [threading.Thread(target=lambda: results.append(dev_client(tmp_path / "dev")[0]["kid"]))
               for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 8 and len(set(results)) == 1
    assert sorted(p.name for p in (tmp_path / "dev").iterdir()) == ["jwks.json", "private-jwk.json"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_cds_serve_out_of_the_box_answers_a_dev_token(tmp_path):
    port = _free_port()
    env = {**os.environ, "CDS_PORT": str(port)}
    env.pop("CDS_DEV_MODE", None)
    env.pop("CDS_TRUSTED_CLIENTS", None)
    env.pop("CDS_PUBLIC_URL", None)  # the development server answers to the address it is bound to
    server = subprocess.Popen([sys.executable, "-m", "cds", "serve"], env=env, cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(base + "/health", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, "cds serve did not start"
            time.sleep(0.3)
        command = [sys.executable, "-m", "cds", "dev-token", "--url", base + "/cds-services"]
        token = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True,
                               check=True).stdout.strip()
        assert requests.get(base + "/cds-services", timeout=10).status_code == 401
        answer = requests.get(base + "/cds-services", headers={"Authorization": f"Bearer {token}"},
                              timeout=10)
        assert answer.status_code == 200
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
    finally:
        server.terminate()
        output = server.communicate(timeout=30)[0]
    assert "DEVELOPMENT TRUST IS ON" in output
    assert token not in output
