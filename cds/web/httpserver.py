"""One process of ``cds serve --prod``: waitress serving the app on a listening socket it is handed.

    python -m cds.web.httpserver --fd N [--app "cds:create_app()"]

waitress parses HTTP/1.1 (request line, headers, ``Content-Length`` and chunked framing, pipelining) and
buffers each whole request — head and body — in its I/O loop; a request reaches one of the
``CDS_THREADS`` application threads only once it is complete. So no application thread ever waits on a
client, however slowly it sends. waitress's own limits apply: a head of ``MAX_HEAD_BYTES`` or more is a 431,
a ``Content-Length`` or chunked body above ``CDS_MAX_BODY_BYTES`` a 413, bad framing (two lengths, a length
with ``Transfer-Encoding``, an encoding other than chunked, bare CR or LF) a 400 or 501.

What this module adds to waitress, through the classes waitress lets a server replace (its channel, its
request parser, its error task and its periodic maintenance):

* deadlines, where waitress has only an inactivity timeout (a client sending a byte every few seconds
  would never reach it): a request whose head is not complete ``CDS_HEADER_TIMEOUT_SECONDS`` after its
  first byte is dropped (the connection closed); one whose body is not complete
  ``CDS_BODY_TIMEOUT_SECONDS`` after its head is answered 408. Both cost the client's socket only;
* a chunk size that alone passes the body limit is a 413 at once (waitress would wait for the bytes);
* the answers waitress gives itself (400, 408, 413, 431, 501, 500) are OperationOutcomes, as the app's are;
* an idle kept-alive connection (``KEEPALIVE_SECONDS``) is closed only if no byte of a next request has
  arrived on it;
* a lingering close (``TimedChannel``), so that a client still sending reads its answer, not a reset;
* on SIGTERM or SIGINT the process stops accepting, answers what it has begun (up to
  ``GRACEFUL_SECONDS``) and exits; it also exits when the supervisor that started it is gone.

The processes, the shared listening socket and their restarts are ``cds/web/supervisor.py``'s.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import re
import signal
import socket
import sys
import threading
import time
from typing import Any

from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser, ParsingError
from waitress.receiver import ChunkedReceiver
from waitress.server import TcpWSGIServer
from waitress.task import ErrorTask
from waitress.utilities import BadRequest, Error, RequestEntityTooLarge

from cds.errors import CdsError, ClientTooSlow, LimitExceeded, MalformedJSON

MAX_HEAD_BYTES = 64 * 1024  # request line and headers; 431 at this size and above
KEEPALIVE_SECONDS = 5  # an idle kept-alive connection is closed after this long
GRACEFUL_SECONDS = 20.0  # on SIGTERM: longest the requests begun are given to be answered
CONNECTION_LIMIT = 1000  # open connections per process; past it the process stops accepting
LINGER_SECONDS = 2.0  # a connection being closed reads what its client still sends this long at most
LINGER_MAX_BYTES = 256 * 1024


class RequestTimeout(BadRequest):
    code = 408
    reason = "Request Timeout"


class TimedParser(HTTPRequestParser):
    """waitress's request parser, noting when the request began and when its head was complete, and refusing
    a chunk that alone would pass the body limit."""

    def __init__(self, adj: Adjustments):
        super().__init__(adj)
        self.started = time.monotonic()
        self.head_done: float | None = None

    def received(self, data: bytes) -> int:
        head_open = self.body_rcv is None and not self.completed  # type: ignore[has-type]
        if head_open and bare_lf(head_part(self.header_plus[-3:] + data)):
            self.parse_header(b"GET / HTTP/1.0\r\n")  # as waitress does for its own early refusals
            self.error = BadRequest("a bare LF ends a line of the head")
            self.completed = True
            return len(data)
        consumed: int = super().received(data)
        if self.headers_finished and self.head_done is None:
            self.head_done = time.monotonic()
        body = self.body_rcv
        if not self.completed and isinstance(body, ChunkedReceiver) \
                and self.body_bytes_received + body.chunk_remainder >= self.adj.max_request_body_size:
            self.error = RequestEntityTooLarge("a chunk is larger than the body limit")
            self.completed = True
        return consumed

    def parse_header(self, header_plus: bytes) -> None:
        """waitress's parsing, refusing besides what a front end could frame otherwise: a folded line, more
        than one Transfer-Encoding (headers or codings), Transfer-Encoding beside Content-Length or in an
        HTTP/1.0 request."""
        lines = header_plus.split(b"\r\n")[1:]
        if any(line[:1] in (b" ", b"\t") for line in lines):
            raise ParsingError("obsolete line folding")
        codings = [line.partition(b":")[2] for line in lines
                   if line.partition(b":")[0].lower() == b"transfer-encoding"]
        super().parse_header(header_plus)
        if codings and (len(codings) > 1 or b"," in codings[0]):
            raise ParsingError("more than one Transfer-Encoding")
        if codings and self.version != "1.1":
            raise ParsingError("Transfer-Encoding in an HTTP/1.0 request")
        if codings and "CONTENT_LENGTH" in self.headers:
            raise ParsingError("both Content-Length and Transfer-Encoding")


def head_part(data: bytes) -> bytes:
    """``data`` up to the end of a head in it (the blank line), or all of it."""
    end = data.find(b"\r\n\r\n")
    return data if end < 0 else data[: end + 4]


def bare_lf(data: bytes) -> bool:
    """Whether a line feed in ``data`` (after its first byte) is not preceded by a carriage return."""
    return re.search(rb"[^\r]\n", data) is not None


class OutcomeErrorTask(ErrorTask):
    """The answers waitress gives itself, as OperationOutcomes naming what was wrong (never echoing input)."""

    def execute(self) -> None:
        error: Error = self.request.error
        limits = self.channel.server.adj
        status = int(error.code)
        answer: CdsError
        if status == 431:
            answer = LimitExceeded(f"the request line and headers are {MAX_HEAD_BYTES} bytes or more",
                                   field="(head)")
        elif status == 413:
            limit = limits.max_request_body_size - 1
            answer = LimitExceeded(f"request body is more than the limit of {limit} bytes "
                                   "(CDS_MAX_BODY_BYTES)", field="(body)")
        elif status == 408:
            answer = ClientTooSlow(str(error.body), field="(body)")
        elif status == 501:
            answer = MalformedJSON("only the chunked transfer coding is accepted", field="(head)")
            answer.code = "not-supported"
        elif status < 500:  # waitress's reason, without the part of the request it may quote
            reason = str(error.body).split(' "')[0]
            answer = MalformedJSON(f"the request is not valid HTTP/1.1: {reason}", field="(head)")
        else:
            answer = CdsError("the server could not answer this request")
        body = json.dumps(answer.to_operation_outcome()).encode()
        self.status = f"{error.code} {error.reason}"
        self.response_headers.extend([("Content-Type", "application/json"),
                                      ("X-Content-Type-Options", "nosniff")])
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class TimedChannel(HTTPChannel):
    """waitress's channel with the parser and error answers above, and a lingering close: when the server
    closes a connection it first half-closes it and reads (and drops) what the client still sends, up to
    ``LINGER_MAX_BYTES`` or ``LINGER_SECONDS`` — closing on unread bytes sends a reset, which can destroy an
    answer (a 413, a 431) before the client has read it."""

    parser_class = TimedParser
    error_task_class = OutcomeErrorTask
    linger_until: float | None = None  # None: open; a time: lingering until then; 0.0: closed
    lingered = 0

    def handle_close(self) -> None:
        if self.linger_until is None and self.connected and self.socket is not None:
            try:
                self.socket.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            else:
                self.linger_until = time.monotonic() + LINGER_SECONDS
                self.will_close = self.close_when_flushed = False
                return
        self.close_now()

    def close_now(self) -> None:
        if self.linger_until != 0.0:
            self.linger_until = 0.0
            super().handle_close()

    def readable(self) -> bool:
        return True if self.linger_until else bool(super().readable())

    def writable(self) -> bool:
        return False if self.linger_until else bool(super().writable())

    def handle_read(self) -> None:
        if not self.linger_until:
            return super().handle_read()
        try:
            data = self.socket.recv(65536)
        except OSError:
            data = b""
        self.lingered += len(data)
        if not data or self.lingered >= LINGER_MAX_BYTES or time.monotonic() >= self.linger_until:
            self.close_now()


class Server(TcpWSGIServer):
    """waitress's TCP server on a listening socket it is given, with the deadlines and the graceful stop."""

    channel_class = TimedChannel

    def __init__(self, app: Any, sock: socket.socket, *, threads: int, header_timeout: float,
                 body_timeout: float, max_body_bytes: int):
        adj = Adjustments(
            sockets=[sock], threads=threads, ident="cds", connection_limit=CONNECTION_LIMIT,
            asyncore_use_poll=True,  # select() cannot watch a descriptor above 1023
            channel_timeout=KEEPALIVE_SECONDS, cleanup_interval=1,
            max_request_header_size=MAX_HEAD_BYTES, max_request_body_size=max_body_bytes + 1,
            expose_tracebacks=False, clear_untrusted_proxy_headers=True)
        self.header_timeout, self.body_timeout = header_timeout, body_timeout
        self.stop_by: float | None = None
        super().__init__(app, {}, True, sock, adj=adj, bind_socket=False,
                         sockinfo=(sock.family, sock.type, sock.proto, sock.getsockname()))

    def maintenance(self, now: float) -> None:
        """Every second (``cleanup_interval``), in the I/O loop: the deadlines, idle connections, the stop."""
        mono = time.monotonic()
        for channel in list(self.active_channels.values()):
            if channel.linger_until:
                if mono >= channel.linger_until:
                    channel.close_now()
                continue
            with channel.requests_lock:
                if channel.requests or channel.will_close or channel.close_when_flushed:
                    continue  # being answered, or closing already
                request = channel.request
                if isinstance(request, TimedParser) and not request.completed:
                    if request.head_done is None:
                        if mono - request.started > self.header_timeout:
                            channel.will_close = True  # a head never finished: dropped
                    elif mono - request.head_done > self.body_timeout:
                        self._time_out(channel, request)
                elif self.stop_by is not None or (
                        channel.last_activity < now - self.adj.channel_timeout
                        and not has_bytes(channel.socket)):
                    channel.will_close = True
        if self.stop_by is not None:
            self._stopping(mono)

    def _time_out(self, channel: HTTPChannel, request: TimedParser) -> None:
        request.error = RequestTimeout(
            "the request body did not arrive within the time allowed (CDS_BODY_TIMEOUT_SECONDS)")  # 408
        request.completed = True
        channel.request = None
        channel.requests.append(request)
        self.add_task(channel)

    def stop(self) -> None:
        """Stop accepting; the I/O loop ends once every request begun is answered, or at the deadline."""
        if self.stop_by is None:
            self.stop_by = time.monotonic() + GRACEFUL_SECONDS
            self.next_channel_cleanup = 0  # at the next turn of the loop

    def _stopping(self, mono: float) -> None:
        self.accepting = False  # no longer watched; the socket stays open for the other processes
        busy = [c for c in self.active_channels.values() if c.requests or c.total_outbufs_len]
        if not busy or mono >= (self.stop_by or mono):
            raise SystemExit(0)  # waitress's run() then stops its threads


