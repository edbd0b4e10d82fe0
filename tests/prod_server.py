"""A real `cds serve --prod` on a free local port, and raw-socket helpers for the tests that attack it.

``running(folder, **env)`` starts the service with production trust (the published test client key), waits
for ``GET /health`` and stops it with SIGTERM afterwards. ``read_answer`` reads one HTTP/1.1 answer from a
socket, byte-exact, so that pipelined answers can be told apart.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from test_serving import free_port, prod_env, wait_for_health


@dataclass
class Prod:
    base: str
    port: int
    log: Path
    proc: subprocess.Popen

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@contextlib.contextmanager
def running(folder: Path, **env: str) -> Iterator[Prod]:
    port = free_port()
    log = folder / "service.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "cds", "serve", "--prod", "--port", str(port)],
                                cwd=folder, env=prod_env(folder, port, **env), stdout=out,
                                stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        assert wait_for_health(base, proc) is not None, log.read_text()
        yield Prod(base, port, log, proc)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


class Reader:
    """HTTP/1.1 answers read one after the other from one socket (``Content-Length`` framed)."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buffer = b""

    def _more(self, deadline: float) -> None:
        self.sock.settimeout(max(0.1, deadline - time.monotonic()))
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed by the server; unread: {self.buffer[:200]!r}")
        self.buffer += chunk

    def answer(self, seconds: float = 60) -> Answer:
        deadline = time.monotonic() + seconds
        while b"\r\n\r\n" not in self.buffer:
            self._more(deadline)
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers["content-length"])
        while len(self.buffer) < length:
            self._more(deadline)
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return Answer(status, headers, body)


def read_answer(sock: socket.socket, seconds: float = 60) -> Answer:
    return Reader(sock).answer(seconds)


def closed_by_server(sock: socket.socket, seconds: float = 30) -> bool:
    """Whether the server closes this socket (after whatever it still sends) within ``seconds``."""
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            if not sock.recv(65536):
                return True
    except TimeoutError:
        return False
    except OSError:
        return True  # reset
    return False
