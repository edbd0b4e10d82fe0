"""The processes of ``cds serve --prod``: one listening socket, several server processes sharing it.

    python -m cds.web.supervisor --host H --port P --workers N [--app "cds:create_app()"]

The evaluation is CPU-bound and one Python process runs Python on one core at a time, so the service runs
``N`` processes (``CDS_WORKERS``; 0 means 2 x cores + 1), each a waitress server with ``CDS_THREADS``
threads (``cds/web/httpserver.py``). The supervisor binds the socket once and hands it to every process
(inherited, ``--fd``); the kernel gives each new connection to whichever process accepts it first.

* A process that dies is started again, and its live metrics are dropped from the shared Prometheus folder
  (``PROMETHEUS_MULTIPROC_DIR``, its counters stay counted). A process that dies within
  ``BOOT_SECONDS`` of its start ``MAX_FAILED_BOOTS`` times in a row (the app cannot start: a bad setting,
  an unreachable database) stops the whole service, exit status 1: restarting it would only repeat that.
* SIGTERM or SIGINT: every process is asked to stop (it stops accepting and answers what it has begun),
  those still running after ``STOP_SECONDS`` are killed, and the supervisor exits 0.
"""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable

from cds.web.httpserver import GRACEFUL_SECONDS

BOOT_SECONDS = 10.0
MAX_FAILED_BOOTS = 5
STOP_SECONDS = GRACEFUL_SECONDS + 10.0
BACKLOG = 2048


#: the supervisor's lines as JSON log lines (``CDS_LOG_FORMAT=json``, set by ``cds.web.serving``), else text
JSON_LINES = False


def say(message: str) -> None:
    if JSON_LINES:
        logging.getLogger("cds.serving").info(message)
    else:
        print(f"cds: {message}", file=sys.stderr, flush=True)


def listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, backlog=BACKLOG)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no Nagle delay (accepted sockets inherit it)
    sock.set_inheritable(True)
    return sock


class Supervisor:
    def __init__(self, sock: socket.socket, workers: int, app: str = "cds:create_app()",
                 on_exit: Callable[[int], None] | None = None):
        self.sock, self.workers, self.app = sock, workers, app
        self.on_exit = on_exit or (lambda pid: None)
        self.children: dict[int, tuple[subprocess.Popen[bytes], float]] = {}
        self.stopping = threading.Event()
        self.failed_boots = 0

    def start_one(self) -> None:
        fd = self.sock.fileno()
        proc = subprocess.Popen(
            [sys.executable, "-m", "cds.web.httpserver", "--fd", str(fd), "--app", self.app], pass_fds=(fd,))
        self.children[proc.pid] = (proc, time.monotonic())
        say(f"started worker {proc.pid}")

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stopping.set())
        for _ in range(self.workers):
            self.start_one()
        status = 0
        while not self.stopping.wait(0.5):
            for pid, (proc, started) in list(self.children.items()):
                code = proc.poll()
                if code is None:
                    continue
                del self.children[pid]
                self.on_exit(pid)
                quick = time.monotonic() - started < BOOT_SECONDS
                self.failed_boots = self.failed_boots + 1 if quick else 0
                say(f"worker {pid} exited with status {code}"
                    + ("; starting another" if self.failed_boots < MAX_FAILED_BOOTS else ""))
                if self.failed_boots >= MAX_FAILED_BOOTS:
                    say(f"error: {MAX_FAILED_BOOTS} workers in a row exited within {BOOT_SECONDS:.0f} s "
                        "of their start; stopping (see the messages above)")
                    self.stopping.set()
                    status = 1
                    break
                if not self.stopping.is_set():
                    self.start_one()
        self.stop_all()
        return status

    def stop_all(self) -> None:
        for proc, _ in self.children.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_SECONDS
        for pid, (proc, _) in list(self.children.items()):
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                say(f"worker {pid} did not stop within {STOP_SECONDS:.0f} s; killed")
                proc.kill()
                proc.wait()
            self.on_exit(pid)
        self.children.clear()
        self.sock.close()


def serve(host: str, port: int, workers: int, app: str = "cds:create_app()") -> int:
    from cds.web.metrics import mark_process_dead

    try:
        sock = listen(host, port)
    except OSError as exc:
        say(f"error: cannot listen on {host}:{port}: {exc.strerror or exc}")
        return 1
    say(f"serving http://{host}:{port} with {workers} workers (waitress)")
    return Supervisor(sock, workers, app, on_exit=mark_process_dead).run()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cds.web.supervisor")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--app", default="cds:create_app()")
    args = parser.parse_args(argv)
    return serve(args.host, args.port, args.workers, args.app)


if __name__ == "__main__":
    raise SystemExit(main())
