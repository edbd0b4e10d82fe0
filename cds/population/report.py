"""report.html: the run on one self-contained page a clinic lead reads (no script, no external asset).

The gaps per rule and per indicator, the patients in scope and with gaps by sex and by age band (each a
horizontal bar chart in inline SVG, its numbers written beside the bars), what was set aside, and the
patients with gaps (patient id, each gap's rule, indicator and summary). Every value from the data is
escaped (``html.escape``): a name or summary holding markup is shown as text, never run.
"""

from __future__ import annotations

from collections.abc import Iterable
from html import escape
from typing import Any

MAX_PATIENT_ROWS = 5000
COLOURS = {"critical": "#b3261e", "warning": "#b26a00", "info": "#1f5fa8"}
BAR = "#1f5fa8"


def bar_chart(title: str, rows: list[tuple[str, int]], *, colours: dict[str, str] | None = None) -> str:
    """A horizontal bar chart as an inline ``<svg>`` (role img, titled), one bar per (label, value)."""
    label_w, bar_w, row_h = 400, 340, 24
    height = max(1, len(rows)) * row_h + 36
    peak = max([v for _, v in rows] + [1])
    width_all = label_w + bar_w + 70
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" width="{width_all}" '
             f'height="{height}" viewBox="0 0 {width_all} {height}">',
             f"<title>{escape(title)}</title>",
             f'<text x="0" y="16" font-weight="bold" font-size="14">{escape(title)}</text>']
    if not rows:
        parts.append('<text x="0" y="44" font-size="13">none</text>')
    for i, (label, value) in enumerate(rows):
        y = 28 + i * row_h
        width = round(bar_w * value / peak) if value else 0
        colour = (colours or {}).get(label, BAR)
        parts.append(f'<text x="{label_w - 8}" y="{y + 15}" font-size="12" text-anchor="end">'
                     f"{escape(label)}</text>")
        parts.append(f'<rect x="{label_w}" y="{y + 3}" width="{width}" height="{row_h - 8}" fill="{colour}">'
                     f"<title>{escape(label)}: {value}</title></rect>")
        parts.append(f'<text x="{label_w + width + 6}" y="{y + 15}" font-size="12">{value}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _table(header: list[str], rows: Iterable[list[Any]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem;color:#1b1b1b;max-width:1100px}
h1{font-size:1.5rem} h2{font-size:1.15rem;margin-top:2rem}
table{border-collapse:collapse;margin:.5rem 0} th,td{border:1px solid #ccc;padding:.25rem .5rem;
text-align:left;vertical-align:top;font-size:.9rem} th{background:#f2f2f2}
.numbers td:nth-child(n+2){text-align:right} .charts{display:flex;flex-wrap:wrap;gap:1.5rem}
.note{color:#555;font-size:.9rem} ul.gaps{margin:0;padding-left:1.1rem}
"""


def _group_rows(groups: dict[str, dict[str, int]]) -> list[list[Any]]:
    return [[name, g["patients"], g["inScope"], g["withGaps"], g["gaps"]] for name, g in groups.items()]


def render(summary: dict[str, Any], patients: Iterable[list[Any]]) -> str:
    """The page for ``summary`` (summary.json's content) and the patients with gaps, by patient id."""
    pack = summary["rulePack"]
    counts = summary["patients"]
    gaps = summary["gaps"]
    set_aside = summary["setAside"]
    rows = []
    shown = 0
    more = 0
    for patient_id, _sex, items in patients:
        if shown >= MAX_PATIENT_ROWS:
            more += 1
            continue
        shown += 1
        listed = "".join(f"<li><b>{escape(rule)}</b> [{escape(indicator)}] {escape(text)}</li>"
                         for rule, indicator, text in items)
        rows.append(f"<tr><td>{escape(patient_id)}</td><td>{len(items)}</td>"
                    f'<td><ul class="gaps">{listed}</ul></td></tr>')
    indicator_order = ["critical", "warning", "info"]
    def rank(kv: tuple[str, int]) -> tuple[int, str]:
        return (indicator_order.index(kv[0]) if kv[0] in indicator_order else 9, kv[0])

    per_indicator = sorted(gaps["perIndicator"].items(), key=rank)
    charts = [
        bar_chart("Gaps per rule", sorted(gaps["perRule"].items(), key=lambda kv: (-kv[1], kv[0]))),
        bar_chart("Gaps per indicator", per_indicator, colours=COLOURS),
        bar_chart("Patients with gaps by sex", [(k, v["withGaps"]) for k, v in summary["bySex"].items()]),
        bar_chart("Patients with gaps by age band",
                  [(k, v["withGaps"]) for k, v in summary["byAgeBand"].items()]),
    ]
    overview = _table(["", "count"], [
        ["patients read", counts["read"]], ["in scope", counts["inScope"]],
        ["out of scope (deceased, under the adult age...)", counts["outOfScope"]],
        ["not evaluated (the record was refused)", counts["notEvaluated"]],
        ["set aside (the Patient resource is not valid R4)", counts["setAside"]],
        ["with at least one gap", counts["withGaps"]], ["gaps", gaps["total"]],
        ["lines set aside", set_aside["total"]],
    ])
    aside_kinds = _table(["set aside as", "lines"], sorted(set_aside["byKind"].items()))
    people = ("<table><thead><tr><th>patient</th><th>gaps</th><th>rule [indicator] summary</th></tr></thead>"
              f"<tbody>{''.join(rows)}</tbody></table>")
    if more:
        people += f'<p class="note">{more} more patient(s) with gaps: see gaps.csv.</p>'
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>Care gaps on {escape(summary['at'][:10])}</title><style>{STYLE}</style></head><body>",
        f"<h1>Bone-health care gaps on {escape(summary['at'][:10])}</h1>",
        f'<p class="note">Rule pack {escape(str(pack["id"]))} {escape(str(pack["version"]))} '
        f"(sha256 {escape(str(pack['contentHash'])[:12])}), export {escape(str(summary['export']))}, "
        f"{len(summary['inputs'])} file(s). Each gap is a card the patient-view service gives for the "
        "patient's record on that date.</p>",
        "<h2>Overview</h2>", f'<div class="numbers">{overview}</div>',
        f'<div class="charts">{"".join(charts)}</div>',
        "<h2>By sex</h2>",
        f'<div class="numbers">{_table(["sex", "patients", "in scope", "with gaps", "gaps"], _group_rows(summary["bySex"]))}</div>',  # noqa: E501
        "<h2>By age band</h2>",
        f'<div class="numbers">{_table(["age band", "patients", "in scope", "with gaps", "gaps"], _group_rows(summary["byAgeBand"]))}</div>',  # noqa: E501
        "<h2>Set aside</h2>",
        '<p class="note">Lines not evaluated, each listed with its file and line in summary.json.</p>',
        f'<div class="numbers">{aside_kinds}</div>',
        "<h2>Patients with gaps</h2>", people,
        "</body></html>",
    ]) + "\n"
