"""Prometheus metrics, served at ``GET /metrics`` (turn off with ``CDS_METRICS_ENABLED=false``).

    cds_http_requests_total{endpoint, method, status}     every request, by route template
    cds_http_request_duration_seconds{endpoint}           latency histogram
    cds_cards_total{rule, indicator}                      cards answered, by rule id and indicator
    cds_errors_total{endpoint, kind}                      4xx ("client") and 5xx ("server") answers
    cds_audit_*                                           the audit's figures (cds/review/audit_metrics.py)

``endpoint`` is the Flask route template (``/cds-services/<service_id>``), or ``(unmatched)`` for a URL
no route serves; ``method`` is one of the HTTP methods in ``METHODS``, any other (made up) method is
``other``; ``status`` is a status code the service itself answered. So a scanner cannot blow up the label
sets, whatever paths and methods it sends.

``CDS_METRICS_TOKEN`` set: ``/metrics`` answers only a request with ``Authorization: Bearer <token>`` (a
bare 401 otherwise), as Prometheus sends it with ``authorization: {credentials: ...}`` in its scrape config.

Under ``cds serve --prod`` each worker is a process: ``PROMETHEUS_MULTIPROC_DIR`` is set (a fresh folder,
unless already set) before the workers start, every worker writes its values there, and ``/metrics`` adds
up all workers (``cds/web/supervisor.py`` marks a dead worker's files). Run any other multi-process server
the same way, or the numbers are those of whichever worker answers.
"""

from __future__ import annotations

import hmac
import os
import time

from flask import Blueprint, Flask, Response, abort, current_app, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)

REQUESTS = Counter("cds_http_requests", "HTTP requests answered", ["endpoint", "method", "status"])
LATENCY = Histogram(
    "cds_http_request_duration_seconds",
    "Time to answer an HTTP request",
    ["endpoint"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
CARDS = Counter("cds_cards", "Cards answered", ["rule", "indicator"])
ERRORS = Counter("cds_errors", "Error answers (4xx client, 5xx server)", ["endpoint", "kind"])

#: the methods counted by name; anything else a client sends is counted as "other"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

bp = Blueprint("metrics", __name__)
CARD_ENDPOINT = "cds_hooks.call_service"


def _endpoint() -> str:
    rule = request.url_rule
    return rule.rule if rule is not None else "(unmatched)"


def _method() -> str:
    return request.method if request.method in METHODS else "other"


def _before() -> None:
    g.metrics_started = time.perf_counter()


def _after(response: Response) -> Response:
    endpoint = _endpoint()
    started = g.pop("metrics_started", None)
    if started is not None:
        LATENCY.labels(endpoint).observe(time.perf_counter() - started)
    REQUESTS.labels(endpoint, _method(), str(response.status_code)).inc()
    if response.status_code >= 400:
        ERRORS.labels(endpoint, "server" if response.status_code >= 500 else "client").inc()
    if request.endpoint == CARD_ENDPOINT and response.status_code == 200:
        for card in g.pop("cds_cards", None) or []:
            if isinstance(card, dict):
                topic = (card.get("source") or {}).get("topic") or {}
                CARDS.labels(str(topic.get("code") or "(none)"), str(card.get("indicator"))).inc()
    return response


def exposition() -> bytes:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        text = generate_latest(registry)
    else:
        text = generate_latest()
    # figures read when scraped (e.g. the audit's), registered by a feature as "cds.metrics.collectors"
    collectors = current_app.extensions.get("cds.metrics.collectors") or []
    if collectors:
        extra = CollectorRegistry()
        for collector in collectors:
            extra.register(collector)
        text += generate_latest(extra)
    return text


@bp.get("/metrics")
def metrics():
    if not current_app.config.get("METRICS_ENABLED", True):
        abort(404, "metrics are turned off")
    token = current_app.config.get("METRICS_TOKEN") or ""
    if token and not scraper_allowed(request.headers.get("Authorization", ""), token):
        return Response("", 401, {"WWW-Authenticate": 'Bearer realm="metrics"'})
    return Response(exposition(), content_type=CONTENT_TYPE_LATEST)


def scraper_allowed(authorization: str, token: str) -> bool:
    """Whether an ``Authorization`` header carries the metrics token (compared in constant time)."""
    scheme, _, given = authorization.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


def init_app(app: Flask) -> None:
    app.before_request(_before)
    app.after_request(_after)
    app.register_blueprint(bp)


def mark_process_dead(pid: int) -> None:
    """When a worker process has exited: drop its live values (its counters stay counted)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(pid)
