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
