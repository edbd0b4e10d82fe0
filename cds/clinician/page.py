"""The clinician's "Why this card?" page: ``/why/<link token>``, opened from the card inside the EHR.

No login: the link itself is the credential (``cds/auth/links.py``), scoped to one card and expiring. The
page shows only that card's decision: the card, the results it rested on as reported, the rule in plain
words with the threshold values in force and its citations, and a chart of the patient's results over time
(``chart.py``, served as ``/why/<token>/chart.svg``, drawn once per card and kept in a cache bounded by
``CHART_CACHE_BYTES``; what the chart leaves out of a long record is said under it). The card's detail is
rendered from its Markdown as the EHR shows it (``markdown.py``: CommonMark, raw HTML off, links only
for safe schemes). It shows no patient identifier, no record id and no hook instance. Every answer is
sent with a strict Content-Security-Policy, ``Cache-Control: no-store`` and ``Referrer-Policy: no-referrer``
(so the link does not leak to the sites of the citations).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, render_template, url_for

from cds.auth.links import LinkRefused, verify
from cds.clinician import chart
from cds.clinician import markdown as card_markdown
from cds.review import explain, queries

bp = Blueprint("cds_why", __name__, url_prefix="/why")

HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'none'; "
    "frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
#: the chart is its own SVG document, shown as an image (where SVG never runs script): its styles are inline
MEASURES = {"t_score": "T-score", "z_score": "Z-score", "bmd": "BMD"}
SVG_CSP = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'self'"


@bp.after_request
def _headers(response: Response) -> Response:
    response.headers.update(HEADERS)
    if response.mimetype == "image/svg+xml":
        response.headers["Content-Security-Policy"] = SVG_CSP
    return response


def _refused(message: str, status: int) -> Response:
    return Response(render_template("clinician/error.html", message=message, status=status), status,
                    mimetype="text/html")


def _explained(token: str) -> tuple[dict[str, Any], dict[str, Any]] | Response:
    try:
        card_uuid = verify(current_app.extensions["cds.link_secret"], token)
    except LinkRefused as exc:
        return _refused(exc.message, exc.status)
    found = queries.get_record(current_app.extensions["cds.audit"].engine, card_uuid)
    pack = current_app.extensions["cds.pack"]
    focus = explain.explain_card(found["record"], card_uuid, pack) if found else None
    if focus is None or found is None:
        return _refused("no decision is recorded for this card (yet): try again in a moment", 404)
    return found["record"], focus


def _thresholds() -> dict[str, float]:
    return {name: spec["value"] for name, spec in current_app.extensions["cds.pack"].thresholds.items()}


def _as_reported(fact: dict[str, Any], point: dict[str, Any]) -> str:
    """A lab value as reported, with its comparator (in ``reported`` already when the facts carry it)."""
    reported = str(fact.get("reported") or fact.get("value"))
    comparator = point.get("comparator") or fact.get("comparator") or ""
    return reported if reported.startswith(comparator) else comparator + reported


def _results(content: dict[str, Any], focus: dict[str, Any]) -> list[dict[str, Any]]:
    """The results the card rested on, as reported: each lab or DXA fact its rule fired on, a row a value."""
    series = content.get("series") or []
    rows: list[dict[str, Any]] = []
    seen: set[tuple] = set()

    def add(row: dict[str, Any]) -> None:
        key = tuple(sorted((k, str(v)) for k, v in row.items()))
        if key not in seen:
            seen.add(key)
            rows.append(row)

    def visit(node: dict[str, Any]) -> None:
        fact = node.get("fact") or {}
        kind = fact.get("t")
        if kind == "lab":
            point: dict[str, Any] = next((p for p in series if p.get("kind") == "lab"
                          and p.get("analyte") == fact.get("analyte") and p.get("date") == fact.get("date")
                          and p.get("value") == fact.get("value")), {})
            title = current_app.extensions["cds.pack"].valuesets.get("labs", {}).get(fact.get("analyte"), {})
            add({"what": title.get("title", fact.get("analyte")), "site": "",
                 "value": _as_reported(fact, point),
                 "date": fact.get("date")})
        elif kind in ("dxa", "dxa_change"):
            dates = [fact.get("date")] if kind == "dxa" else [fact.get("from_date"), fact.get("to_date")]
            for p in series:
                if p.get("kind") == "dxa" and p.get("date") in dates \
                        and p.get("site") == (fact.get("site_key") or fact.get("site")):
                    unit = p.get("unit") if p["measure"] == "bmd" else ""
                    add({"what": "DXA " + MEASURES.get(p["measure"], p["measure"]),
                         "site": p.get("site_title") or p.get("site"),
                         "value": f"{p.get('comparator') or ''}{p['value']:g} {unit or ''}".strip(),
                         "date": p.get("date")})
        for child in ((node.get("derivedBy") or {}).get("from") or []) + (node.get("builtFrom") or []):
            visit(child if "fact" in child else {"fact": child})

    for firing in focus.get("firings", []):
        for node in firing:
            visit(node)
    return sorted(rows, key=lambda r: (r["what"], r["site"] or "", r["date"] or ""))


def _rules_of(focus: dict[str, Any]) -> list[str]:
    """The card's rule, then each rule that derived a fact it rested on: their thresholds are in force."""
    found = [focus["rule"]["id"]]

    def visit(node: dict[str, Any]) -> None:
        derived = node.get("derivedBy") or {}
        rule_id = (derived.get("rule") or {}).get("id")
        if rule_id and rule_id not in found:
            found.append(rule_id)
        for child in derived.get("from") or []:
            visit(child)

    for firing in focus.get("firings", []):
        for node in firing:
            visit(node)
    return found


@bp.get("/style.css")
def style() -> Response:
    return Response(render_template("clinician/style.css"), mimetype="text/css")


@bp.get("/<token>")
def why(token: str):
    found = _explained(token)
    if isinstance(found, Response):
        return found
    content, focus = found
    pack = current_app.extensions["cds.pack"]
    names: list[str] = []
    for rule_id in _rules_of(focus):
        try:
            names += [n for n in pack.rule(rule_id).thresholds if n not in names]
        except KeyError:
            continue
    thresholds = [{"name": n, **pack.thresholds[n]} for n in names if n in pack.thresholds]
    topics = chart.topics_of(focus)
    notes = [n for p in _panels(content, focus) for n in p.get("notes", [])] if topics else []
    return render_template(
        "clinician/why.html",
        card=focus["card"],
        detail_html=card_markdown.to_html(str(focus["card"].get("detail") or "")),
        chart_notes=notes,
        rule=focus["rule"],
        thresholds=thresholds,
        results=_results(content, focus),
        chart_url=url_for(".chart_svg", token=token) if topics else None,
        when=content.get("time", "")[:10],
    )


@bp.get("/<token>/chart.svg")
def chart_svg(token: str):
    found = _explained(token)
    if isinstance(found, Response):
        return found
    content, focus = found
    pack = current_app.extensions["cds.pack"]
    key = f"{focus['card'].get('uuid')}:{pack.content_hash}"  # the card's chart, the thresholds in force
    cache = current_app.extensions["cds.chart_cache"]
    svg = cache.get(key, lambda: chart.render_svg(_panels(content, focus)))
    return Response(svg, mimetype="image/svg+xml")


def _panels(content: dict[str, Any], focus: dict[str, Any]) -> list[dict[str, Any]]:
    labs = current_app.extensions["cds.pack"].valuesets.get("labs", {})
    titles = {k: v.get("title", k) for k, v in labs.items()}
    return chart.panels(content.get("series") or [], chart.topics_of(focus), _thresholds(), titles)
