"""What stands between the network and the CDS endpoints: client authentication, body limits, CORS,
baseline response headers. The Flask side of ``cds.auth.verify``.

* Every request to the ``cds_hooks`` blueprint (discovery, each service, feedback) but ``/health``
  carries a trusted client's JWT, checked before the body is read; ``g.client_iss`` is the verified
  issuer. Its ``aud`` must name the endpoint under one of ``public_bases`` — configuration, never the
  request's Host or X-Forwarded-* headers. A failure is a bare 401 (``WWW-Authenticate: Bearer``); the
  reason goes to the log, never the token. CORS preflight (``OPTIONS``) needs no token.
* The token's id (``jti``) is checked for reuse last, in the token-id store (``TokenIdStore``). For a hook
  call whose audit record goes to the database the token-id store is in (``claim_with_records``), the
  guard owns the call's ``Claim``, its unit of work: it claims ``(iss, jti)`` before the call (this
  process's own replays are refused at once), hands it to the call (``call_claim``), which passes it with
  the record to the ledger to be settled in the record's transaction; a call that ends without a record
  has its claim settled by the guard in ``settle_claim``, which answers 401 to a replay whatever the answer
  would have been.
* ``read_body`` reads the request body up to ``MAX_BODY_BYTES`` and no further, whatever the
  ``Content-Length`` says or when the body comes in chunks (413 above the limit). Under ``cds serve
  --prod`` the server has read the whole body before the app sees the request (``cds/web/httpserver.py``:
  its own 413 above the limit, 408 for a body that does not arrive in time).
* ``CORS_ORIGINS`` lists the browser origins allowed to call the CDS endpoints.
* Every response gets ``X-Content-Type-Options: nosniff``.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from flask import Flask, Response, current_app, g, request

from cds.auth.client_token import DEV_ISS, dev_client
from cds.auth.jti_redis import MIN_POOL, RedisJtiStore
from cds.auth.jti_store import Claim, Claiming, JtiStore, TokenIdStore, fallback_store
from cds.auth.trusted_clients import JwksCache, TrustedClient, keys_of, load_trusted_clients
from cds.auth.verify import TokenVerifier
from cds.errors import AuthUnavailable, LimitExceeded, Unauthorized

log = logging.getLogger("cds.auth")

BLUEPRINT = "cds_hooks"
OPEN_ENDPOINTS = {"cds_hooks.health"}
CLAIMED_ENDPOINT = "cds_hooks.call_service"  # its token id may be stored with its audit record
CORS_METHODS = "GET, POST, OPTIONS"
CORS_HEADERS = "Authorization, Content-Type"
CHUNK = 64 * 1024


def init_app(app: Flask) -> None:
    store = build_token_id_store(app.config)
    app.extensions.setdefault("cds.health", {})["replay"] = store.health  # the /health key clients read
    app.extensions["cds.token_ids"] = store
    app.extensions["cds.auth"] = build_verifier(app.config, store)
    app.before_request_funcs.setdefault(BLUEPRINT, []).append(authenticate)
    app.after_request(add_headers)
    app.after_request(settle_claim)  # runs before add_headers (Flask runs them last-registered first)


def claim_with_records(app: Flask, audit_store: Any) -> bool:
    """Store the token ids of hook calls in the transaction of their audit records (``REPLAY_WITH_AUDIT``),
    when the token-id store is the database the audit store writes to; True when that is so."""
    store = app.extensions.get("cds.token_ids")
    if not app.config["REPLAY_WITH_AUDIT"] or not isinstance(store, JtiStore) \
            or not audit_store.take_claims(store):
        return False
    app.extensions["cds.claims"] = store
    log.info("token-id store: the database, with each hook call's audit record")
    return True


def build_token_id_store(config: Any) -> TokenIdStore:
    """The token-id store the settings ask for: Redis when ``REPLAY_REDIS_URL`` is set, else the
    database; either with the same-host fallback of ``REPLAY_FALLBACK``."""
    fallback = fallback_store(config["REPLAY_FALLBACK"], config["REPLAY_FALLBACK_DIR"],
                              config["AUDIT_SPOOL_DIR"])
    if not config["REPLAY_REDIS_URL"]:
        return JtiStore.from_url(config["DATABASE_URL"], fallback=fallback)
    store = RedisJtiStore.from_url(config["REPLAY_REDIS_URL"], prefix=config["REPLAY_REDIS_PREFIX"],
                                   timeout=config["REPLAY_REDIS_TIMEOUT_SECONDS"], fallback=fallback,
                                   max_connections=max(MIN_POOL, 2 * int(config.get("THREADS") or 0)))
    log.info("token-id store: %s, keys prefixed %r", store.where, store.prefix)
    return store


def build_verifier(config: Any, store: TokenIdStore | None = None) -> TokenVerifier:
    """The token verifier the settings describe, with the start-up warnings they call for."""
    if config["TRUSTED_CLIENTS"]:
        clients = load_trusted_clients(config["TRUSTED_CLIENTS"])
        log.info("trusting %d CDS client(s) from %s", len(clients), config["TRUSTED_CLIENTS"])
    elif config["DEV_MODE"]:
        _, jwks = dev_client(config["DEV_CLIENT_DIR"])
        clients = {DEV_ISS: TrustedClient(iss=DEV_ISS, keys=keys_of(jwks, where="dev client", strict=True))}
        log.warning("*" * 78)
        log.warning("DEVELOPMENT TRUST IS ON: calls signed by the development client (iss %s, key in %s)",
                    DEV_ISS, config["DEV_CLIENT_DIR"])
        log.warning("are accepted. Never run like this in production: set CDS_DEV_MODE=false and")
        log.warning("CDS_TRUSTED_CLIENTS to the file of the CDS clients you trust.")
        log.warning("*" * 78)
    else:
        clients = {}
        log.error("no trusted CDS clients: CDS_DEV_MODE is off and CDS_TRUSTED_CLIENTS is not set, "
                  "so every call to the CDS endpoints will be refused with 401")
    jwks_cache = JwksCache(session=config.get("JWKS_SESSION"), ttl=config["JWKS_CACHE_SECONDS"],
                     timeout=config["JWKS_TIMEOUT_SECONDS"])
    if store is None:
        store = build_token_id_store(config)
    return TokenVerifier(clients, first_use=store.remember, jwks=jwks_cache,
                         leeway=config["AUTH_LEEWAY_SECONDS"],
                         max_lifetime=config["AUTH_MAX_TOKEN_LIFETIME"],
                         max_age=config["AUTH_MAX_TOKEN_AGE"])


LOOPBACK = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


def public_bases(config: Any) -> list[str]:
    """The base URLs this service answers to, from configuration only (never a request's Host or
    X-Forwarded-* headers): ``PUBLIC_URL`` then ``AUDIENCES``; with neither, the address the server is
    bound to (``HOST``, ``PORT``; a wildcard address as loopback), as the development server does. The
    first is the base of card links."""
    named = (config.get("PUBLIC_URL") or "", *(config.get("AUDIENCES") or ()))
    bases = [b.strip().rstrip("/") for b in named]
    bases = [b for b in bases if b]
    if bases:
        return bases
    host = str(config.get("HOST") or "")
    host = LOOPBACK.get(host, host)
    return [f"http://{f'[{host}]' if ':' in host else host}:{config.get('PORT')}"]


def expected_audiences() -> list[str]:
    """The exact URLs of the endpoint called, as a client may name it in ``aud`` (no query string)."""
    return [base + request.path for base in public_bases(current_app.config)]


def authenticate() -> None:
    if request.method == "OPTIONS" or request.endpoint in OPEN_ENDPOINTS:
        return
    verifier: TokenVerifier = current_app.extensions["cds.auth"]
    claims: JtiStore | None = current_app.extensions.get("cds.claims")
    # a hook call's token id is claimed here and settled with the call's audit record
    claiming = Claiming(claims) if claims is not None and request.endpoint == CLAIMED_ENDPOINT else None
    try:
        identity = verifier.verify(request.headers.get("Authorization"), expected_audiences(),
                                   first_use=claiming)
    except Unauthorized as exc:
        log.warning("refused %s %s: %s", request.method, request.path, exc.message)
        raise
    finally:
        if claiming is not None:
            g.jti_claim = claiming.claim
    g.client_iss = identity.iss
    g.client_tenant = identity.tenant


def call_claim() -> Claim | None:
    """The token claim of this hook call, for the call layer to hand to its ledger with the record (opaque
    there); None when the token id was stored on its own (or there is no token)."""
    return g.get("jti_claim")


def settle_claim(response: Response) -> Response:
    """A hook call's token claim that its audit record did not store (the call ended before it was recorded:
    a bad body, an audit entry that could not be built) is stored now; a replay found here is answered 401,
    an unavailable store 503, whatever the answer would have been."""
    claim = g.pop("jti_claim", None)
    if claim is None or claim.settled:
        return response
    try:
        current_app.extensions["cds.claims"].settle(claim)
    except Unauthorized as exc:
        log.warning("refused %s %s: %s", request.method, request.path, exc.message)
        return Response("", 401, {"WWW-Authenticate": "Bearer"})
    except AuthUnavailable as exc:
        log.error("request failed: %s", exc.message)
        return Response(json.dumps(exc.to_operation_outcome()), 503, mimetype="application/json")
    return response


def read_body(max_bytes: int) -> bytes:
    """The request body, read no further than ``max_bytes`` (``LimitExceeded`` above it)."""
    declared = request.content_length
    if declared is not None and declared > max_bytes:
        raise LimitExceeded(f"request body is {declared} bytes, more than the limit of {max_bytes}",
                            field="(body)")
    stream = request.stream
    chunks: list[bytes] = []
    total = 0
    while True:
        chunk = stream.read(min(CHUNK, max_bytes + 1 - total))
        if not chunk:
            return b"".join(chunks)
        total += len(chunk)
        if total > max_bytes:
            raise LimitExceeded(f"request body is more than the limit of {max_bytes} bytes", field="(body)")
        chunks.append(chunk)


def add_headers(response: Response) -> Response:
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    origin = request.headers.get("Origin")
    allowed = current_app.config.get("CORS_ORIGINS") or ()
    if request.blueprint == BLUEPRINT and origin and ("*" in allowed or origin in allowed):
        response.headers["Access-Control-Allow-Origin"] = "*" if "*" in allowed else origin
        response.vary.add("Origin")
        if request.method == "OPTIONS":
            response.headers["Access-Control-Allow-Methods"] = CORS_METHODS
            response.headers["Access-Control-Allow-Headers"] = CORS_HEADERS
            response.headers["Access-Control-Max-Age"] = "600"
    return response
