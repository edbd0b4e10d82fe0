"""The spec floor: the least a CDS Hooks service with client authentication and a durable hash-chained
audit must do on every call, done naively. No FHIR, no rules.

For each ``POST /cds-services/<id>``:

1. parse the JSON body (an object with ``hook`` and ``hookInstance``, else 400);
2. verify the ``Authorization: Bearer`` client JWT: ES384 signature with the trusted client's key
   (``CDS_TRUSTED_CLIENTS``, the service's own file format), ``iss``, ``aud`` (``SPEC_FLOOR_AUDIENCE``,
   the URL the tokens are minted for), ``exp``, ``iat`` and ``jti`` required (else 401);
3. in one transaction under one lock (``pg_advisory_xact_lock`` on PostgreSQL, ``BEGIN IMMEDIATE`` on
   SQLite): insert ``sha256(iss + NUL + jti)`` into ``spec_floor_jti`` (a duplicate is a replay: 401), read
   the chain head and append one record of the request to ``spec_floor_chain`` with
   ``hash = sha256(prev_hash + "\\n" + canonical JSON)``; the answer is sent after the commit.

The database is ``CDS_DATABASE_URL`` (the service's own database in a benchmark run; the tables are the
floor's own, so the same tokens can be sent to the service and to the floor). The record holds the time,
service id, hook, hookInstance, issuer, the jti key and the sha256 and length of the raw body: no patient
identifier and no token. ``verify_chain`` re-computes every link.

Served like the service: ``python -m cds.web.supervisor --app bench.spec_floor:app``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import threading
from typing import Any

import jwt
from flask import Flask, jsonify, request
from sqlalchemy import (
    Column,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    insert,
    select,
    text,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

GENESIS = "0" * 64
LOCK_KEY = 0x5EC_F100  # the floor's own advisory lock (the service's chain uses another key)

metadata = MetaData()
jti_table = Table(
    "spec_floor_jti", metadata,
    Column("jti_key", String(64), primary_key=True),
    Column("expires_at", Integer, nullable=False),
)
chain_table = Table(
    "spec_floor_chain", metadata,
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("content", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
)


class Replay(Exception):
    """The token's jti was used before."""


def canonical(content: Any) -> str:
    return json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def link_hash(prev_hash: str, content_json: str) -> str:
    return hashlib.sha256(f"{prev_hash}\n{content_json}".encode("utf-8", "surrogatepass")).hexdigest()


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 60, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _no_pysqlite_transactions(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # BEGIN IMMEDIATE below takes the write lock up front

        @event.listens_for(engine, "begin")
        def _begin_immediate(conn: Connection) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_size=8, max_overflow=8)


def prepare(engine: Engine) -> None:
    """Create the floor's tables (idempotent; safe when several processes start at once)."""
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": LOCK_KEY + 1})
        metadata.create_all(conn)


def append(engine: Engine, jti_key: str, expires_at: int, content: dict[str, Any]) -> int:
    """Refuse a replayed jti and append one chained record, in one transaction under the lock."""
    content_json = canonical(content)
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": LOCK_KEY})
        try:
            conn.execute(insert(jti_table).values(jti_key=jti_key, expires_at=expires_at))
        except IntegrityError as exc:  # the primary key: this jti was inserted before
            raise Replay from exc
        head = conn.execute(
            select(chain_table.c.seq, chain_table.c.hash).order_by(chain_table.c.seq.desc()).limit(1)
        ).first()
        seq, prev = (head.seq + 1, head.hash) if head else (1, GENESIS)
        conn.execute(insert(chain_table).values(seq=seq, content=content_json, prev_hash=prev,
                                                hash=link_hash(prev, content_json)))
        return seq


def verify_chain(engine: Engine) -> int:
    """Re-compute every link; return the number of records, raise ``ValueError`` at the first bad one."""
    prev, count = GENESIS, 0
    with engine.connect() as conn:
        for row in conn.execute(select(chain_table).order_by(chain_table.c.seq)):
            count += 1
            if row.seq != count:
                raise ValueError(f"record {count} missing (found seq {row.seq})")
            if row.prev_hash != prev or link_hash(prev, row.content) != row.hash:
                raise ValueError(f"record {row.seq} does not chain")
            prev = row.hash
    return count


def trusted_keys(path: str) -> dict[tuple[str, str], Any]:
    with open(path, encoding="utf-8") as f:
        clients = json.load(f)["clients"]
    return {
        (c["iss"], k["kid"]): jwt.algorithms.ECAlgorithm.from_jwk(json.dumps(k))
        for c in clients for k in c["jwks"]["keys"]
    }


def create_app(database_url: str, trusted_clients: str, audience: str) -> Flask:
    app = Flask(__name__)
    engine = make_engine(database_url)
    prepare(engine)
    keys = trusted_keys(trusted_clients)
    sqlite_lock = threading.Lock() if engine.dialect.name == "sqlite" else None

    def refuse(status: int, message: str):
        return jsonify({"resourceType": "OperationOutcome",
                        "issue": [{"severity": "error", "code": "security" if status == 401 else "invalid",
                                   "diagnostics": message}]}), status

    @app.post("/cds-services/<service_id>")
    def hook(service_id: str):
        raw = request.get_data()
        try:
            body = json.loads(raw)
        except ValueError:
            return refuse(400, "the body is not JSON")
        if not isinstance(body, dict) or not isinstance(body.get("hook"), str) \
                or not isinstance(body.get("hookInstance"), str):
            return refuse(400, "the body needs hook and hookInstance")
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            return refuse(401, "a bearer token is required")
        token = header[len("Bearer "):]
        try:
            unverified = jwt.decode(token, options={"verify_signature": False})
            key = keys[(unverified["iss"], jwt.get_unverified_header(token)["kid"])]
            claims = jwt.decode(token, key, algorithms=["ES384"], audience=audience, issuer=unverified["iss"],
                                options={"require": ["iss", "aud", "exp", "iat", "jti"]})
        except (jwt.PyJWTError, KeyError, TypeError):
            return refuse(401, "the token is not valid for a trusted client")
        jti_key = hashlib.sha256(f"{claims['iss']}\0{claims['jti']}".encode()).hexdigest()
        content = {
            "time": dt.datetime.now(dt.UTC).isoformat(), "service": service_id, "hook": body["hook"],
            "hookInstance": body["hookInstance"], "iss": claims["iss"], "jti_key": jti_key,
            "body_sha256": hashlib.sha256(raw).hexdigest(), "body_bytes": len(raw),
        }
        try:
            if sqlite_lock is not None:
                with sqlite_lock:
                    append(engine, jti_key, int(claims["exp"]), content)
            else:
                append(engine, jti_key, int(claims["exp"]), content)
        except Replay:
            return refuse(401, "the token's jti was used before")
        return jsonify({"cards": []})

    @app.get("/health")
    def health():
        return jsonify({"status": "ok"})

    return app


def _from_environment() -> Flask | None:
    if "CDS_DATABASE_URL" not in os.environ or "SPEC_FLOOR_AUDIENCE" not in os.environ:
        return None
    return create_app(os.environ["CDS_DATABASE_URL"], os.environ["CDS_TRUSTED_CLIENTS"],
                      os.environ["SPEC_FLOOR_AUDIENCE"])


app = _from_environment()
