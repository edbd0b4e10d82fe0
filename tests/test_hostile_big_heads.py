"""Finding 3 of the second hostile round: request heads over 64 KiB, never finished, froze `cds serve --prod`.

The hand-written worker read heads in its event loop only up to 64 KiB, then handed the connection to a
thread that waited for the rest; twelve such sockets held every thread and ``GET /health`` timed out.

The guarantee, by class: a request head (request line and headers) of 64 KiB or more, of any shape — long
lines, many short headers, a long request line — is answered 431 (an OperationOutcome) as soon as 64 KiB
of it have arrived, holds no application thread, and the connection is closed. Against a real
`cds serve --prod` of one process with one thread (the fewest threads there can be), over real sockets.
"""

from __future__ import annotations

import json
import socket
import time

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prod_server import closed_by_server, read_answer, running

HEAD_LIMIT = 64 * 1024
SOCKETS = 12


def shaped(kind: str, size: int = 72 * 1024) -> bytes:
    """A head of about ``size`` bytes, not finished (no blank line)."""
    if kind == "many-lines":
        lines = b"".join(b"X-Pad-%d: %s\r\n" % (i, b"a" * 100) for i in range(size // 110))
        return b"GET /health HTTP/1.1\r\nHost: x\r\n" + lines
    if kind == "one-line":
        return b"GET /health HTTP/1.1\r\nHost: x\r\nX-Long: " + b"b" * size + b"\r\n"
    if kind == "many-headers":
        return b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"".join(b"H%d: v\r\n" % i for i in range(size // 9))
    if kind == "request-line":
        return b"GET /health?" + b"q" * size + b" HTTP/1.1\r\nHost: x\r\n"
    raise ValueError(kind)


@pytest.fixture(scope="module")
def prod(tmp_path_factory):
    with running(tmp_path_factory.mktemp("big-heads"), CDS_WORKERS="1", CDS_THREADS="1") as server:
        yield server


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["many-lines", "one-line", "many-headers", "request-line"])
def test_unfinished_heads_over_64_kib_from_many_sockets_do_not_freeze_health(prod, kind):
    sockets = []
    try:
        for _ in range(SOCKETS):
            sock = socket.create_connection(("127.0.0.1", prod.port), timeout=30)
            try:
                sock.sendall(shaped(kind))  # and never the blank line that would end it
            except OSError:
                pass  # refused while still sending: the answer is read below
            sockets.append(sock)
        # the one application thread is free: /health answers while every hostile socket is open
        for _ in range(3):
            started = time.monotonic()
            assert requests.get(f"{prod.base}/health", timeout=20).status_code == 200
            assert time.monotonic() - started < 15
        for sock in sockets:
            answer = read_answer(sock, seconds=30)
            assert answer.status == 431, answer
            outcome = json.loads(answer.body)
            assert outcome["resourceType"] == "OperationOutcome"
            assert outcome["issue"][0]["code"] == "too-costly"
            assert closed_by_server(sock)
    finally:
        for sock in sockets:
            sock.close()
    assert "Traceback" not in prod.log_text()


header_line = st.builds(
    lambda name, value: name + b": " + value + b"\r\n",
    st.text("abcdefghijklmnopqrstuvwxyz-0123456789", min_size=1, max_size=40).map(str.encode),
    st.binary(min_size=0, max_size=9000).map(lambda b: bytes(33 + (c % 94) for c in b)),  # visible ASCII
)


@pytest.mark.slow
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(lines=st.lists(header_line, min_size=1, max_size=40), finished=st.booleans())
def test_every_head_of_64_kib_or_more_is_a_431(prod, lines, finished):
    head = b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"".join(lines)
    while len(head) < HEAD_LIMIT:
        head += lines[len(head) % len(lines)]
    if finished:
        head += b"\r\n"
    with socket.create_connection(("127.0.0.1", prod.port), timeout=30) as sock:
        try:
            sock.sendall(head)
        except OSError:
            pass
        assert read_answer(sock, seconds=30).status == 431
        assert closed_by_server(sock)
