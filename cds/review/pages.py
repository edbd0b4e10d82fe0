"""Server-rendered pages for auditors under ``/audit``: search records, "why this card", rule statistics.

Same auditor authentication as the JSON API (a browser uses HTTP Basic, ``name:token``). No JavaScript;
every page is sent with a strict Content-Security-Policy and the other security headers.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Response, abort, current_app, render_template, request, url_for
from werkzeug.exceptions import HTTPException

from cds.errors import CdsError
from cds.hooks.services import discovery_document
from cds.review import explain, queries, quiet
from cds.review.auditor_api import filters_from, known_rule, paging, period_from, require_auditor

bp = Blueprint("cds_audit_web", __name__, url_prefix="/audit")
bp.before_request(require_auditor)

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
INDICATORS = ("info", "warning", "critical")
OUTCOMES = ("ok", "400", "401", "404", "412", "413", "500", "interrupted")
PAGE = 25


@bp.after_request
def security_headers(response: Response) -> Response:
    response.headers.update(SECURITY_HEADERS)
    return response


def brief_fact(fact: dict[str, Any]) -> str:
    parts = [
        f"{k}={v if isinstance(v, str) else json.dumps(v)}"
        for k, v in fact.items()
        if k != "t" and v is not None
    ]
    return f"{fact.get('t', '?')}(" + ", ".join(parts) + ")"


def _error_page(status: int, message: str) -> Response:
    body = render_template("audit/error.html", status=status, message=message)
    return Response(body, status, mimetype="text/html")


@bp.errorhandler(CdsError)
def _cds_error(exc: CdsError) -> Response:
    """A bad filter, an unknown record: an HTML page saying so (the JSON API answers OperationOutcome)."""
    return _error_page(exc.status, exc.message)


@bp.errorhandler(HTTPException)
def _http_error(exc: HTTPException) -> Response:
    return _error_page(exc.code or 500, exc.description or exc.name)


def _thresholds_of(rule) -> list[dict[str, Any]]:
    """The thresholds a rule names, with the values in force (the pack with the site's overrides)."""
    values = _pack().thresholds
    return [{"name": n, **values[n]} for n in (rule.thresholds if rule else []) if n in values]


@bp.app_template_filter("fact")
def _fact_filter(fact: dict[str, Any]) -> str:
    return brief_fact(fact)


def _engine():
    return current_app.extensions["cds.audit"].engine


def _pack():
    return current_app.extensions["cds.pack"]


@bp.get("/style.css")
def style():
    css = render_template("audit/style.css")
    return Response(css, mimetype="text/css")


@bp.get("/")
def records():
    filters = filters_from(request.args)
    _, offset = paging(request.args)
    page = queries.list_records(_engine(), filters, limit=PAGE, offset=offset)
    args = {k: v for k, v in request.args.items() if k != "offset" and v}
    nav = {
        "prev": url_for(".records", **args, offset=max(0, offset - PAGE)) if offset > 0 else None,
        "next": url_for(".records", **args, offset=offset + PAGE) if offset + PAGE < page["total"] else None,
    }
    services = [s["id"] for s in discovery_document(_pack())["services"]]
    return render_template(
        "audit/records.html",
        page=page,
        args=request.args,
        nav=nav,
        services=services,
        rules=[r.id for r in _pack().rules],
        indicators=INDICATORS,
        outcomes=OUTCOMES,
    )


@bp.get("/records/<key>")
def record(key: str):
    found = queries.get_record(_engine(), key)
    if found is None:
        abort(404, f"no audit record {key}")
    content = found["record"]
    return render_template(
        "audit/record.html",
        found=found,
        r=content,
        focus=None,
        explanations=explain.explain_all(content, _pack()),
        quiet=quiet.quiet_cards(content),
        pending_orders=quiet.pending_orders_state(content),
    )


@bp.get("/cards/<card_uuid>")
def card(card_uuid: str):
    found = queries.get_record(_engine(), card_uuid)
    if found is None:
        abort(404, f"no audited card {card_uuid}")
    content = found["record"]
    focus = explain.explain_card(content, card_uuid, _pack())
    if focus is None:
        abort(404, f"no audited card {card_uuid}")
    return render_template("audit/record.html", found=found, r=content, focus=focus, explanations=[focus])


@bp.get("/rules/")
def rules():
    stats = queries.rule_stats(_engine(), [r.id for r in _pack().rules])
    titles = {r.id: r for r in _pack().rules}
    thresholds = {r.id: _thresholds_of(r) for r in _pack().rules}
    card_rules = [s for s in stats if titles[s["rule"]].kind != "derived"]
    derived_rules = [s for s in stats if titles[s["rule"]].kind == "derived"]
    return render_template("audit/rules.html", card_rules=card_rules, derived_rules=derived_rules,
                           titles=titles, thresholds=thresholds)


@bp.get("/rules/<rule_id>")
def rule(rule_id: str):
    try:
        info = _pack().rule(rule_id)
    except KeyError:
        info = None
    stats = queries.rule_stats(_engine(), [rule_id], top=10)[0]
    if not known_rule(rule_id, stats):
        abort(404, f"no rule {rule_id!r}: not in the loaded rule pack, and never in the audit trail")
    recent = queries.list_records(_engine(), queries.Filters(rule=rule_id), limit=10)
    since, until = period_from(request.args)  # a bad date: the error page (``_cds_error``)
    outcomes = quiet.outcome_stats(_engine(), rule_id, since, until)
    return render_template("audit/rule.html", rule=info, rule_id=rule_id, stats=stats, recent=recent,
                           thresholds=_thresholds_of(info), outcomes=outcomes, args=request.args)
