"""The charts of the clinician's "Why this card?" page: the patient's results over time, as SVG.

Drawn server-side with matplotlib's SVG backend (imported on first use, so a service that never draws a
chart never loads it): it draws dated series, shaded bands (the WHO T-score bands) and reference lines (the
estradiol and vitamin D cut-offs) directly, writes standalone SVG without a display, and needs no
JavaScript in the browser. Every number on a band or a line is the threshold value in force (the rule pack
with the site's overrides), labelled with its name.

The input is the record's ``series`` (``cds/decide/facts.py``): values, units, comparators, dates, sites;
no identifier. The SVG is served as its own document (an <img> on the page), so the page keeps a strict
Content-Security-Policy.

Text from FHIR data (a site's ``bodySite.text``, a unit) is drawn as plain text: mathematics markup
(``$...$``) is switched off for every text of the figure. The cost of one chart is bounded whatever the
record holds: at most ``MAX_SERIES`` series a panel (the most recent ones) and ``MAX_POINTS`` points a
series (thinned evenly, the first and the latest always kept); each panel's ``notes`` say what was left out,
and the page says it beside the chart. The time axis covers the results drawn (a single result: a month
either side), never years beyond them. ``SvgCache`` keeps rendered charts, bounded in bytes.
"""

from __future__ import annotations

import datetime as dt
import io
import threading
from collections import OrderedDict, defaultdict
from collections.abc import Callable
from typing import Any

_LOCK = threading.Lock()  # pyplot's state is global: one figure at a time

WHO_COLOURS = ("#e8f5e9", "#fff8e1", "#ffebee")  # normal, osteopenia, osteoporosis
LINE_COLOURS = ("#1565c0", "#6a1b9a", "#2e7d32", "#ef6c00", "#00838f", "#4e342e")
MAX_SERIES = 6  # series drawn a panel: the ones with the most recent results
MAX_POINTS = 120  # points drawn a series: thinned evenly beyond this
LABELLED_POINTS = 24  # a series with more points than this labels its latest value only
SINGLE_POINT_SPAN = dt.timedelta(days=30)  # the time axis either side of a single date


def topics_of(explanation: dict[str, Any]) -> list[str]:
    """What a card is about: ``"dxa"`` and/or lab analytes, from the facts its rule fired on."""
    found: list[str] = []

    def visit(node: dict[str, Any]) -> None:
        fact = node.get("fact") or {}
        topic = "dxa" if fact.get("t") in ("dxa", "dxa_change") else fact.get("analyte")
        if fact.get("t") in ("dxa", "dxa_change", "lab") and topic and topic not in found:
            found.append(topic)
        for child in ((node.get("derivedBy") or {}).get("from") or []) + (node.get("builtFrom") or []):
            visit(child if "fact" in child else {"fact": child})

    for firing in explanation.get("firings", []):
        for node in firing:
            visit(node)
    if not found:  # a card about a missing result: chart what there is of it
        rule_id = (explanation.get("rule") or {}).get("id") or ""
        for word, topic in (("estradiol", "estradiol"), ("vitamin-d", "vitamin_d"), ("dxa", "dxa"),
                            ("bone-density", "dxa")):
            if word in rule_id and topic not in found:
                found.append(topic)
    return found


def _day(value: str) -> dt.date:
    return dt.date.fromisoformat(value[:10])


def _marker(point: dict[str, Any]) -> str:
    return {"<": "v", "<=": "v", ">": "^", ">=": "^"}.get(point.get("comparator") or "", "o")


def thinned(points: list[dict[str, Any]], limit: int = MAX_POINTS) -> list[dict[str, Any]]:
    """At most ``limit`` of ``points`` (oldest first), evenly spread, the first and the latest always kept."""
    if len(points) <= limit:
        return points
    if limit < 2:
        return points[-limit:] if limit else []
    step = (len(points) - 1) / (limit - 1)
    return [points[round(i * step)] for i in range(limit)]


Groups = dict[str, list[dict[str, Any]]]


def _bounded(groups: Groups, what: str) -> tuple[Groups, list[str]]:
    """The groups to draw (at most ``MAX_SERIES``, each at most ``MAX_POINTS`` points), and what was left
    out, in words."""
    notes: list[str] = []
    ordered = sorted(groups.items(), key=lambda kv: max((p["date"] for p in kv[1]), default=""), reverse=True)
    if len(ordered) > MAX_SERIES:
        notes.append(f"{what}: the {MAX_SERIES} series with the most recent results are drawn, "
                     f"of {len(ordered)}")
    out: dict[str, list[dict[str, Any]]] = {}
    for label, points in ordered[:MAX_SERIES]:
        points = sorted(points, key=lambda p: p["date"])
        kept = thinned(points)
        if len(kept) < len(points):
            notes.append(f"{label}: {len(kept)} of {len(points)} results drawn (evenly spread, the first and "
                         "the latest always)")
        out[label] = kept
    return out, notes


