"""Finding 2 (and 14, 5 under --prod): slow clients cannot freeze `cds serve --prod`, and production
refuses to start on development trust or without the URL it answers to.

A real `cds serve --prod` process (two workers of two threads) and real sockets: eight connections that
each send one header line every two seconds — reconnecting whenever the server closes them, as an attacker
would — while ``GET /health`` must keep answering promptly, and each is closed
``CDS_HEADER_TIMEOUT_SECONDS`` after its head began; a body that trickles in is cut off with a 408.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
from support import make_token
from test_serving import free_port, prod_env, wait_for_health

HEADER_TIMEOUT = 6.0
BODY_TIMEOUT = 4.0
SLOW_SOCKETS = 8
LINE_EVERY = 2.0


def start(tmp_path: Path, port: int, **extra: str) -> subprocess.Popen:
    env = prod_env(tmp_path, port, CDS_THREADS="2", CDS_HEADER_TIMEOUT_SECONDS=str(HEADER_TIMEOUT),
                   CDS_BODY_TIMEOUT_SECONDS=str(BODY_TIMEOUT), **extra)
    with (tmp_path / "service.log").open("w") as log:
        return subprocess.Popen([sys.executable, "-m", "cds", "serve", "--prod", "--port", str(port)],
                                cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture
def prod(tmp_path):
    port = free_port()
    proc = start(tmp_path, port)
    base = f"http://127.0.0.1:{port}"
    try:
        assert wait_for_health(base, proc) is not None, (tmp_path / "service.log").read_text()
        yield base, port
    finally:
        stop(proc)


class SlowClient(threading.Thread):
    """One connection at a time sending a header line every ``LINE_EVERY`` s; reconnects when closed."""

    def __init__(self, port: int, stop_at: float, kept_alive: bool = False):
        super().__init__(daemon=True)
        self.port, self.stop_at, self.kept_alive = port, stop_at, kept_alive
        self.connections = 0
        self.closed_by_server: list[float] = []  # seconds each connection lived

    def run(self) -> None:
        while time.monotonic() < self.stop_at:
            try:
                sock = socket.create_connection(("127.0.0.1", self.port), timeout=30)
            except OSError:
                time.sleep(0.2)
                continue
            self.connections += 1
            opened = time.monotonic()
            try:
                if self.kept_alive:  # one proper request first: the slow one comes on a kept-alive connection
                    sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                    answer = b""
                    while not answer.endswith(b"}\n"):
                        chunk = sock.recv(65536)
                        if not chunk:
                            raise ConnectionResetError
                        answer += chunk
                    assert answer.startswith(b"HTTP/1.1 200")
                sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
                n = 0
                while time.monotonic() < self.stop_at:
                    time.sleep(LINE_EVERY)
                    sock.sendall(b"X-Slow-%d: drip\r\n" % n)
                    n += 1
                    sock.settimeout(0.01)
                    try:
                        if sock.recv(1) == b"":
                            raise ConnectionResetError
                    except TimeoutError:
                        pass
                    finally:
                        sock.settimeout(30)
            except OSError:
                self.closed_by_server.append(time.monotonic() - opened)
            finally:
                sock.close()


@pytest.mark.slow
def test_slow_header_sockets_do_not_freeze_health(prod):
    base, port = prod
    until = time.monotonic() + 3 * HEADER_TIMEOUT
    slow = [SlowClient(port, until, kept_alive=n % 2 == 1) for n in range(SLOW_SOCKETS)]
    for client in slow:
        client.start()
    time.sleep(LINE_EVERY * 1.5)  # every slow socket is in, mid-headers
    latencies = []
    while time.monotonic() < until:
        started = time.monotonic()
        response = requests.get(f"{base}/health", timeout=30)
        latencies.append(time.monotonic() - started)
        assert response.status_code == 200
        time.sleep(0.25)
    for client in slow:
        client.join(timeout=60)
    assert len(latencies) > 10
    # gunicorn's stock gthread did not answer within 10 s here (docs/robustness.md); on a loaded machine a
    # prompt answer may still take a moment
    assert max(latencies) < 6.0, sorted(latencies)[-5:]
    assert sorted(latencies)[len(latencies) // 2] < 2.0, sorted(latencies)
    lived = [t for client in slow for t in client.closed_by_server]
    # the server closes a connection whose head is not complete HEADER_TIMEOUT after it began (checked each
    # second)
    assert lived and max(lived) < HEADER_TIMEOUT + LINE_EVERY + 5, lived
    assert all(client.connections >= 2 for client in slow)  # each reconnected, and was cut off again


@pytest.mark.slow
def test_a_trickling_body_is_cut_off_with_408_and_health_answers(prod):
    base, port = prod
    url = f"{base}/cds-services/bone-health-patient-view"
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    try:
        head = (f"POST /cds-services/bone-health-patient-view HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                f"Authorization: Bearer {make_token(url)}\r\nContent-Type: application/json\r\n"
                "Content-Length: 100000\r\n\r\n")
        sock.sendall(head.encode())
        started = time.monotonic()
        answer = b""
        while b"\r\n\r\n" not in answer and time.monotonic() - started < 60:
            sock.sendall(b" ")
            assert requests.get(f"{base}/health", timeout=30).status_code == 200
            sock.settimeout(1.0)
            try:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                answer += chunk
            except TimeoutError:
                pass
        elapsed = time.monotonic() - started
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert b"CDS_BODY_TIMEOUT_SECONDS" in answer or sock.recv(65536).find(b"CDS_BODY_TIMEOUT") >= 0
        assert BODY_TIMEOUT - 1 <= elapsed < BODY_TIMEOUT + 10, elapsed
    finally:
        sock.close()


@pytest.mark.parametrize("env, says", [
    ({"CDS_PUBLIC_URL": ""}, "--prod needs CDS_PUBLIC_URL"),
    ({"CDS_DEV_MODE": "true"}, "--prod refuses development trust"),
])
def test_prod_refuses_to_start_without_public_url_or_with_development_trust(tmp_path, env, says):
    port = free_port()
    full = prod_env(tmp_path, port, **env)
    done = subprocess.run([sys.executable, "-m", "cds", "serve", "--prod", "--port", str(port)], cwd=tmp_path,
                          env=full, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cds: error: ") and says in lines[0], done.stderr
    assert "Traceback" not in done.stderr and "gunicorn" not in done.stderr


def test_prod_refuses_a_trusted_clients_file_that_trusts_the_development_client(tmp_path):
    import json

    from cds.auth.client_token import DEV_ISS, dev_client

    _, jwks = dev_client(tmp_path / "dev")
    clients = tmp_path / "clients.json"
    clients.write_text(json.dumps({"clients": [{"iss": DEV_ISS, "jwks": jwks}]}))
    full = prod_env(tmp_path, free_port(), CDS_TRUSTED_CLIENTS=str(clients))
    done = subprocess.run([sys.executable, "-m", "cds", "serve", "--prod"], cwd=tmp_path, env=full,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and DEV_ISS in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_the_production_worker_answers_to_its_public_url_only(prod, tmp_path):
    """Finding 5 under --prod: a token for another URL is refused whatever Host or X-Forwarded-* say."""
    base, port = prod
    good = f"{base}/cds-services"
    assert requests.get(good, headers={"Authorization": f"Bearer {make_token(good)}"},
                        timeout=30).status_code == 200
    for aud, headers in [("http://attacker.example.org/cds-services", {"Host": "attacker.example.org"}),
                         (f"https://127.0.0.1:{port}/cds-services", {"X-Forwarded-Proto": "https"}),
                         ("https://evil.example.org/cds-services",
                          {"X-Forwarded-Host": "evil.example.org", "X-Forwarded-Proto": "https"})]:
        response = requests.get(good, headers={"Authorization": f"Bearer {make_token(aud)}", **headers},
                                timeout=30)
        assert response.status_code == 401, aud
