"""Finding 11: a FHIR server dripping its status line and headers cannot hold a worker.

The service runs over real HTTP; the FHIR server is a real socket that sends one byte of its status line
and headers every 0.2 s, forever — each byte well inside the read timeout. One overall deadline per GET,
from connect to last byte (``FHIR_RESPONSE_SECONDS``), cuts it off: the call is a 412 naming the key and
the budget, soon after the budget, and the audit trail holds its record.
"""

from __future__ import annotations

import time

import pytest
from fault_server import FaultServer
from test_faults import BUDGET, audit_count, post, service  # noqa: F401 - the service fixture


@pytest.fixture
def fhir():
    server = FaultServer("drip-head", drip_interval=0.2)
    yield server
    server.close()


def test_dripping_status_line_and_headers_are_cut_off_at_the_deadline(fhir, service):  # noqa: F811
    app, base = service
    started = time.monotonic()
    status, body, elapsed = post(base, fhir.url)
    assert status == 412, body
    issue = body["issue"][0]
    assert f"did not finish its answer within {BUDGET:g} s" in issue["diagnostics"]
    assert issue["expression"][0].startswith("prefetch")
    # the first key is cut off at the budget; the others are not fetched (the server already failed)
    assert BUDGET * 0.9 <= elapsed < BUDGET + 8, elapsed
    assert time.monotonic() - started < 30
    assert audit_count(app) == 1