def _plot_series(ax, groups: dict[str, list[dict[str, Any]]], gid_prefix: str) -> None:
    for index, (label, points) in enumerate(sorted(groups.items())):
        colour = LINE_COLOURS[index % len(LINE_COLOURS)]
        xs = [_day(p["date"]) for p in points]
        ys = [p["value"] for p in points]
        (line,) = ax.plot(xs, ys, "-", color=colour, linewidth=1.5, label=label)
        line.set_gid(f"{gid_prefix}-line-{index}")
        for i, (p, x, y) in enumerate(zip(points, xs, ys, strict=True)):
            (dot,) = ax.plot([x], [y], _marker(p), color=colour, markersize=7)
            dot.set_gid("data-point")
            if len(points) <= LABELLED_POINTS or i == len(points) - 1:
                shown = f"{p.get('comparator') or ''}{p['value']:g}"
                ax.annotate(shown, (x, y), textcoords="offset points", xytext=(0, 8), ha="center", fontsize=8)


def time_axis(dates: list[dt.date]) -> tuple[dt.date, dt.date]:
    """The time axis for ``dates``: their span with a small margin; a month either side of a single date."""
    first, last = min(dates), max(dates)
    margin = max((last - first) * 0.06, dt.timedelta(days=3)) if last > first else SINGLE_POINT_SPAN
    return first - margin, last + margin


def _bands(ax, thresholds: dict[str, float], ys: list[float]) -> None:
    osteopenia = thresholds.get("t_score_osteopenia", -1.0)
    osteoporosis = thresholds.get("t_score_osteoporosis", -2.5)
    low, high = min(ys + [osteoporosis - 1.0]), max(ys + [osteopenia + 1.5])
    ax.axhspan(osteopenia, high + 0.5, color=WHO_COLOURS[0], zorder=0)
    ax.axhspan(osteoporosis, osteopenia, color=WHO_COLOURS[1], zorder=0)
    ax.axhspan(low - 0.5, osteoporosis, color=WHO_COLOURS[2], zorder=0)
    ax.set_ylim(low - 0.5, high + 0.5)
    for y, text in ((osteopenia, f"osteopenia below {osteopenia:g}"),
                    (osteoporosis, f"osteoporosis at or below {osteoporosis:g}")):
        ax.axhline(y, color="#9e9e9e", linewidth=0.8, linestyle="--")
        ax.annotate(text, (0.99, y), xycoords=("axes fraction", "data"), xytext=(0, -11), ha="right",
                    textcoords="offset points", fontsize=8, color="#555555")


def _lines(ax, lines: list[tuple[float, str, str]]) -> None:
    for y, text, colour in lines:
        ax.axhline(y, color=colour, linewidth=1, linestyle="--")
        ax.annotate(text, (0.01, y), xycoords=("axes fraction", "data"), xytext=(0, 3),
                    textcoords="offset points", fontsize=8, color=colour)


def panels(series: list[dict[str, Any]], topics: list[str], thresholds: dict[str, float],
           titles: dict[str, str]) -> list[dict[str, Any]]:
    """The panels to draw: each a title, unit, point groups and its bands or lines (pure, testable)."""
    out: list[dict[str, Any]] = []
    if "dxa" in topics:
        for measure, title, unit in (("t_score", "DXA T-score by site", "T-score"),
                                     ("bmd", "DXA bone mineral density by site", "g/cm²")):
            groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
            for p in series:
                if p.get("kind") == "dxa" and p.get("measure") == measure:
                    groups[p.get("site_title") or p.get("site") or "?"].append(p)
            if groups or measure == "t_score":
                drawn, notes = _bounded(dict(groups), title)
                out.append({"title": title, "unit": unit, "groups": drawn, "notes": notes,
                            "who": measure == "t_score", "lines": [], "thresholds": thresholds})
    for analyte in [t for t in topics if t != "dxa"]:
        points = [p for p in series if p.get("kind") == "lab" and p.get("analyte") == analyte]
        unit = points[0]["unit"] if points else ""
        lines: list[tuple[float, str, str]] = []
        if analyte == "estradiol":
            for name, label, colour in (("estradiol_low_pg_ml", "low", "#ef6c00"),
                                        ("estradiol_severe_pg_ml", "severely low", "#c62828")):
                if name in thresholds:
                    lines.append((thresholds[name], f"{label} below {thresholds[name]:g} pg/mL", colour))
        elif analyte == "vitamin_d":
            for name, label, colour in (("vitamin_d_insufficient_ng_ml", "insufficient", "#ef6c00"),
                                        ("vitamin_d_deficient_ng_ml", "deficient", "#c62828")):
                if name in thresholds:
                    lines.append((thresholds[name], f"{label} below {thresholds[name]:g} ng/mL", colour))
        title = titles.get(analyte, analyte)
        drawn, notes = _bounded({title: points} if points else {}, title)
        out.append({"title": title, "unit": unit, "groups": drawn, "notes": notes, "who": False,
                    "lines": lines})
    return out


