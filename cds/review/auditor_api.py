"""The auditors' JSON API under ``/audit/api``: records (filtered, paged), one record, rule statistics.

Every request must carry an auditor credential (``auth.py``); without one, or with a wrong one, the answer
is a bare 401 with ``WWW-Authenticate``.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, g, jsonify, request

from cds.errors import NotFound, RequestError
from cds.review import queries, quiet
from cds.review.auth import REALM, authenticate

bp = Blueprint("cds_audit_api", __name__, url_prefix="/audit/api")


def require_auditor() -> Response | None:
    """``before_request`` for every auditor blueprint."""
    name = authenticate(request.headers.get("Authorization"), current_app.extensions["cds.auditors"])
    if name is None:
        return Response("", 401, {"WWW-Authenticate": REALM, "Cache-Control": "no-store"})
    g.auditor = name
    return None


bp.before_request(require_auditor)


#: the query parameters of a record search: anything else is a 400 naming it, never "every record"
FILTERS = ("since", "until", "service", "rule", "indicator", "outcome", "patientKey", "patient_key",
           "hookInstance")
PAGING = ("limit", "offset")
HEX = frozenset("0123456789abcdef")


def _time(args: Any, name: str):
    parse = queries.parse_until if name == "until" else queries.parse_time
    try:
        return parse(args.get(name))
    except ValueError as exc:
        raise RequestError(f"{name} must be an ISO date or date-time: {exc}", field=name) from exc


def _patient_key(args: Any) -> str | None:
    raw = (args.get("patientKey") or args.get("patient_key") or "").strip().lower()
    raw = raw.removeprefix("patient/").removeprefix("pk-")
    if raw and (len(raw) > 64 or not set(raw) <= HEX):
        raise RequestError("patientKey must be the patient key or its first hex digits (as shown)",
                           field="patientKey")
    return raw or None


def period_from(args: Any) -> tuple[Any, Any]:
    """The ``from`` (inclusive) and ``to`` (exclusive; a date means the whole day) of a rule's outcome
    statistics."""
    period = {"from": "since", "to": "until"}
    parsed = []
    for name, kind in period.items():
        parse = queries.parse_until if kind == "until" else queries.parse_time
        try:
            parsed.append(parse(args.get(name)))
        except ValueError as exc:
            raise RequestError(f"{name} must be an ISO date or date-time: {exc}", field=name) from exc
    return parsed[0], parsed[1]


def filters_from(args: Any) -> queries.Filters:
    unknown = sorted(set(args) - set(FILTERS) - set(PAGING))
    if unknown:
        raise RequestError(
            f"unknown filter{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}: the filters are "
            f"{', '.join(f for f in FILTERS if f != 'patient_key')} (and limit, offset)",
            field=unknown[0],
        )
    return queries.Filters(
        since=_time(args, "since"),
        until=_time(args, "until"),
        service=args.get("service") or None,
        rule=args.get("rule") or None,
        indicator=args.get("indicator") or None,
        outcome=args.get("outcome") or None,
        patient_key=_patient_key(args),
        hook_instance=(args.get("hookInstance") or "").strip() or None,
    )


def page_links(args: Any, page: dict[str, Any], endpoint: str) -> dict[str, str | None]:
    """The next (older) and previous (newer) pages of a search, as URLs with the same filters."""
    from flask import url_for

    kept = {k: v for k, v in args.items() if k not in ("offset", "limit") and v}
    limit, offset, total = page["limit"], page["offset"], page["total"]
    older, newer = offset + limit < total, offset > 0
    return {
        "next": url_for(endpoint, **kept, limit=limit, offset=offset + limit) if older else None,
        "prev": url_for(endpoint, **kept, limit=limit, offset=max(0, offset - limit)) if newer else None,
    }


def known_rule(rule_id: str, stats: dict[str, Any]) -> bool:
    """A rule of the loaded pack, or one the trail holds (retired or renamed since)."""
    try:
        current_app.extensions["cds.pack"].rule(rule_id)
        return True
    except KeyError:
        return bool(stats["fired"] or stats["cardsShown"])


def paging(args: Any) -> tuple[int, int]:
    try:
        limit, offset = int(args.get("limit", 50)), int(args.get("offset", 0))
    except ValueError as exc:
        raise RequestError("limit and offset must be integers", field="limit") from exc
    if not 0 <= offset <= queries.MAX_INT64:
        raise RequestError(f"offset must be from 0 to {queries.MAX_INT64}", field="offset")
    return limit, offset


def _engine():
    return current_app.extensions["cds.audit"].engine


@bp.get("/records")
def records():
    limit, offset = paging(request.args)
    page = queries.list_records(_engine(), filters_from(request.args), limit=limit, offset=offset)
    page["returned"] = len(page["records"])
    page.update(page_links(request.args, page, ".records"))
    return jsonify(page)


@bp.get("/records/<key>")
def record(key: str):
    found = queries.get_record(_engine(), key)
    if found is None:
        raise NotFound(f"no audit record {key!r}", field="id")
    return jsonify(found)


@bp.get("/rules")
def rules():
    pack = current_app.extensions["cds.pack"]
    return jsonify({"rules": queries.rule_stats(_engine(), [r.id for r in pack.rules])})


@bp.get("/rules/<rule_id>")
def rule(rule_id: str):
    stats = queries.rule_stats(_engine(), [rule_id])[0]
    if not known_rule(rule_id, stats):
        raise NotFound(f"no rule {rule_id!r}: not in the loaded rule pack, and never in the audit trail",
                       field="rule")
    since, until = period_from(request.args)
    return jsonify({**stats, "outcomes": quiet.outcome_stats(_engine(), rule_id, since, until)})


@bp.get("/quarantine")
def quarantined():
    from cds.ledger import quarantine

    limit, offset = paging(request.args)
    limit = max(1, min(limit, queries.MAX_PAGE))
    return jsonify({"total": quarantine.count(_engine()), "limit": limit, "offset": offset,
                    "entries": quarantine.entries(_engine(), limit=limit, offset=offset)})


@bp.get("/verify")
def verify():
    from cds.review.verify import verify_all

    report = verify_all(_engine())
    broken = report.first_broken
    return jsonify(
        {
            "checked": report.records,
            "feedbackChecked": report.feedback,
            "quarantined": report.quarantined,
            "chains": len(report.chains),
            "checkpoints": report.checkpoints,
            "ok": report.ok,
            "head": report.head if report.ok else None,
            "problems": report.problems,
            "firstBroken": None
            if broken is None
            else {"seq": broken.seq, "id": broken.id, "reason": broken.reason},
        }
    )
