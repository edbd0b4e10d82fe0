"""Finding 4: a client's key server that hangs or fails cannot stall other clients or be hammered.

The service runs over real HTTP. One issuer's registered ``jku`` is a real server that accepts and never
answers; another issuer's is a real key server. Tokens naming the hanging one wait for its fetch (one
deadline), but never hold up the other issuer's calls; a failing URL is fetched once per back-off
interval, however many tokens name it; a pinned key whose ``kid`` matches needs no fetch at all.
"""

from __future__ import annotations

import concurrent.futures
import copy
import json
import time

import pytest
import requests
from fault_server import FaultServer
from support import PUBLIC_JWKS, make_token
from test_auth_jku import EC_KEY, RSA_KEY, KeyServer

from cds import create_app

STALLED, GOOD, FAILING, PINNED = ("https://stalled.example.org", "https://good.example.org",
                                  "https://failing.example.org", "https://pinned.example.org")
JWKS_TIMEOUT = 8.0


@pytest.fixture
def servers():
    keys, hang = KeyServer(), FaultServer("hang")
    keys.jwks = {"keys": [RSA_KEY, EC_KEY]}
    keys.thread.start()
    yield keys, hang
    hang.close()
    keys.server.shutdown()
    keys.server.server_close()


@pytest.fixture
def base(servers, tmp_path, live_server):
    keys, hang = servers
    clients = {"clients": [
        {"iss": STALLED, "jku": [f"{hang.url}/jwks.json"]},
        {"iss": GOOD, "jku": [keys.url("/jwks.json")]},
        {"iss": FAILING, "jku": [keys.url("/broken.json")]},
        {"iss": PINNED, "jwks": copy.deepcopy(PUBLIC_JWKS), "jku": [f"{hang.url}/jwks.json"]},
    ]}
    path = tmp_path / "clients.json"
    path.write_text(json.dumps(clients))
    app = create_app({"DEV_MODE": False, "TRUSTED_CLIENTS": str(path), "JWKS_TIMEOUT_SECONDS": JWKS_TIMEOUT,
                      "DATABASE_URL": f"sqlite:///{tmp_path}/cds.sqlite3"})
    return live_server(app)


def get(base: str, iss: str, alg: str = "RS384", jku: str | None = None) -> tuple[int, float]:
    url = f"{base}/cds-services"
    token = make_token(url, alg=alg, iss=iss, headers={"jku": jku} if jku else None)
    started = time.monotonic()
    response = requests.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=120)
    return response.status_code, time.monotonic() - started


def test_a_hanging_key_server_does_not_delay_another_clients_calls(servers, base):
    keys, hang = servers
    stalled_jku = f"{hang.url}/jwks.json"
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        bogus = [pool.submit(get, base, STALLED, "RS384", stalled_jku) for _ in range(4)]
        deadline = time.monotonic() + 60
        while hang.connections == 0 and time.monotonic() < deadline:
            time.sleep(0.05)  # the stalled fetch has begun
        assert hang.connections == 1
        status, elapsed = get(base, GOOD, "ES384", keys.url("/jwks.json"))
        assert status == 200
        assert elapsed < JWKS_TIMEOUT / 2, elapsed  # not queued behind the stalled fetch
        results = [f.result(timeout=120) for f in bogus]
    assert [s for s, _ in results] == [401] * 4
    assert max(t for _, t in results) < JWKS_TIMEOUT * 2 + 5  # one deadline each, at most, then refused
    assert hang.connections == 1  # the failure is remembered: the stalled URL was asked once


def test_a_failing_key_server_is_fetched_once_per_back_off_interval(servers, base):
    keys, _ = servers
    for _ in range(30):
        assert get(base, FAILING, "RS384", keys.url("/broken.json"))[0] == 401
    assert keys.hits["/broken.json"] == 1


def test_a_pinned_key_needs_no_fetch_even_when_the_token_names_a_jku(servers, base):
    _, hang = servers
    status, elapsed = get(base, PINNED, "ES384", f"{hang.url}/jwks.json")
    assert status == 200 and elapsed < JWKS_TIMEOUT / 2
    assert hang.connections == 0


def test_a_key_server_dripping_its_headers_is_cut_off_at_the_deadline(tmp_path, live_server):
    with FaultServer("drip-head", drip_interval=0.2) as drip:
        path = tmp_path / "clients.json"
        path.write_text(json.dumps({"clients": [{"iss": STALLED, "jku": [f"{drip.url}/jwks.json"]}]}))
        app = create_app({"DEV_MODE": False, "TRUSTED_CLIENTS": str(path), "JWKS_TIMEOUT_SECONDS": 2,
                          "DATABASE_URL": f"sqlite:///{tmp_path}/cds.sqlite3"})
        status, elapsed = get(live_server(app), STALLED, "RS384", f"{drip.url}/jwks.json")
        assert status == 401
        assert 1.5 <= elapsed < 10, elapsed  # each byte inside the 2 s read timeout: the deadline ends it
