"""A FHIR Bulk Data server on a real local socket, for the tests of ``cds gaps --fhir-server``.

``BulkServer(resources, ...)`` serves, under ``origin + "/fhir"``:

* ``/.well-known/smart-configuration`` naming the token endpoint ``origin + "/auth/token"``;
* the token endpoint: a ``client_credentials`` grant whose client assertion must be signed by the public
  key given (``public_jwk``), with ``iss`` = ``sub`` = the client id, ``aud`` the token endpoint, a ``jti``
  never seen before and an ``exp`` at most 5 minutes on; it answers a fresh bearer token (or
  ``token_answer``, a ``(status, body)`` pair, to play a broken endpoint);
* ``Patient/$export`` and ``Group/ID/$export``: 202 with ``Content-Location`` the job's status URL
  (or ``kickoff_answer``);
* the status URL: ``pending`` answers 202 with ``Retry-After`` (``retry_after``) and ``X-Progress``, then the
  manifest (or ``status_failure``, a ``(status, OperationOutcome)`` pair; ``pending=None``: never done);
* the files: one NDJSON file per resource type (two for Observation, to have a type in two files), and the
  ``errors`` (OperationOutcomes) in one error file; each file asks for the bearer token when
  ``requires_token`` is true (``file_host`` names them: another name than 127.0.0.1 is another origin;
  ``manifest_extra`` adds entries to the manifest's ``output``).

When ``public_jwk`` is None no token is asked for anywhere. ``requests`` records every request:
``(monotonic time, method, path, Authorization header or None)``; ``assertions`` every client assertion's
verified claims and header.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from typing import Any

import jwt
from flask import Flask, Response, request
from werkzeug.serving import make_server

CLIENT_ID = "cds-gaps-test"


def outcome(text: str, code: str = "exception") -> dict[str, Any]:
    return {"resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": code, "diagnostics": text}]}


class BulkServer:
    def __init__(self, resources: list[dict[str, Any]], *, public_jwk: dict[str, Any] | None = None,
                 requires_token: bool = True, pending: int | None = 0, retry_after: str = "1",
                 status_failure: tuple[int, dict[str, Any]] | None = None,
                 kickoff_answer: tuple[int, dict[str, Any]] | None = None,
                 token_answer: tuple[int, Any] | None = None, errors: list[dict[str, Any]] | None = None,
                 client_id: str = CLIENT_ID, token_lifetime: int = 300, file_host: str = "127.0.0.1",
                 manifest_extra: list[dict[str, Any]] | None = None):
        self.resources, self.public_jwk, self.requires_token = resources, public_jwk, requires_token
        self.pending, self.retry_after, self.status_failure = pending, retry_after, status_failure
        self.kickoff_answer, self.token_answer = kickoff_answer, token_answer
        self.errors, self.client_id, self.token_lifetime = errors or [], client_id, token_lifetime
        self.file_host, self.manifest_extra = file_host, manifest_extra or []
        self.requests: list[tuple[float, str, str, str | None]] = []
        self.assertions: list[tuple[dict[str, Any], dict[str, Any]]] = []
        self.kickoff_query: dict[str, str] = {}
        self.kickoff_headers: dict[str, str] = {}
        self.tokens: set[str] = set()
        self.seen_jti: set[str] = set()
        self.polls = 0
        self.deleted = False
        self.lock = threading.Lock()
        self.app = self._app()
        self.server = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.port = self.server.server_port
        self.origin = f"http://127.0.0.1:{self.port}"
        self.base = f"{self.origin}/fhir"
        self.token_endpoint = f"{self.origin}/auth/token"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    # -- what the files hold -----------------------------------------------------------------------------

    def files(self) -> dict[str, list[dict[str, Any]]]:
        by_type: dict[str, list[dict[str, Any]]] = {}
        for resource in self.resources:
            by_type.setdefault(resource["resourceType"], []).append(resource)
        files: dict[str, list[dict[str, Any]]] = {}
        for rtype, items in by_type.items():
            if rtype == "Observation" and len(items) > 1:  # one type in two files, as servers split them
                half = len(items) // 2
                files["observation-1.ndjson"], files["observation-2.ndjson"] = items[:half], items[half:]
            else:
                files[f"{rtype.lower()}.ndjson"] = items
        return files

    def manifest(self) -> dict[str, Any]:
        files = f"http://{self.file_host}:{self.port}/files"
        output = [{"type": items[0]["resourceType"], "url": f"{files}/{name}",
                   "count": len(items)} for name, items in self.files().items()] + self.manifest_extra
        error = ([{"type": "OperationOutcome", "url": f"{self.origin}/files/errors.ndjson"}]
                 if self.errors else [])
        return {"transactionTime": "2026-11-22T09:00:00Z", "request": f"{self.base}/Patient/$export",
                "requiresAccessToken": self.requires_token, "output": output, "error": error}

    # -- the app -------------------------------------------------------------------------------------------

    def _authorised(self) -> bool:
        if self.public_jwk is None:
            return True
        header = request.headers.get("Authorization", "")
        return header.startswith("Bearer ") and header[7:] in self.tokens

    def _app(self) -> Flask:
        app = Flask("bulk-server")
        owner = self

        def json_response(status: int, body: Any, **headers: str) -> Response:
            return Response(json.dumps(body), status=status, headers=headers,
                            content_type="application/fhir+json")

        @app.before_request
        def record() -> None:
            with owner.lock:
                owner.requests.append((time.monotonic(), request.method, request.path,
                                       request.headers.get("Authorization")))

        @app.get("/fhir/.well-known/smart-configuration")
        def smart_configuration() -> Response:
            return json_response(200, {"token_endpoint": owner.token_endpoint,
                                       "grant_types_supported": ["client_credentials"],
                                       "token_endpoint_auth_methods_supported": ["private_key_jwt"],
                                       "token_endpoint_auth_signing_alg_values_supported":
                                           ["RS384", "ES384"]})

        @app.post("/auth/token")
        def token() -> Response:
            form = request.form
            if owner.public_jwk is None:
                return json_response(400, {"error": "invalid_client", "error_description": "no clients"})
            if (form.get("grant_type") != "client_credentials"
                    or form.get("client_assertion_type")
                    != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"):
                return json_response(400, {"error": "invalid_request"})
            assertion = form.get("client_assertion", "")
            try:
                header = jwt.get_unverified_header(assertion)
                key = jwt.PyJWK(owner.public_jwk)
                claims = jwt.decode(assertion, key.key, algorithms=[owner.public_jwk["alg"]],
                                    audience=owner.token_endpoint, issuer=owner.client_id,
                                    options={"require": ["iss", "sub", "aud", "exp", "jti"]})
            except jwt.PyJWTError as exc:
                return json_response(401, {"error": "invalid_client", "error_description": str(exc)})
            if (claims["sub"] != owner.client_id or claims["exp"] > time.time() + 300 + 5
                    or claims["jti"] in owner.seen_jti or header.get("kid") != owner.public_jwk.get("kid")):
                return json_response(401, {"error": "invalid_client", "error_description": "bad claims"})
            with owner.lock:
                owner.seen_jti.add(claims["jti"])
                owner.assertions.append((claims, header))
            if owner.token_answer is not None:
                return json_response(*owner.token_answer)
            issued = secrets.token_urlsafe(24)
            with owner.lock:
                owner.tokens.add(issued)
            return json_response(200, {"access_token": issued, "token_type": "bearer",
                                       "expires_in": owner.token_lifetime, "scope": form.get("scope", "")})

        def kickoff() -> Response:
            owner.kickoff_query = dict(request.args)
            owner.kickoff_headers = {k: request.headers.get(k, "") for k in ("Accept", "Prefer")}
            if not owner._authorised():
                return json_response(401, outcome("no valid bearer token", "login"))
            if owner.kickoff_answer is not None:
                return json_response(*owner.kickoff_answer)
            return json_response(202, outcome("accepted", "informational"),
                                 **{"Content-Location": f"{owner.base}/jobs/job-1"})

        app.add_url_rule("/fhir/Patient/$export", "patient_export", kickoff)
        app.add_url_rule("/fhir/Group/<gid>/$export", "group_export", lambda gid: kickoff())

        @app.route("/fhir/jobs/<job>", methods=["GET", "DELETE"])
        def status(job: str) -> Response:
            if not owner._authorised():
                return json_response(401, outcome("no valid bearer token", "login"))
            if request.method == "DELETE":
                owner.deleted = True
                return json_response(202, outcome("deleted", "informational"))
            if owner.deleted:
                return json_response(404, outcome("job-1 was deleted", "not-found"))
            with owner.lock:
                owner.polls += 1
                polls = owner.polls
            if owner.status_failure is not None:
                return json_response(*owner.status_failure)
            if owner.pending is None or polls <= owner.pending:
                return Response(status=202, headers={"Retry-After": owner.retry_after,
                                                     "X-Progress": f"step {polls}\tof  many"})
            return json_response(200, owner.manifest())

        @app.get("/files/<name>")
        def download(name: str) -> Response:
            if owner.requires_token and not owner._authorised():
                return json_response(401, outcome("no valid bearer token", "login"))
            if name == "errors.ndjson":
                items = owner.errors
            elif name in owner.files():
                items = owner.files()[name]
            else:
                return json_response(404, outcome(f"no file {name}", "not-found"))
            body = "".join(json.dumps(item) + "\n" for item in items)
            return Response(body, content_type="application/fhir+ndjson")

        return app

    # -- what was asked ----------------------------------------------------------------------------------

    def asked(self, method: str, prefix: str) -> list[tuple[float, str, str, str | None]]:
        with self.lock:
            return [r for r in self.requests if r[1] == method and r[2].startswith(prefix)]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)

    def __enter__(self) -> BulkServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