def has_bytes(sock: socket.socket | None) -> bool:
    """Whether the client has sent something on this socket that was not read yet."""
    if sock is None:
        return False
    try:
        return bool(sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
    except OSError:
        return False


def load_app(spec: str) -> Any:
    """``module:name`` or ``module:factory()``."""
    module, _, name = spec.partition(":")
    call = name.endswith("()")
    target = getattr(importlib.import_module(module), name.removesuffix("()") or "app")
    return target() if call else target


def watch_parent(server: Server, parent: int) -> None:
    """Stop when the supervisor is gone (this process was handed to another parent)."""
    while os.getppid() == parent:
        time.sleep(1.0)
    server.stop()


def main(argv: list[str] | None = None) -> int:
    from cds import settings

    parser = argparse.ArgumentParser(prog="python -m cds.web.httpserver")
    parser.add_argument("--fd", type=int, required=True, help="the listening socket, inherited")
    parser.add_argument("--app", default="cds:create_app()")
    args = parser.parse_args(argv)
    values = settings.load()
    sock = socket.socket(fileno=args.fd)
    app = load_app(args.app)
    server = Server(app, sock, threads=max(1, values["THREADS"]),
                    header_timeout=values["HEADER_TIMEOUT_SECONDS"],
                    body_timeout=values["BODY_TIMEOUT_SECONDS"], max_body_bytes=values["MAX_BODY_BYTES"])
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)  # a warning for every request that waits
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: server.stop())
    threading.Thread(target=watch_parent, args=(server, os.getppid()), daemon=True).start()
    serving = f"worker {os.getpid()} serving with {server.adj.threads} threads"
    if values["LOG_FORMAT"] == "json":  # the app configured the JSON lines (cds.web.logs)
        logging.getLogger("cds.serving").info(serving)
    else:
        print(f"cds: {serving}", file=sys.stderr, flush=True)
    server.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
