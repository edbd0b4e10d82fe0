"""Keys fetched from a client's registered jku URL, served by a real HTTP server on a local port."""

from __future__ import annotations

import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from support import PUBLIC_JWKS, make_token

from cds import create_app

ISS = "https://jku-ehr.example.org"
DISCOVERY = "http://localhost/cds-services"
EC_KEY = next(k for k in PUBLIC_JWKS["keys"] if k["kty"] == "EC")
RSA_KEY = next(k for k in PUBLIC_JWKS["keys"] if k["kty"] == "RSA")


class KeyServer:
    """Serves ``/jwks.json`` from ``self.jwks``; counts every request by path."""

    def __init__(self):
        self.jwks: dict = {"keys": [RSA_KEY]}
        self.hits: Counter[str] = Counter()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                owner.hits[self.path] += 1
                if self.path == "/jwks.json":
                    body = json.dumps(owner.jwks).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                elif self.path == "/moved.json":
                    self.send_response(302)
                    self.send_header("Location", "/jwks.json")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                elif self.path == "/huge.json":
                    body = b'{"keys": [' + b" " * 400_000 + b"]}"
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                else:
                    self.send_response(500)
                    self.send_header("Content-Length", "0")
                    self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return self.base + path


@pytest.fixture
def keys():
    server = KeyServer()
    server.thread.start()
    yield server
    server.server.shutdown()
    server.server.server_close()


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def make_app(tmp_path, keys):
    def make(jku_paths=("/jwks.json",), **config):
        path = tmp_path / "clients.json"
        path.write_text(json.dumps({"clients": [{"iss": ISS, "jku": [keys.url(p) for p in jku_paths]}]}))
        app = create_app({"DEV_MODE": False, "TRUSTED_CLIENTS": str(path),
                          "DATABASE_URL": f"sqlite:///{tmp_path}/cds.sqlite3", **config})
        clock = Clock()
        app.extensions["cds.auth"].jwks.clock = clock
        return app, clock

    return make


def call(app, alg: str, jku: str | None, kid: str | None = None) -> int:
    headers = {} if jku is None else {"jku": jku}
    if kid:
        headers["kid"] = kid
    token = make_token(DISCOVERY, alg=alg, iss=ISS, headers=headers or None)
    return app.test_client().get("/cds-services", headers={"Authorization": f"Bearer {token}"}).status_code


def test_keys_from_registered_jku_are_fetched_once_and_cached(make_app, keys):
    app, clock = make_app()
    assert call(app, "RS384", keys.url("/jwks.json")) == 200
    assert call(app, "RS384", keys.url("/jwks.json")) == 200
    clock.now += 299
    assert call(app, "RS384", keys.url("/jwks.json")) == 200
    assert keys.hits["/jwks.json"] == 1


def test_cache_lifetime_is_bounded_and_a_setting(make_app, keys):
    app, clock = make_app(JWKS_CACHE_SECONDS=60)
    assert call(app, "RS384", keys.url("/jwks.json")) == 200
    clock.now += 61
    keys.jwks = {"keys": []}  # the client withdrew its key: once the cache expires the service must notice
    assert call(app, "RS384", keys.url("/jwks.json")) == 401
    assert keys.hits["/jwks.json"] == 2


def test_unknown_kid_refreshes_once_then_gives_up(make_app, keys):
    app, clock = make_app()
    assert call(app, "RS384", keys.url("/jwks.json")) == 200  # fetch 1: only the RSA key
    keys.jwks = {"keys": [RSA_KEY, EC_KEY]}  # the client adds a key
    clock.now += 30  # well within the cache lifetime (300 s)
    assert call(app, "ES384", keys.url("/jwks.json")) == 200  # kid not cached -> refresh (fetch 2)
    assert keys.hits["/jwks.json"] == 2
    # made-up kids do not make the service hammer the key server: one refresh per interval
    for _ in range(5):
        assert call(app, "ES384", keys.url("/jwks.json"), kid="made-up") == 401
    assert keys.hits["/jwks.json"] == 2
    clock.now += 11
    assert call(app, "ES384", keys.url("/jwks.json"), kid="made-up") == 401
    assert keys.hits["/jwks.json"] == 3


def test_without_jku_header_the_registered_urls_are_used(make_app, keys):
    app, _ = make_app()
    assert call(app, "RS384", None) == 200
    assert keys.hits["/jwks.json"] == 1


def test_jku_not_registered_for_the_issuer_is_never_fetched(make_app, keys):
    app, _ = make_app()
    assert call(app, "RS384", keys.url("/other.json")) == 401
    assert call(app, "RS384", keys.url("/jwks.json?x=1")) == 401
    assert call(app, "RS384", "https://evil.example.org/jwks.json") == 401
    assert sum(keys.hits.values()) == 0


@pytest.mark.parametrize("path", ["/moved.json", "/broken.json", "/huge.json"])
def test_redirecting_failing_or_oversized_key_server_is_401(make_app, keys, path):
    app, _ = make_app(jku_paths=(path,))
    assert call(app, "RS384", keys.url(path)) == 401
    assert keys.hits["/jwks.json"] == 0  # a redirect is not followed


def test_key_server_down_is_401_within_the_timeout(make_app, keys):
    app, _ = make_app(JWKS_TIMEOUT_SECONDS=2)
    url = keys.url("/jwks.json")
    keys.server.shutdown()
    keys.server.server_close()
    assert call(app, "RS384", url) == 401


def test_key_session_is_injectable(make_app, keys):
    import requests

    class CountingSession(requests.Session):
        calls = 0

        def get(self, *args, **kwargs):
            CountingSession.calls += 1
            assert kwargs["timeout"] == (5.0, 5.0) and kwargs["allow_redirects"] is False
            return super().get(*args, **kwargs)

    app, _ = make_app(JWKS_SESSION=CountingSession())
    assert call(app, "RS384", keys.url("/jwks.json")) == 200
    assert CountingSession.calls == 1


def test_a_failing_key_server_is_backed_off_longer_after_each_failure(make_app, keys):
    app, clock = make_app(jku_paths=("/broken.json",))
    for _ in range(5):
        assert call(app, "RS384", keys.url("/broken.json")) == 401
    assert keys.hits["/broken.json"] == 1
    clock.now += 10.5  # the first back-off (10 s) is over: one more try
    for _ in range(5):
        assert call(app, "RS384", keys.url("/broken.json")) == 401
    assert keys.hits["/broken.json"] == 2
    clock.now += 15  # the second back-off is 20 s
    assert call(app, "RS384", keys.url("/broken.json")) == 401
    assert keys.hits["/broken.json"] == 2
    clock.now += 6
    assert call(app, "RS384", keys.url("/broken.json")) == 401
    assert keys.hits["/broken.json"] == 3


def test_a_key_server_that_recovers_is_used_after_its_back_off(make_app, keys):
    app, clock = make_app()
    good = keys.jwks
    keys.jwks = "not a key set"  # answers 200 with something unusable
    assert call(app, "RS384", keys.url("/jwks.json")) == 401
    keys.jwks = good
    assert call(app, "RS384", keys.url("/jwks.json")) == 401  # still backed off
    clock.now += 11
    assert call(app, "RS384", keys.url("/jwks.json")) == 200
    assert keys.hits["/jwks.json"] == 2
