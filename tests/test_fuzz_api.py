"""The short run of ``scripts/fuzz_api.py``: a few hundred generated requests against ``cds serve --prod``.

Schemathesis cases from the served OpenAPI document (positive and negative), mutated scenario requests,
and valid or bad tokens: no 5xx, no stack trace, every request answered. ``FUZZ_API_REQUESTS`` sets the
count (the long run is ``scripts/fuzz_api.py --requests 10000``; see docs/robustness.md).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
from fuzz_api import run  # noqa: E402
from service_process import service  # noqa: E402

REQUESTS = int(os.environ.get("FUZZ_API_REQUESTS", "400"))


@pytest.mark.slow
def test_generated_requests_never_get_a_server_error_or_a_stack_trace(tmp_path):
    with service(workers=2, folder=tmp_path / "service") as proc:
        summary, failures = run(proc.url, REQUESTS, seed=20261122, threads=4, log=lambda _m: None)
        log = proc.log.read_text()
    assert not failures, "\n".join(failures[:10])
    assert summary["requests"] >= REQUESTS
    assert summary["server_errors"] == 0
    # the run reached every layer: refused tokens, refused bodies, and real answers with valid tokens
    assert summary["by_token"]["valid"].get(200, 0) > 0
    assert summary["by_token"]["expired"].get(401, 0) > 0
    assert summary["statuses"].get("400", 0) > 0
    assert "Traceback" not in log, log[-3000:]
