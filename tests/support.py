"""Shared test fixtures.

Calling the CDS endpoints needs a trusted client's JWT. For a test that does not care about auth::

    def test_something(auth_config, authed_client):
        app = create_app({**auth_config, "RULES_DIR": ...})   # trusts the test client, temp database
        client = authed_client(app)                            # signs every request for its exact URL
        client.post("/cds-services/bone-health-patient-view", json=body)

``live_server(app)`` serves an app over real HTTP on a local port and returns its base URL.
``client_token(url)`` signs one token by hand (``alg="RS384"``, ``iss=...``, ``lifetime=...``,
``jti=...``, ``now=...`` and ``headers=``/``claims=`` overrides).
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import os
import selectors
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError
from werkzeug.datastructures import Headers
from werkzeug.serving import make_server

from cds import create_app
from cds.auth.client_token import public_jwk, sign_client_token

DATA = Path(__file__).parent / "data"
TEST_ISS = "https://ehr.example.org/cds-client"
TEST_CLIENT_BASE = "http://localhost"

#: the time limit of a test marked slow, in seconds, unless it names its own (pyproject's `timeout` is the
#: default of every other test; tests/conftest.py applies this one)
SLOW_TIMEOUT_SECONDS = 1200


def _test_keys() -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Private JWK per algorithm, and the public JWK Set, of the published test client keys."""
    keys = json.loads((DATA / "test-client-jwks.json").read_text())["keys"]
    private = {k["alg"]: k for k in keys if "d" in k}
    public = {"keys": [public_jwk(k) for k in private.values()]}
    return private, public


PRIVATE_KEYS, PUBLIC_JWKS = _test_keys()


def make_token(aud: Any, *, alg: str = "ES384", iss: str = TEST_ISS, headers: dict[str, Any] | None = None,
               claims: dict[str, Any] | None = None, drop: tuple[str, ...] = (), **kwargs: Any) -> str:
    """A token signed with the test key for ``alg``; ``headers``/``claims`` override, ``drop`` removes."""
    key = PRIVATE_KEYS[alg]
    if not (headers or claims or drop):
        return sign_client_token(key, iss, aud, alg=alg, **kwargs)
    signed = sign_client_token(key, iss, aud, alg=alg, **kwargs)
    base = jwt.decode(signed, options={"verify_signature": False})
    head = {"kid": key["kid"], "typ": "JWT", **(headers or {})}
    body = {**base, **(claims or {})}
    for name in drop:
        body.pop(name, None)
        if name == "typ":
            head["typ"] = None  # PyJWT leaves out a "typ" whose value is None
        else:
            head.pop(name, None)
    return jwt.encode(body, jwt.PyJWK(key, algorithm=alg).key, algorithm=alg, headers=head)


class AuthedClient(FlaskClient):
    """A test client that adds a fresh test-client token, for the exact URL called, to every request."""

    def open(self, *args: Any, **kwargs: Any):
        headers = Headers(kwargs.pop("headers", None) or {})
        if "Authorization" not in headers and args and isinstance(args[0], str):
            base = (self.application.config.get("PUBLIC_URL") or "http://localhost").rstrip("/")
            path = "/" + args[0].split("?", 1)[0].lstrip("/")
            headers["Authorization"] = "Bearer " + make_token(base + path)
        kwargs["headers"] = headers
        return super().open(*args, **kwargs)


@pytest.fixture(autouse=True)
def _keep_state_out_of_the_repo(tmp_path_factory, monkeypatch):
    """Development keys and the default database go to a temporary folder, never into ./instance."""
    where = tmp_path_factory.mktemp("instance")
    monkeypatch.setenv("CDS_DEV_CLIENT_DIR", str(where / "dev-client"))
    monkeypatch.setenv("CDS_DATABASE_URL", f"sqlite:///{where}/cds.sqlite3")
    monkeypatch.setenv("CDS_AUDIT_SECRET_FILE", str(where / "audit-patient-key.secret"))
    monkeypatch.setenv("CDS_LINK_SECRET_FILE", str(where / "link.secret"))
    monkeypatch.setenv("CDS_AUDIT_SPOOL_DIR", str(where / "audit-spool"))
    # the test client calls http://localhost/...; a test serving on a port says so (``live_server``)
    monkeypatch.setenv("CDS_PUBLIC_URL", TEST_CLIENT_BASE)


def trusted_clients_file_in(folder: Path) -> Path:
    """A trusted-clients file (in ``folder``) trusting the test client's published test keys."""
    path = folder / "trusted-clients.json"
    path.write_text(json.dumps({"clients": [{"iss": TEST_ISS, "jwks": copy.deepcopy(PUBLIC_JWKS)}]}))
    return path


@pytest.fixture
def trusted_clients_file(tmp_path) -> Path:
    return trusted_clients_file_in(tmp_path)


@pytest.fixture
def auth_config(trusted_clients_file, tmp_path) -> dict[str, Any]:
    """Settings for an app that trusts only the test client (development trust off), on a temp database."""
    return {"DEV_MODE": False, "TRUSTED_CLIENTS": str(trusted_clients_file),
            "DATABASE_URL": f"sqlite:///{tmp_path}/cds.sqlite3"}


@pytest.fixture
def client_token() -> Callable[..., str]:
    return make_token


@pytest.fixture
def authed_client() -> Callable[[Flask], FlaskClient]:
    def make(app: Flask) -> FlaskClient:
        app.test_client_class = AuthedClient
        return app.test_client()

    return make


