"""Request smuggling and oversized heads, against the production server (``cds/web/httpserver.py``).

The guarantee, by class: a request whose framing a front end could read otherwise — ``Content-Length``
with ``Transfer-Encoding``, two lengths, a length that is not plain digits, folded or doubled
``Transfer-Encoding``, a coding list, ``Transfer-Encoding`` on HTTP/1.0, NUL or a space before the colon,
bare LF — is answered 400 (501 for a coding the server does not know), an OperationOutcome, and the
connection is closed: nothing sent after it on that connection is served. A head of 64 KiB or more is a 431
(a 1 MB header line, 10,000 headers). Real `cds serve --prod`, real sockets.
"""

from __future__ import annotations

import json
import socket

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prod_server import closed_by_server, read_answer, running

SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
POST = b"POST /cds-services/bone-health-patient-view/feedback HTTP/1.1\r\nHost: x\r\n"

ATTACKS = {
    "cl-and-te": POST + b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "te-and-cl": POST + b"Transfer-Encoding: chunked\r\nContent-Length: 40\r\n\r\n0\r\n\r\n",
    "two-lengths": POST + b"Content-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
    "two-equal-lengths": POST + b"Content-Length: 4\r\nContent-Length: 4\r\n\r\nabcd",
    "signed-length": POST + b"Content-Length: +4\r\n\r\nabcd",
    "hex-length": POST + b"Content-Length: 0x4\r\n\r\nabcd",
    "folded-te": POST + b"Transfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n",
    "doubled-te": POST + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "te-list": POST + b"Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
    "te-on-http-1.0": POST.replace(b"HTTP/1.1", b"HTTP/1.0") + b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "nul-in-header": b"GET /health HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",
    "space-before-colon": POST + b"Content-Length : 4\r\n\r\nabcd",
    "te-space-before-colon": POST + b"Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
    "bare-lf": b"GET /health HTTP/1.1\nHost: x\n\n",
    "unknown-coding": POST + b"Transfer-Encoding: gzip\r\n\r\n",
}


@pytest.fixture(scope="module")
def prod(tmp_path_factory):
    with running(tmp_path_factory.mktemp("framing"), CDS_WORKERS="1", CDS_THREADS="2") as server:
        yield server


def refused(port: int, attack: bytes) -> tuple[int, bytes]:
    """Send ``attack`` with a second request behind it; the status, and what came after the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(attack + SMUGGLED)
        answer = read_answer(sock, seconds=30)
        assert json.loads(answer.body)["resourceType"] == "OperationOutcome"
        assert closed_by_server(sock)
        return answer.status, answer.body


@pytest.mark.parametrize("name", list(ATTACKS))
def test_ambiguous_framing_is_refused_and_nothing_after_it_is_served(prod, name):
    status, _ = refused(prod.port, ATTACKS[name])
    assert status == (501 if name == "unknown-coding" else 400)


def test_nothing_smuggled_reached_the_app(prod):
    for attack in ATTACKS.values():
        refused(prod.port, attack)
    metrics = requests.get(f"{prod.base}/metrics", timeout=30).text
    assert 'endpoint="(unmatched)",method="GET",status="404"' not in metrics  # /smuggled never answered


def spelled(name: str, draw_case: list[bool]) -> bytes:
    return "".join(c.upper() if up else c.lower() for c, up in zip(name, draw_case, strict=False)).encode()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(te_case=st.lists(st.booleans(), min_size=17, max_size=17),
       cl_case=st.lists(st.booleans(), min_size=14, max_size=14),
       length=st.integers(0, 64), te_first=st.booleans(),
       spaces=st.sampled_from([b"", b" ", b"\t", b"  "]), version=st.sampled_from([b"1.1", b"1.0"]))
def test_transfer_encoding_beside_a_length_is_refused_however_spelled(prod, te_case, cl_case, length,
                                                                         te_first, spaces, version):
    te = spelled("transfer-encoding", te_case) + b":" + spaces + b"chunked" + spaces + b"\r\n"
    cl = spelled("content-length", cl_case) + b": " + str(length).encode() + b"\r\n"
    head = POST.replace(b"HTTP/1.1", b"HTTP/" + version) + (te + cl if te_first else cl + te) + b"\r\n"
    status, _ = refused(prod.port, head + b"0\r\n\r\n" + b"x" * length)
    assert status == 400


@pytest.mark.parametrize("head", [
    b"GET /health HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 1_000_000 + b"\r\n\r\n",
    b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(10_000)) + b"\r\n",
], ids=["1-MB-line", "10000-headers"])
def test_huge_heads_are_431(prod, head):
    with socket.create_connection(("127.0.0.1", prod.port), timeout=30) as sock:
        try:
            sock.sendall(head)
        except OSError:
            pass  # refused while still sending: the answer is there all the same
        answer = read_answer(sock, seconds=30)
        assert answer.status == 431
        assert json.loads(answer.body)["issue"][0]["code"] == "too-costly"
