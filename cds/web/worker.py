"""The gunicorn worker of ``cds serve --prod``: gthread, with the request head read in the event loop and
every request read against a deadline.

gunicorn's own gthread worker hands a connection to a thread as soon as its first bytes arrive, and the
thread then blocks until the request line and headers are complete: a client sending one header line
every few seconds holds a thread for as long as it likes, and a handful of them hold every thread
(measured: five such sockets against two workers of four threads froze ``GET /health``). Here:

* the head (request line and headers) is read by the worker's event loop, without blocking, into a
  buffer; a connection whose head is not complete ``HEADER_TIMEOUT_SECONDS`` after it was accepted (or
  after its previous answer, on a kept-alive connection) is closed. Slow heads cost a socket, never a
  thread. A head larger than 64 KiB is handed on as it is, for gunicorn's parser to refuse.
* once the head is complete the request goes to a thread, and from then on every read of that request
  from the socket (the body) shares one deadline of ``BODY_TIMEOUT_SECONDS``; past it the read fails with
  ``ReadDeadlineExceeded`` (a ``TimeoutError``), which ``cds.web.guard.read_body`` answers with a 408.

A kept-alive connection is closed only when its client cannot be waiting for an answer on it:

* whether the connection stays open is decided before the answer is sent. A body the application left
  unread (a 401 before the body, a 413) is drained first, up to ``DRAIN_MAX_BYTES`` within
  ``DRAIN_SECONDS``; when it cannot be, the answer says ``Connection: close``. (gunicorn drains after the
  answer and, past 64 KiB, closes a connection whose answer promised keep-alive: the client's next request
  on it then got no answer at all.)
* a kept-alive connection past its keep-alive timeout is closed only if no byte of a next request has
  arrived on it; one whose request has started is served.
* the lingering close of a connection (half-close, then read and drop what the client still sends, up to
  ``LINGER_MAX_BYTES`` or ``LINGER_SECONDS``, so that the answer is not lost to a reset) is done by the
  event loop without blocking: gunicorn's blocking one held the whole event loop up to two seconds for
  each client that did not close its end, and a thread would be held as long.

TLS and HTTP/2 are left to gunicorn's own code paths (the service is run behind a TLS proxy).
"""

from __future__ import annotations

import errno
import selectors
import socket
import threading
import time
from functools import partial
from typing import Any

from gunicorn.http.body import LengthReader
from gunicorn.http.errors import NoMoreData
from gunicorn.workers.gthread import TConn, ThreadWorker

MAX_HEAD_BYTES = 64 * 1024
DRAIN_MAX_BYTES = 64 * 1024  # the most of an unread body read (and dropped) to keep a connection open
DRAIN_SECONDS = 5.0
LINGER_SECONDS = 2.0
LINGER_MAX_BYTES = 64 * 1024


class ReadDeadlineExceeded(NoMoreData, TimeoutError):
    """The client did not send its request within the read deadline."""

    def __str__(self) -> str:
        return "the client did not send its request in time"


