"""The charts of the clinician's "Why this card?" page: the patient's results over time, as SVG.

Drawn server-side with matplotlib's SVG backend (imported on first use, so a service that never draws a
chart never loads it): it draws dated series, shaded bands (the WHO T-score bands) and reference lines (the
estradiol and vitamin D cut-offs) directly, writes standalone SVG without a display, and needs no
JavaScript in the browser. Every number on a band or a line is the threshold value in force (the rule pack
with the site's overrides), labelled with its name.

The input is the record's ``series`` (``cds/decide/facts.py``): values, units, comparators, dates, sites;
no identifier. The SVG is served as its own document (an <img> on the page), so the page keeps a strict
Content-Security-Policy.
"""

from __future__ import annotations

import datetime as dt
import io
import threading
from collections import defaultdict
from typing import Any

_LOCK = threading.Lock()  # pyplot's state is global: one figure at a time

WHO_COLOURS = ("#e8f5e9", "#fff8e1", "#ffebee")  # normal, osteopenia, osteoporosis
LINE_COLOURS = ("#1565c0", "#6a1b9a", "#2e7d32", "#ef6c00", "#00838f", "#4e342e")


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


def _plot_series(ax, groups: dict[str, list[dict[str, Any]]], gid_prefix: str) -> None:
    for index, (label, points) in enumerate(sorted(groups.items())):
        colour = LINE_COLOURS[index % len(LINE_COLOURS)]
        xs = [_day(p["date"]) for p in points]
        ys = [p["value"] for p in points]
        (line,) = ax.plot(xs, ys, "-", color=colour, linewidth=1.5, label=label)
        line.set_gid(f"{gid_prefix}-line-{index}")
        for p, x, y in zip(points, xs, ys, strict=True):
            (dot,) = ax.plot([x], [y], _marker(p), color=colour, markersize=7)
            dot.set_gid("data-point")
            shown = f"{p.get('comparator') or ''}{p['value']:g}"
            ax.annotate(shown, (x, y), textcoords="offset points", xytext=(0, 8), ha="center", fontsize=8)


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
                out.append({"title": title, "unit": unit, "groups": dict(groups),
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
        out.append({"title": title, "unit": unit, "groups": {title: points} if points else {}, "who": False,
                    "lines": lines})
    return out


def render_svg(chart_panels: list[dict[str, Any]]) -> str:
    """The panels as one standalone SVG document."""
    with _LOCK:
        import matplotlib

        matplotlib.use("svg", force=True)
        import matplotlib.dates as mdates
        import matplotlib.pyplot as plt

        matplotlib.rcParams["svg.hashsalt"] = "why-this-card"  # stable ids: the same data, the same SVG
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
                    ax.xaxis.set_major_locator(mdates.AutoDateLocator(maxticks=8))
                    ax.xaxis.set_major_formatter(mdates.DateFormatter("%Y-%m-%d"))
                    ax.tick_params(axis="x", labelrotation=30, labelsize=8)
                    ax.margins(x=0.08)
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
