"""The audit trail: every hook call recorded, explained, hash-chained, and never lost.

    record.py   CallRecord -> record content (patient as keyed hash, facts kept for replay)   pure
    chain.py    canonical JSON, link hashes, verification                                     pure
    explain.py  "why this card": facts -> derived facts -> card                               pure
    schema.py   the tables (on cds.db.metadata); migrations in cds/migrations
    spool.py    the durable local spool used while the database is unavailable
    store.py    AuditStore: the AuditSink and feedback sink; appends, spools, drains
    ledger.py   appending to a chained table; poison (data) errors told from outages
    feedback.py feedback tied to its card, service and client; the feedback chain's columns
    quarantine.py  entries the database refused as data, set aside (chained)
    inflight.py started-call markers: calls of a process that died are recorded "interrupted"
    queries.py  lists, filters, one record, rule statistics
    verify.py   every audit table checked against the chains; the head to keep elsewhere
    metrics.py  the audit's figures on /metrics
    auth.py     auditor credentials (AUDITOR_TOKENS)
    keys.py     the patient-key and link secrets: from a setting or a file (made atomically in development)
    clinician.py  /why/<link>: the clinician's "why this card" (no login; a signed card link)   chart.py
    api.py      /audit/api/... (JSON)          web.py   /audit/... (HTML, templates/audit)
    cli.py      cds audit ...                  replay.py  stored facts under another rule pack

See docs/audit.md.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.exc import OperationalError

from cds.audit.keys import link_secret, patient_secret
from cds.db import engine_for, ensure_schema
from cds.rules.pack import RulePack

log = logging.getLogger("cds.audit")


def database_url(values: dict[str, Any]) -> str:
    url = str(values["DATABASE_URL"])
    if url.startswith("postgresql") and "connect_timeout" not in url:
        url += ("&" if "?" in url else "?") + "connect_timeout=5"
    return url


def open_store(values: dict[str, Any], pack: RulePack, *, migrate: bool | None = None):
    from cds.audit.spool import Spool
    from cds.audit.store import AuditStore

    engine = engine_for(database_url(values))
    store = AuditStore(
        engine,
        pack,
        patient_secret(values),
        Spool(values["AUDIT_SPOOL_DIR"]),
        retry_seconds=values["AUDIT_SPOOL_RETRY_SECONDS"],
        own_chains=values["AUDIT_OWN_CHAINS"],
        checkpoint_seconds=values["AUDIT_CHECKPOINT_SECONDS"],
    )
    if values["AUDIT_MIGRATE_ON_START"] if migrate is None else migrate:
        try:
            ensure_schema(engine)
        except OperationalError as exc:
            # Start anyway: records go to the spool, and the schema is brought up to date before the
            # spool is drained into the database.
            log.error(
                "audit database unavailable at start-up (%s); records will be spooled",
                str(exc.orig).splitlines()[0] if exc.orig else exc,
            )
            store.migrate_pending = True
    return store


def card_linker(values: dict[str, Any]):
    """The service's explanation-link builder: ``(base_url, card_uuid) -> url`` of the clinician's "Why this
    card?" page, signed for that card with the link secret and expiring after ``WHY_LINK_HOURS``."""
    from cds.auth import links

    secret = link_secret(values)
    lifetime = values["WHY_LINK_HOURS"] * 3600  # greater than 0: checked with the settings

    def card_link(base_url: str, card_uuid: str) -> str:
        return f"{base_url}/why/{links.sign(secret, card_uuid, lifetime)}"

    return card_link


def init_app(app, store) -> None:
    """Serve the audit trail whose ``store`` the hook service records to: the feedback sink, /health, the
    auditor pages and API, the clinicians' "Why this card?" pages. ``create_app`` opens the store first
    and gives it, and ``card_linker``'s link builder, to the service it builds."""
    from cds.audit import api, clinician, web
    from cds.audit.auth import parse_tokens

    values = app.config
    app.extensions["cds.link_secret"] = link_secret(values)
    app.extensions["cds.audit"] = store
    app.extensions["cds.feedback"] = store.store_feedback
    app.extensions.setdefault("cds.health", {})["audit"] = store.health
    from cds.audit.metrics import AuditCollector

    app.extensions.setdefault("cds.metrics.collectors", []).append(AuditCollector(store))
    app.extensions["cds.auditors"] = parse_tokens(values.get("AUDITOR_TOKENS") or ())
    if not app.extensions["cds.auditors"]:
        log.warning("CDS_AUDITOR_TOKENS is empty: the auditor pages and API answer 401 to everyone")
    app.register_blueprint(api.bp)
    app.register_blueprint(web.bp)
    app.register_blueprint(clinician.bp)
    from cds.audit.chart import SvgCache

    app.extensions["cds.chart_cache"] = SvgCache(int(values.get("CHART_CACHE_BYTES", 8_000_000)))
    if store.spool.pending():
        store.kick()
    try:
        store.reap_interrupted()  # calls of a process that died before this one started
    except Exception:  # noqa: BLE001 - start anyway; /health tries again
        log.exception("interrupted calls could not be recorded at start-up")
