"""The real Redis for the replay-store tests, and the ways it fails.

``redis_url`` is the test Redis (``CDS_TEST_REDIS_URL``, by default database 13 of 127.0.0.1:6379, which
nothing else here uses) with a fresh key prefix per test; every key under the prefix is deleted afterwards.
The fixture skips, saying why, when no Redis answers there.

``RedisProxy`` forwards a local port to Redis and can be stopped (port closed, every connection cut)
and brought ``up()`` again on the same port; ``SilentServer`` accepts connections and never answers.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
import redis
from support import TcpProxy

REDIS_URL = os.environ.get("CDS_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")


@dataclass
class RedisUnderTest:
    url: str
    prefix: str
    client: redis.Redis

    def keys(self) -> list[str]:
        return sorted(k.decode() for k in self.client.scan_iter(match=self.prefix + "*"))


@pytest.fixture
def redis_db() -> Iterator[RedisUnderTest]:
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=10, socket_connect_timeout=5)
    try:
        client.ping()
    except redis.RedisError as exc:
        client.close()
        pytest.skip(f"no Redis answers at {REDIS_URL} ({type(exc).__name__}: {exc})")
    prefix = f"cds-test-{uuid.uuid4().hex[:12]}:"
    try:
        yield RedisUnderTest(REDIS_URL, prefix, client)
    finally:
        for key in client.scan_iter(match=prefix + "*"):
            client.delete(key)
        client.close()


def wait_for(what: str, condition: Callable[[], bool], deadline: float = 60.0) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``deadline`` seconds."""
    end = time.monotonic() + deadline
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"still waiting after {deadline:.0f} s for {what}")
        time.sleep(0.05)


def closed_port() -> int:
    """A local port where nothing listens."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SilentServer:
    """Accepts every connection on a local port, reads nothing and answers nothing (a Redis that hangs)."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.accepted: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        for sock in [self.listener, *self.accepted]:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()


class RedisProxy(TcpProxy):
    """A ``TcpProxy`` to Redis, with the URL of a database through it."""

    def url(self, db: int) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"


def redis_target(url: str) -> tuple[tuple[str, int], int]:
    """(host, port) and database number of a redis:// URL."""
    kwargs = redis.connection.parse_url(url)
    return (kwargs.get("host", "127.0.0.1"), int(kwargs.get("port", 6379))), int(kwargs.get("db", 0))