def render_svg(chart_panels: list[dict[str, Any]]) -> str:
    """The panels as one standalone SVG document."""
    with _LOCK:
        import matplotlib

        matplotlib.use("svg", force=True)
        import matplotlib.dates as mdates
        import matplotlib.pyplot as plt

        # stable ids (the same data, the same SVG); FHIR text drawn as written, never as mathematics
        with matplotlib.rc_context({"svg.hashsalt": "why-this-card", "text.parse_math": False}):
            return _draw(plt, mdates, chart_panels)


def _draw(plt: Any, mdates: Any, chart_panels: list[dict[str, Any]]) -> str:
    """The panels drawn on one figure (under ``_LOCK``, in ``render_svg``'s settings)."""
    count = max(1, len(chart_panels))
    fig, axes = plt.subplots(count, 1, figsize=(8, 3.2 * count), squeeze=False)
    try:
        for ax, panel in zip(axes[:, 0], chart_panels or [{"title": "", "groups": {}}], strict=False):
            ys = [p["value"] for points in panel["groups"].values() for p in points]
            if panel.get("who"):
                _bands(ax, panel.get("thresholds", {}), ys)
            _lines(ax, panel.get("lines", []))
            _plot_series(ax, panel["groups"], "series")
            ax.set_title(panel["title"], fontsize=11, loc="left")
            ax.set_ylabel(panel.get("unit", ""))
            if not ys:
                ax.text(0.5, 0.5, "no results in this call", transform=ax.transAxes, ha="center",
                        va="center", color="#555555")
                ax.set_xticks([])
            else:
                ax.xaxis.set_major_locator(mdates.AutoDateLocator(minticks=3, maxticks=8))
                ax.xaxis.set_major_formatter(mdates.DateFormatter("%Y-%m-%d"))
                ax.tick_params(axis="x", labelrotation=30, labelsize=8)
                ax.set_xlim(*time_axis([_day(p["date"]) for pts in panel["groups"].values() for p in pts]))
                if panel["groups"]:
                    ax.legend(loc="lower left", fontsize=8, framealpha=0.9)
            if panel.get("lines"):
                ax.set_ylim(0, max(ys + [y for y, _, _ in panel["lines"]]) * 1.25)
            ax.grid(True, axis="y", color="#e0e0e0", linewidth=0.5)
        fig.tight_layout()
        out = io.StringIO()
        fig.savefig(out, format="svg", metadata={"Date": None})
        return out.getvalue()
    finally:
        plt.close(fig)


class SvgCache:
    """Rendered charts by key (a card and what the chart depends on), least recently used first out, bounded
    in bytes (``max_bytes``) as well as entries; one render per key at a time (``get``), so a burst of asks
    for one chart draws it once."""

    def __init__(self, max_bytes: int, max_entries: int = 256):
        self.max_bytes, self.max_entries = max_bytes, max_entries
        self._items: OrderedDict[str, str] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._rendering: dict[str, threading.Lock] = {}
        self.renders = 0

    def get(self, key: str, render: Callable[[], str]) -> str:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            one = self._rendering.setdefault(key, threading.Lock())
        with one:
            with self._lock:
                if key in self._items:
                    return self._items[key]
            try:
                svg = render()
            finally:
                with self._lock:
                    self._rendering.pop(key, None)
            with self._lock:
                self.renders += 1
                self._put(key, svg)
            return svg

    def _put(self, key: str, svg: str) -> None:
        size = len(svg.encode())
        if size > self.max_bytes:
            return
        self._items[key] = svg
        self._bytes += size
        while self._bytes > self.max_bytes or len(self._items) > self.max_entries:
            _, dropped = self._items.popitem(last=False)
            self._bytes -= len(dropped.encode())
