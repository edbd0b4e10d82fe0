"""HTTP endpoints of the CDS Hooks service: discovery, the hook services, feedback, health."""

from __future__ import annotations

import datetime as dt

from flask import Blueprint, Flask, current_app, g, jsonify, request

from cds.errors import UnknownService
from cds.hooks.envelope import parse_feedback
from cds.hooks.services import discovery_document, hook_of
from cds.web.guard import read_body
from cds.web.jsonbody import parse_json

bp = Blueprint("cds_hooks", __name__)


def _body():
    limit = current_app.config["MAX_BODY_BYTES"]
    return parse_json(read_body(limit), max_bytes=limit, max_depth=current_app.config["MAX_JSON_DEPTH"])


@bp.get("/cds-services")
def discovery():
    return jsonify(discovery_document(current_app.extensions["cds.pack"]))


@bp.post("/cds-services/<service_id>")
def call_service(service_id: str):
    service = current_app.extensions["cds.service"]
    now = current_app.config.get("NOW")  # tests may pin evaluation time
    body = _body()
    response = service.call(service_id, body, now=now() if callable(now) else now,
                            client_iss=getattr(g, "client_iss", None),
                            base_url=current_app.config.get("PUBLIC_URL") or request.host_url)
    return jsonify(response)


@bp.post("/cds-services/<service_id>/feedback")
def feedback(service_id: str):
    if hook_of(service_id) is None:
        raise UnknownService(f"no CDS service with id {service_id!r}", field="service")
    items = parse_feedback(_body())
    store = current_app.extensions.get("cds.feedback")
    if store is not None:
        store(service_id, items, received=dt.datetime.now(dt.UTC), client_iss=getattr(g, "client_iss", None))
    return jsonify({"accepted": len(items)})


@bp.get("/health")
def health():
    pack = current_app.extensions["cds.pack"]
    body = {"status": "ok",
            "rulePack": {"id": pack.id, "version": pack.version, "contentHash": pack.content_hash}}
    for name, check in current_app.extensions.get("cds.health", {}).items():
        part = check()  # {"ok": bool, ...}
        if not part.pop("ok", True):
            body["status"] = "degraded"
        body[name] = part
    return jsonify(body)


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