class DeadlineSocket:
    """A client socket whose reads fail once ``deadline`` (monotonic seconds) has passed."""

    def __init__(self, sock: socket.socket):
        self._sock = sock
        self.deadline: float | None = None

    def recv(self, size: int, *flags: int) -> bytes:
        if self.deadline is None:
            return self._sock.recv(size, *flags)
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise ReadDeadlineExceeded()
        self._sock.settimeout(remaining)
        try:
            return self._sock.recv(size, *flags)
        except TimeoutError:
            raise ReadDeadlineExceeded() from None
        finally:
            self._sock.settimeout(None)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class BoundedThreadWorker(ThreadWorker):
    header_timeout = 10.0
    body_timeout = 30.0

    def init_process(self) -> None:
        from cds import settings

        values = settings.load()
        self.header_timeout = values["HEADER_TIMEOUT_SECONDS"]
        self.body_timeout = values["BODY_TIMEOUT_SECONDS"]
        self.heads: list[TConn] = []  # connections whose head is being read, oldest first
        self.lingering: list[TConn] = []  # connections half-closed, waiting for their client's end
        self.serving = threading.local()  # .conn: the connection this thread is answering
        super().init_process()

    def load_wsgi(self) -> None:
        super().load_wsgi()
        app: Any = self.wsgi  # type: ignore[has-type]  # set by gunicorn (untyped)

        def settled(environ: dict[str, Any], start_response: Any) -> Any:
            def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
                conn = getattr(self.serving, "conn", None)
                if conn is not None and not settle_body(conn):
                    start_response.__self__.force_close()  # the gunicorn Response being started
                return start_response(status, headers, exc_info)

            return app(environ, start)

        self.wsgi = settled

    # -- new connections and kept-alive ones: the head is read here, in the event loop ----------------------
    def accept(self, listener: socket.socket) -> None:
        if self.cfg.is_ssl:
            return super().accept(listener)
        try:
            client_sock, client_addr = listener.accept()
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        conn = TConn(self.cfg, DeadlineSocket(client_sock), client_addr, listener.getsockname())
        self._read_head_later(conn)

    def on_client_socket_readable(self, conn: TConn, client: Any) -> None:
        if self.cfg.is_ssl or conn.is_http2:
            return super().on_client_socket_readable(conn, client)
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        self._read_head_later(conn)
        self._read_head(conn, client)

    def _read_head_later(self, conn: TConn) -> None:
        conn.cds_head = bytearray()
        conn.cds_head_deadline = time.monotonic() + self.header_timeout
        conn.sock.setblocking(False)
        self.heads.append(conn)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._read_head, conn))

    def _read_head(self, conn: TConn, client: Any) -> None:
        try:
            chunk = conn.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        if not chunk:  # the client went away
            self._drop_head(conn)
            return
        conn.cds_head += chunk
        head = bytes(conn.cds_head).lstrip(b"\r\n")
        if b"\r\n\r\n" in head or b"\n\n" in head or len(head) > MAX_HEAD_BYTES:
            self.poller.unregister(conn.sock)
            self.heads.remove(conn)
            conn.data_ready = True
            self.enqueue_req(conn)

    def _drop_head(self, conn: TConn) -> None:
        try:
            self.poller.unregister(conn.sock)
        except (KeyError, ValueError, OSError):
            pass
        if conn in self.heads:
            self.heads.remove(conn)
        self.nr_conns -= 1
        conn.close()

    def murder_keepalived(self, force: bool = False) -> None:
        if not force:  # a request that has started arriving is served, not cut off
            now = time.monotonic()
            expired = [c for c in self.keepalived_conns if c.timeout <= now]
            for conn in expired:
                if has_bytes(conn.sock):
                    self.on_client_socket_readable(conn, conn.sock)
        super().murder_keepalived(force)

    def murder_pending(self) -> None:
        super().murder_pending()
        now = time.monotonic()
        for conn in [c for c in self.heads if c.cds_head_deadline <= now]:
            self._drop_head(conn)
        for conn in [c for c in self.lingering if c.cds_linger_until <= now]:
            self._end_linger(conn)

    # -- closing: half-close, then read what the client still sends until it closes (or time is up) ---------
    def _linger(self, conn: TConn) -> None:
        try:
            conn.sock.shutdown(socket.SHUT_WR)
            conn.sock.setblocking(False)
        except OSError:
            self.nr_conns -= 1
            conn.sock.close()
            return
        conn.cds_linger_until = time.monotonic() + LINGER_SECONDS
        conn.cds_lingered = 0
        self.lingering.append(conn)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._drain_linger, conn))

    def _drain_linger(self, conn: TConn, client: Any) -> None:
        try:
            chunk = conn.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        conn.cds_lingered += len(chunk)
        if not chunk or conn.cds_lingered >= LINGER_MAX_BYTES:
            self._end_linger(conn)

    def _end_linger(self, conn: TConn) -> None:
        try:
            self.poller.unregister(conn.sock)
        except (KeyError, ValueError, OSError):
            pass
        if conn in self.lingering:
            self.lingering.remove(conn)
        self.nr_conns -= 1
        conn.sock.close()

    def finish_request(self, conn: TConn, fs: Any) -> None:
        if fs.cancelled() or fs.exception() is not None or fs.result() is not False or self.cfg.is_ssl \
                or conn.is_http2:
            return super().finish_request(conn, fs)
        if conn.sock.fileno() == -1:  # closed in its thread already
            self.nr_conns -= 1
            return
        self._linger(conn)

    # -- in a thread: the head is already here, the rest of the request has a deadline ----------------------
    def handle(self, conn: TConn) -> Any:
        head = getattr(conn, "cds_head", None)
        if head is not None:
            conn.cds_head = None
            conn.sock.setblocking(True)
            conn.init()
            conn.parser.unreader.unread(bytes(head))
        if isinstance(conn.sock, DeadlineSocket):
            conn.sock.deadline = time.monotonic() + self.body_timeout
        self.serving.conn = conn
        try:
            result = super().handle(conn)
        finally:
            self.serving.conn = None
            if isinstance(conn.sock, DeadlineSocket):
                conn.sock.deadline = None
        return result


def settle_body(conn: TConn) -> bool:
    """Read what the application left of the request body; whether the connection can then be kept.

    Called before the answer goes out, so that an answer promising keep-alive is never followed by a close.
    """
    parser = conn.parser
    mesg = getattr(parser, "mesg", None)
    body = getattr(mesg, "body", None)
    if body is None:
        return True
    reader = getattr(body, "reader", None)
    if isinstance(reader, LengthReader) and reader.length > DRAIN_MAX_BYTES:
        return False  # not worth reading: the answer says close
    deadline = time.monotonic() + DRAIN_SECONDS
    sock = conn.sock
    if isinstance(sock, DeadlineSocket) and sock.deadline is not None:
        deadline = min(deadline, sock.deadline)
    try:
        return bool(parser.finish_body(deadline=deadline, max_bytes=DRAIN_MAX_BYTES + 1))
    except Exception:  # noqa: BLE001 - a body that cannot be read leaves the connection unusable
        return False


def has_bytes(sock: Any) -> bool:
    """Whether a client has sent something on this (non-blocking) socket that was not read yet."""
    try:
        return bool(sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return False