def serve_at(app: Flask, base: str) -> None:
    """An app served on a port answers to that address (as ``cds serve`` does), unless the test named
    another public URL."""
    if app.config.get("PUBLIC_URL") in ("", TEST_CLIENT_BASE, app.config.get("TEST_SERVED_AT")):
        app.config["PUBLIC_URL"] = app.config["TEST_SERVED_AT"] = base  # a module's app served again


@pytest.fixture
def live_server() -> Any:
    """``live_server(app)`` serves the app over real HTTP on a free local port and returns its base URL."""
    servers = []

    def start(app: Flask) -> str:
        server = make_server("127.0.0.1", 0, app, threaded=True)
        base = f"http://127.0.0.1:{server.server_port}"
        serve_at(app, base)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        servers.append((server, thread))
        return base

    yield start
    for server, thread in servers:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# -- the service under test, authenticated, with evaluation time pinned ------------------------------------

NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)

SERVICE = {"patient-view": "bone-health-patient-view", "order-select": "bone-health-order-select",
           "order-sign": "bone-health-order-sign"}


@pytest.fixture
def app(auth_config):
    return create_app({**auth_config, "NOW": NOW})


@pytest.fixture
def client(app, authed_client):
    """A test client whose every request carries a fresh, valid CDS client token."""
    return authed_client(app)


@pytest.fixture
def call(client):
    """POST a hook body to the service for its hook; return the response."""

    def _call(body, service: str | None = None):
        return client.post(f"/cds-services/{service or SERVICE[body['hook']]}", json=body)

    return _call


def make_test_app(config: dict[str, Any] | None = None, *, audit_sink: Any = None) -> Flask:
    """An app that trusts only the test client, on a temporary database, whose ``test_client()`` signs every
    request (for module-level or cached apps that cannot use the fixtures above); hook calls are recorded
    to ``audit_sink`` when one is given."""
    import tempfile

    where = Path(tempfile.mkdtemp(prefix="cds-test-"))
    trusted = where / "trusted-clients.json"
    trusted.write_text(json.dumps({"clients": [{"iss": TEST_ISS, "jwks": copy.deepcopy(PUBLIC_JWKS)}]}))
    app = create_app({"DEV_MODE": False, "TRUSTED_CLIENTS": str(trusted),
                      "DATABASE_URL": f"sqlite:///{where}/cds.sqlite3", **(config or {})},
                     audit_sink=audit_sink)
    app.test_client_class = AuthedClient
    return app


# -- PostgreSQL --------------------------------------------------------------------------------------------

PG_URL = os.environ.get("CDS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="session")
def pg_base_url() -> Iterator[str]:
    """A fresh schema in the test PostgreSQL database for this session, dropped at the end; skips, saying
    why, when the server is unreachable."""
    schema = f"audit_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_URL, connect_args={"connect_timeout": 3})
    try:
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    except OperationalError as exc:
        admin.dispose()
        pytest.skip(f"PostgreSQL unreachable at {PG_URL}: {str(exc.orig).splitlines()[0]}")
    try:
        yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def pump(a: socket.socket, b: socket.socket, *, close: bool = False) -> None:
    """Copy bytes both ways between two sockets until either end closes (the tests' TCP proxies); with
    ``close``, close both sockets at the end."""
    poller = selectors.DefaultSelector()  # not select(): the suite may hold descriptors above 1024
    try:
        poller.register(a, selectors.EVENT_READ)
        poller.register(b, selectors.EVENT_READ)
        while True:
            for key, _ in poller.select(1.0):
                data = key.fileobj.recv(65536)  # type: ignore[union-attr]
                if not data:
                    return
                (b if key.fileobj is a else a).sendall(data)
    except (OSError, ValueError):  # ValueError: a socket closed under us between two selects (fd -1)
        return
    finally:
        poller.close()
        if close:
            a.close()
            b.close()


class TcpProxy:
    """127.0.0.1:<port> forwarded to ``target`` (a database, Redis): ``stop()`` closes the port and cuts every
    open connection, ``start()`` listens on the same port again. Started when made unless ``start=False``."""

    def __init__(self, target: tuple[str, int], *, start: bool = True):
        self.target = target
        self.port = 0  # chosen at the first start, kept after
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        if start:
            self.start()

    def start(self) -> None:
        listener = socket.create_server(("127.0.0.1", self.port))  # SO_REUSEADDR: the same port again
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            threading.Thread(target=pump, args=(client, upstream), kwargs={"close": True},
                             daemon=True).start()

    def stop(self) -> None:
        with self._lock:
            socks, self._conns = [*([self._listener] if self._listener else []), *self._conns], []
            self._listener = None
        for sock in socks:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # also wakes the thread blocked in accept()
            except OSError:
                pass
            sock.close()

    def url_for(self, base: str) -> str:
        """A database URL like ``base`` that goes through this proxy."""
        from sqlalchemy.engine import make_url

        return make_url(base).set(host="127.0.0.1", port=self.port).render_as_string(hide_password=False)


# -- a real browser ------------------------------------------------------------------------------------------

CHROMIUM = "/usr/bin/chromium"
#: the flags a headless Chromium needs here: no sandbox as root, and no background connections (refused by a
#: closed network, many at a time)
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture
def browser() -> Iterator[Any]:
    """Debian's Chromium driven by Playwright; skips, saying why, when either is missing (CI installs both:
    scripts/test-prereqs and the test extras)."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"{CHROMIUM} is not installed (scripts/test-prereqs installs it when run as root)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with sync_api.sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield launched
        finally:
            launched.close()
