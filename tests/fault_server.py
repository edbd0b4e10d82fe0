"""A misbehaving FHIR server on a real local socket, for the fault tests.

``FaultServer(mode)`` listens on 127.0.0.1 and answers every connection the way ``mode`` says:

* ``ok``            a correct answer (searches: an empty searchset Bundle; reads: a Patient)
* ``reset``         reads the request, then resets the connection (RST) before answering anything
* ``reset-mid``     sends the status line, headers and part of the body, then resets the connection
* ``close-mid``     sends a ``Content-Length`` larger than what follows, then closes cleanly (FIN)
* ``hang``          reads the request and never answers (the connection stays open)
* ``drip``          answers 200 and then one byte of body every ``drip_interval`` seconds, forever
* ``drip-head``     sends its status line and headers one byte every ``drip_interval`` seconds, forever
* ``slow``          waits ``delay`` seconds, then answers correctly
* ``huge``          a well-formed JSON Bundle of ``huge_bytes`` bytes (a long padding string)
* ``not-json``      200 with an HTML page
* ``garbage``       bytes that are not HTTP at all

``mode`` may be changed between requests; ``connections`` counts the connections accepted.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import time


class FaultServer:
    def __init__(
        self,
        mode: str = "ok",
        *,
        delay: float = 0.0,
        drip_interval: float = 0.2,
        huge_bytes: int = 40_000_000,
    ):
        self.mode, self.delay, self.drip_interval, self.huge_bytes = mode, delay, drip_interval, huge_bytes
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/fhir"
        self.connections = 0
        self.stopped = threading.Event()
        self.open: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self.stopped.set()
        try:
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()
        with self.lock:
            for conn in self.open:
                try:
                    conn.close()
                except OSError:
                    pass

    def __enter__(self) -> FaultServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ----------------------------------------------------------------------------------------
    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
                self.open.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    @staticmethod
    def _read_request(conn: socket.socket) -> str:
        data = b""
        conn.settimeout(5)
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
        return data.split(b" ", 2)[1].decode("latin-1") if data.count(b" ") >= 2 else "/"

    @staticmethod
    def _rst(conn: socket.socket) -> None:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()

    @staticmethod
    def _body_for(path: str) -> bytes:
        resource_path = path.split("?", 1)[0].rstrip("/").split("/")
        if "?" not in path and len(resource_path) >= 2 and resource_path[-2] == "Patient":
            body = {
                "resourceType": "Patient",
                "id": resource_path[-1],
                "gender": "female",
                "birthDate": "1958-03-04",
            }
        else:
            body = {"resourceType": "Bundle", "type": "searchset", "total": 0, "entry": []}
        return json.dumps(body).encode()

    @staticmethod
    def _head(length: int, content_type: str = "application/fhir+json") -> bytes:
        return (
            f"HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {length}\r\n"
            "Connection: close\r\n\r\n"
        ).encode()

    def _serve(self, conn: socket.socket) -> None:
        mode = self.mode
        try:
            path = self._read_request(conn)
            body = self._body_for(path)
            if mode == "reset":
                self._rst(conn)
                return
            if mode == "reset-mid":
                conn.sendall(self._head(len(body) + 500) + body[:10])
                time.sleep(0.05)
                self._rst(conn)
                return
            if mode == "close-mid":
                conn.sendall(self._head(len(body) + 500) + body[:10])
                conn.shutdown(socket.SHUT_RDWR)
                conn.close()
                return
            if mode == "hang":
                self.stopped.wait(120)
                return
            if mode == "drip":
                conn.sendall(self._head(10_000_000) + b"{")
                while not self.stopped.wait(self.drip_interval):
                    conn.sendall(b" ")
                return
            if mode == "drip-head":
                head = b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-Padding-%d: x\r\n" % n for n in range(100_000))
                for byte in head:
                    if self.stopped.wait(self.drip_interval):
                        return
                    conn.sendall(bytes([byte]))
                return
            if mode == "slow":
                time.sleep(self.delay)
            if mode == "huge":
                kind = b"Patient" if b'"Patient"' in body else b"Bundle"
                head = b'{"resourceType": "' + kind + b'", "padding": "'
                tail = b'"}'
                pad = self.huge_bytes - len(head) - len(tail)
                conn.sendall(self._head(self.huge_bytes) + head)
                chunk = b"x" * 1_000_000
                while pad > 0:
                    conn.sendall(chunk[: min(pad, len(chunk))])
                    pad -= len(chunk)
                conn.sendall(tail)
            elif mode == "not-json":
                page = b"<html><body><h1>502 Bad Gateway</h1></body></html>"
                conn.sendall(self._head(len(page), "text/html") + page)
            elif mode == "garbage":
                conn.sendall(b"\x00\xff\x13garbage that is not HTTP\r\n\r\n")
            else:
                conn.sendall(self._head(len(body)) + body)
            conn.shutdown(socket.SHUT_WR)
            time.sleep(0.05)
        except OSError:
            pass
        finally:
            try:
                conn.close()
            except OSError:
                pass
