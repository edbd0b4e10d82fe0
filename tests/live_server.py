"""A real HTTP server on a free local port, for the tests of the command-line client.

``LiveServer`` runs the app under werkzeug's threaded server in a background thread. ``JwtCheck`` wraps
the app the way a trusting service does: every call must carry a client JWT signed by a key of the test
JWK set, with ``aud`` the exact URL called and a ``jti`` never seen before; otherwise a bare 401.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import jwt
from werkzeug.serving import make_server

KEYS = Path(__file__).parent / "data" / "keys" / "test-client-jwks.json"


def public_keys() -> dict[str, Any]:
    keys = json.loads(KEYS.read_text())["keys"]
    return {
        k["kid"]: jwt.PyJWK({m: v for m, v in k.items() if m not in ("d", "p", "q", "dp", "dq", "qi")})
        for k in keys
        if "d" not in k
    }


class JwtCheck:
    def __init__(self, app: Any, iss: str):
        self.app, self.iss = app, iss
        self.keys = public_keys()
        self.seen: set[str] = set()
        self.checked = 0
        self.lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Any):
        path = environ.get("PATH_INFO", "")
        if path.startswith("/cds-services") and not self._trusted(environ):
            start_response("401 UNAUTHORIZED", [("WWW-Authenticate", "Bearer"), ("Content-Length", "0")])
            return [b""]
        return self.app(environ, start_response)

    def _trusted(self, environ: dict[str, Any]) -> bool:
        header = environ.get("HTTP_AUTHORIZATION", "")
        if not header.startswith("Bearer "):
            return False
        token = header[len("Bearer ") :]
        url = f"http://{environ['HTTP_HOST']}{environ['PATH_INFO']}"
        try:
            head = jwt.get_unverified_header(token)
            key = self.keys[head["kid"]]
            claims = jwt.decode(
                token,
                key.key,
                algorithms=["ES384", "RS384"],
                audience=url,
                issuer=self.iss,
                options={"require": ["iss", "aud", "exp", "iat", "jti"]},
            )
        except (jwt.InvalidTokenError, KeyError):
            return False
        if head.get("typ") != "JWT":
            return False
        with self.lock:
            if claims["jti"] in self.seen:
                return False
            self.seen.add(claims["jti"])
            self.checked += 1
        return True


class LiveServer:
    def __init__(self, app: Any):
        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        if hasattr(app, "config") and app.config.get("PUBLIC_URL") in ("", "http://localhost"):
            app.config["PUBLIC_URL"] = self.url  # the app answers to the address it is served at
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)
