"""One overall deadline for an outgoing HTTP exchange, from connect to the last byte of the answer.

A socket read timeout bounds each wait for bytes, not the whole answer: a server that sends its status
line, headers or body one byte at a time, each inside the read timeout, could hold the caller for as long
as it likes. ``deadline_session()`` is a ``requests.Session`` whose connections register their socket with
the ``Deadline`` of the calling thread (``with Deadline(seconds) as deadline: session.get(...)``); when
the deadline passes, a timer shuts those sockets down, so a read blocked anywhere in the exchange (status
line, headers, body) returns at once, and ``deadline.expired`` tells the caller why it failed.

Used by the FHIR client (``cds/call/fhir_client.py``) and the JWK Set fetches
(``cds/auth/trusted_clients.py``).

A hook call's own budget (``cds.call.budget.Budget``) is the ``CallLimit`` of its thread while its
prefetch data is fetched (``with call_limit(budget): ...``): the FHIR client asks it before every GET
(``check``, ``count_request``), bounds each GET's timeouts and deadline by what ``remaining`` gives, and
answers a wait that the budget cut short with ``exceeded``. So every wait on the FHIR server ends by the
call's deadline, and paging stops there.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any, Protocol

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

_current = threading.local()


class CallLimit(Protocol):
    """What an outgoing exchange made for a hook call asks of that call's budget."""

    def remaining(self) -> float | None:
        """Seconds the call has left (may be negative), or None when its time is not limited."""

    def check(self, stage: str) -> None:
        """Raise (the call's ``BudgetExceeded``) when the call has run out of time."""

    def count_request(self, stage: str) -> None:
        """Count one outgoing request; raise when the call has sent more than it may."""

    def exceeded(self, stage: str) -> Exception:
        """The error saying the call ran out of time while ``stage``."""


@contextlib.contextmanager
def call_limit(limit: CallLimit | None) -> Iterator[None]:
    """Make ``limit`` the call limit of the exchanges this thread makes inside the block."""
    previous = getattr(_current, "limit", None)
    _current.limit = limit
    try:
        yield
    finally:
        _current.limit = previous


def current_call_limit() -> CallLimit | None:
    """The call limit of this thread (``call_limit``), or None outside a hook call."""
    return getattr(_current, "limit", None)


class Deadline:
    """The deadline of the exchanges made in this thread while the ``with`` block runs."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.at = time.monotonic() + seconds
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(max(seconds, 0.0), self._expire)
        self._timer.daemon = True

    def remaining(self) -> float:
        return self.at - time.monotonic()

    def watch(self, sock: Any) -> None:
        if sock is None:
            return
        with self._lock:
            self._sockets.append(sock)
            expired = self.expired
        if expired:
            _shut(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            sockets = list(self._sockets)
        for sock in sockets:
            _shut(sock)

    def __enter__(self) -> Deadline:
        self._previous = getattr(_current, "deadline", None)
        _current.deadline = self
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()
        _current.deadline = self._previous
        if time.monotonic() >= self.at:
            self.expired = True


def _shut(sock: Any) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _watch(sock: Any) -> None:
    deadline = getattr(_current, "deadline", None)
    if deadline is not None:
        deadline.watch(sock)


class _Watched:
    """Registers the connection's socket with the thread's deadline whenever it is used."""

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        _watch(getattr(self, "sock", None))

    def request(self, *args: Any, **kwargs: Any) -> Any:
        _watch(getattr(self, "sock", None))  # a kept-alive connection is not connected again
        return super().request(*args, **kwargs)  # type: ignore[misc]


class _HTTPConnection(_Watched, HTTPConnection):
    pass


class _HTTPSConnection(_Watched, HTTPSConnection):
    pass


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


class _Adapter(HTTPAdapter):
    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}


def deadline_session() -> requests.Session:
    """A session whose exchanges are cut off when the calling thread's ``Deadline`` passes."""
    session = requests.Session()
    adapter = _Adapter()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session
