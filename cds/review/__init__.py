"""The audit's read side: what an auditor asks of the ledger, by API, web pages and CLI.

    queries.py          lists, filters, one record, rule statistics
    verify.py           every audit table checked against the chains; the head to keep elsewhere
    explain.py          "why this card": facts -> derived facts -> card                       pure
    rerun.py            the stored facts of past calls run again under another rule pack
    auth.py             auditor credentials (AUDITOR_TOKENS)
    auditor_api.py      /audit/api/... (JSON)    pages.py   /audit/... (HTML, templates/audit)
    auditor_openapi.py  the auditor API's part of the OpenAPI document (the service's: cds/web/openapi.py)
    audit_metrics.py    the audit's figures on /metrics (the service's own: cds/web/metrics.py)
    cli.py              cds audit ...

See docs/audit.md.
"""

from __future__ import annotations

import logging

log = logging.getLogger("cds.audit")


def init_app(app, store) -> None:
    """Serve the audit trail whose ``store`` the hook service records to: the feedback sink, /health, the
    auditor pages and API. ``create_app`` opens the store first and gives it to the call layer it builds."""
    from cds.review import auditor_api, pages
    from cds.review.audit_metrics import AuditCollector
    from cds.review.auth import parse_tokens

    values = app.config
    app.extensions["cds.audit"] = store
    app.extensions["cds.feedback"] = store.store_feedback
    app.extensions.setdefault("cds.health", {})["audit"] = store.health
    app.extensions.setdefault("cds.metrics.collectors", []).append(AuditCollector(store))
    app.extensions["cds.auditors"] = parse_tokens(values.get("AUDITOR_TOKENS") or ())
    if not app.extensions["cds.auditors"]:
        log.warning("CDS_AUDITOR_TOKENS is empty: the auditor pages and API answer 401 to everyone")
    app.register_blueprint(auditor_api.bp)
    app.register_blueprint(pages.bp)
    if store.spool.pending():
        store.kick()
    try:
        store.reap_interrupted()  # calls of a process that died before this one started
    except Exception:  # noqa: BLE001 - start anyway; /health tries again
        log.exception("interrupted calls could not be recorded at start-up")
