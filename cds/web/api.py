"""HTTP endpoints of the CDS Hooks service: discovery, the hook services, feedback, health."""

from __future__ import annotations

import datetime as dt
import logging
import uuid

from flask import Blueprint, Flask, current_app, g, jsonify, request

from cds.errors import TokenReplayed, UnknownService
from cds.hooks.envelope import check_service_id, parse_feedback
from cds.hooks.services import discovery_document, hook_of
from cds.web import logs
from cds.web.guard import call_claim, public_bases, read_body
from cds.web.jsonbody import dumps, parse_json

log = logging.getLogger("cds.auth")

bp = Blueprint("cds_hooks", __name__)


def _body():
    limit = current_app.config["MAX_BODY_BYTES"]
    return parse_json(read_body(limit), max_bytes=limit, max_depth=current_app.config["MAX_JSON_DEPTH"])


@bp.get("/cds-services")
def discovery():
    return jsonify(discovery_document(current_app.extensions["cds.pack"]))


@bp.post("/cds-services/<service_id>")
def call_service(service_id: str):
    check_service_id(service_id)  # an over-long id is refused before it is looked up or recorded
    service = current_app.extensions["cds.service"]
    now = current_app.config.get("NOW")  # tests may pin evaluation time
    body = _body()
    record_id = str(uuid.uuid4())  # the key of the call's audit record, known before it is written
    logs.note(hookInstance=logs.hook_instance_of(body),
              auditRecord=record_id if service.audit is not None else None)
    try:
        response = service.call(service_id, body, now=now() if callable(now) else now,
                                client_iss=getattr(g, "client_iss", None),
                                base_url=public_bases(current_app.config)[0], claim=call_claim(),
                                record_id=record_id)
    except TokenReplayed as exc:  # found when the record was stored: no record, a bare 401
        logs.note(auditRecord=None)
        log.warning("refused POST %s: %s", request.path, exc.message)
        raise
    g.cds_cards = response["cards"]  # counted by the metrics, which need not parse the body again
    return current_app.response_class(dumps(response), mimetype="application/json")


@bp.post("/cds-services/<service_id>/feedback")
def feedback(service_id: str):
    check_service_id(service_id)
    if hook_of(service_id) is None:
        raise UnknownService(f"no CDS service with id {service_id!r}", field="service")
    items = parse_feedback(_body())
    store = current_app.extensions.get("cds.feedback")
    if store is not None:
        issued = store(service_id, items, received=dt.datetime.now(dt.UTC),
                       client_iss=getattr(g, "client_iss", None))
        logs.note(**logs.issuing_calls(issued))
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
