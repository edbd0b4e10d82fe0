"""The Flask application factory: settings, rule pack, evaluator, then each feature registers itself."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from cds import settings
from cds.call import fhir_client
from cds.call.service import HookService
from cds.call.suppression import Policy, Suppression
from cds.decide.derived import DerivedCache
from cds.decide.evaluate import Evaluator
from cds.errors import CdsError, operation_outcome
from cds.fhir import cache as fhir_cache
from cds.fhir import parse as fhir_parse
from cds.ledger.history import CardHistory
from cds.ledger.port import Ledger
from cds.rules import pack as rulepack
from cds.web import logs

log = logging.getLogger("cds")


def create_app(config: Mapping[str, Any] | None = None, *, audit_sink: Ledger | None = None) -> Flask:
    """Build the service. ``config`` overrides settings by name (e.g. ``{"RULES_DIR": ...}``).

    Each hook call is recorded to the audit store (``CDS_AUDIT``), or to ``audit_sink`` when one is given
    (tests that read what a call recorded; the auditor pages, if on, still serve the store)."""
    app = Flask("cds")  # the package: its templates/ folder
    values = settings.load(config)
    app.config.update(values)
    app.config["MAX_CONTENT_LENGTH"] = None  # the body limit is ours, answered with an OperationOutcome
    logs.configure(values["LOG_LEVEL"], values["LOG_FORMAT"])

    pack = rulepack.load(values["RULES_DIR"] or None, values["SITE_CONFIG"] or None)
    fhir_parse.warm_up()
    fhir_parse.OUTGOING_CACHE_ENTRIES = values["SUGGESTION_CACHE_SIZE"]  # per process, like the caches below
    cache_bytes = values["CACHE_MAX_BYTES"]
    fhir_parse.OUTGOING_CACHE_BYTES = fhir_cache.share(cache_bytes, "suggestions")
    fhir_parse.ELEMENT_CACHE_BYTES = fhir_cache.share(cache_bytes, "elements")
    evaluator = Evaluator(pack)
    fetch = fhir_client.FhirClient(fhir_client.ClientSettings.from_settings(values))
    store, explain_link = None, None
    if values["AUDIT"]:  # the audit store first: the service records to it from its first call
        from cds.clinician import card_linker
        from cds.ledger import open_store

        store, explain_link = open_store(values, pack), card_linker(values)
    app.extensions["cds.pack"] = pack
    sink = audit_sink if audit_sink is not None else store
    history = sink if isinstance(sink, CardHistory) else None  # what the ledger read side can tell
    app.extensions["cds.evaluator"] = evaluator
    app.extensions["cds.service"] = HookService(
        evaluator,
        source_label=values["SOURCE_LABEL"],
        max_entries=values["MAX_BUNDLE_ENTRIES"],
        fetch=fetch,
        audit=sink,
        model_cache=fhir_parse.ModelCache(values["MODEL_CACHE_SIZE"],
                                          fhir_cache.share(cache_bytes, "models")),
        derived_cache=DerivedCache(values["FACTS_CACHE_SIZE"], fhir_cache.share(cache_bytes, "facts")),
        explain_link=explain_link,
        budget_seconds=values["CALL_BUDGET_SECONDS"],
        max_resources=values["CALL_MAX_RESOURCES"],
        max_fhir_requests=values["CALL_MAX_FHIR_REQUESTS"],
        suppression=Suppression(pack, Policy.from_settings(values), history),
    )

    from cds.web import api, apidocs, metrics, openapi
    from cds.web import guard as http_guard

    logs.init_app(app)
    api.init_app(app)
    http_guard.init_app(app)
    if store is not None and audit_sink is None:
        http_guard.claim_with_records(app, store)
    openapi.init_app(app)
    apidocs.init_app(app)
    metrics.init_app(app)
    if store is not None:
        from cds import clinician, review

        review.init_app(app, store)
        clinician.init_app(app)
    _register_error_handlers(app)
    from cds.review.cli import audit as audit_commands

    app.cli.add_command(audit_commands)  # flask --app cds.web.app audit list|show|verify|...
    return app


def _register_error_handlers(app: Flask) -> None:
    @app.errorhandler(CdsError)
    def cds_error(exc: CdsError):
        if exc.status == 401:
            return "", 401, {"WWW-Authenticate": "Bearer"}
        if exc.status >= 500:
            log.error("request failed: %s", exc.message)
        return jsonify(exc.to_operation_outcome()), exc.status

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        body = operation_outcome(
            exc.description or exc.name, code="not-found" if exc.code == 404 else "processing"
        )
        return jsonify(body), exc.code or 500

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        log.exception("unexpected error")
        return jsonify(operation_outcome("internal error; the request was not processed", severity="fatal",
                                         code="exception")), 500
