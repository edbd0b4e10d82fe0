"""Finding 16: made-up HTTP methods and paths cannot grow the /metrics label sets.

Requests go over a real socket to the service; every made-up method is counted under ``method="other"``
and every unknown path under ``endpoint="(unmatched)"``, so the number of series stays the same.
"""

from __future__ import annotations

import http.client
import re
import uuid

import requests

from cds import create_app


def series(text: str) -> set[str]:
    return {line.rsplit(" ", 1)[0] for line in text.splitlines() if line and not line.startswith("#")}


def test_made_up_methods_and_paths_collapse_into_fixed_labels(auth_config, live_server):
    base = live_server(create_app(auth_config))
    port = int(base.rsplit(":", 1)[1])
    for warm in ("FOO", "GET"):  # one of each kind first, so the series exist
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request(warm, f"/{uuid.uuid4().hex}")
        conn.getresponse().read()
        conn.close()
    requests.get(f"{base}/metrics", timeout=30)
    before = series(requests.get(f"{base}/metrics", timeout=30).text)
    for i in range(200):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request(f"M{uuid.uuid4().hex[:12].upper()}", f"/scan/{i}/{uuid.uuid4().hex}")
        assert conn.getresponse().status in (400, 404, 405)
        conn.close()
        requests.get(f"{base}/{uuid.uuid4().hex}", timeout=30)
    text = requests.get(f"{base}/metrics", timeout=30).text
    after = series(text)
    assert after == before, sorted(after - before)[:10]
    methods = set(re.findall(r'cds_http_requests_total\{[^}]*method="([^"]*)"', text))
    assert "other" in methods and methods <= {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS",
                                                "other"}
    others = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                 if line.startswith("cds_http_requests_total{") and 'method="other"' in line)
    assert others >= 201
