"""Worker variants measured by ``bench/serving.py`` only (never used by the service)."""

from __future__ import annotations

import socket

from cds.web.worker import BoundedThreadWorker


class NagleWorker(BoundedThreadWorker):
    """The production worker with Nagle's algorithm back on for every accepted connection.

    gunicorn sets ``TCP_NODELAY`` on its listening socket and Linux hands it on to accepted sockets; a
    response goes out as two writes (head, then body), which Nagle's algorithm with delayed ACKs can hold.
    """

    def accept(self, listener: socket.socket) -> None:
        before = len(self.heads)
        super().accept(listener)
        if len(self.heads) > before:
            self.heads[-1].sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)


class BalancedWorker(BoundedThreadWorker):
    """The production worker keeping a connection alive only while no request waits for a thread here.

    An answer given while another request of this worker is queued says ``Connection: close``: that
    client's next request comes on a new connection, which the least busy worker tends to accept (as
    with gunicorn's sync worker, where every request is a new connection), instead of staying pinned to
    a busy worker.
    """

    in_flight = 0

    def enqueue_req(self, conn: object) -> None:
        self.in_flight += 1
        super().enqueue_req(conn)

    def finish_request(self, conn: object, fs: object) -> None:
        self.in_flight -= 1
        super().finish_request(conn, fs)

    def handle_request(self, req: object, conn: object) -> object:
        if self.in_flight > self.cfg.threads:
            req.must_close = True  # gunicorn then answers with Connection: close
        return super().handle_request(req, conn)


class IdleAcceptWorker(BalancedWorker):
    """``BalancedWorker`` that also stops accepting connections while every thread of it is busy.

    A new connection then goes to a process with a free thread (the kernel queues it until one accepts),
    as a sync worker only accepts between requests. Heads being read do not count: a slow client never
    makes a worker stop accepting.
    """

    def set_accept_enabled(self, enabled: bool) -> None:
        super().set_accept_enabled(enabled and self.in_flight < self.cfg.threads)

    def enqueue_req(self, conn: object) -> None:
        super().enqueue_req(conn)
        self.set_accept_enabled(self.nr_conns < self.worker_connections)

    def finish_request(self, conn: object, fs: object) -> None:
        super().finish_request(conn, fs)
        self.set_accept_enabled(self.nr_conns < self.worker_connections)
