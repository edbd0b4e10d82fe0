"""The run's outputs, put together from the partitions in one defined order.

    gaps.ndjson   one FHIR R4 DetectedIssue per gap, by patient id then rule id (the same bytes for the same
                  export, date and pack, however many workers ran)
    gaps.csv      patient_id, rule, version, indicator, summary, evidence (the resources, space-separated)
    summary.json  what was read, evaluated, found and set aside (``summary``)
"""

from __future__ import annotations

import csv
import heapq
import io
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

CSV_HEADER = ["patient_id", "rule", "version", "indicator", "summary", "evidence"]


def _rows(path: Path) -> Iterator[list[Any]]:
    with open(path, "rb") as stream:
        for raw in stream:
            yield orjson.loads(raw)


def merge_gaps(parts: list[Path], ndjson: Path, csv_path: Path) -> int:
    """Merge the partitions' gap files (each sorted by patient and rule) into gaps.ndjson and gaps.csv."""
    count = 0
    with open(ndjson, "wb") as issues, open(csv_path, "w", encoding="utf-8", newline="") as table:
        writer = csv.writer(table, lineterminator="\n")
        writer.writerow(CSV_HEADER)
        merged = heapq.merge(*(_rows(p) for p in parts), key=lambda r: (r[0], r[1]))
        for _patient, _rule, issue, row in merged:
            issues.write(orjson.dumps(issue) + b"\n")
            writer.writerow(row)
            count += 1
    return count


def merge_patients(parts: list[Path]) -> Iterator[list[Any]]:
    """The patients with gaps, by patient id: ``[id, sex, [[rule, indicator, summary], ...]]``."""
    return heapq.merge(*(_rows(p) for p in parts), key=lambda r: r[0])


def _add_groups(into: dict[str, dict[str, int]], more: dict[str, dict[str, int]]) -> None:
    for name, row in more.items():
        target = into.setdefault(name, {"patients": 0, "inScope": 0, "withGaps": 0, "gaps": 0})
        for k, v in row.items():
            target[k] += v


def merge_tallies(tallies: list[dict[str, Any]]) -> dict[str, Any]:
    total: dict[str, Any] = {"patients": 0, "inScope": 0, "withGaps": 0, "notEvaluated": 0, "gaps": 0,
                             "patientsSetAside": 0,
                             "outOfScope": Counter(), "perRule": Counter(), "perIndicator": Counter(),
                             "bySex": {}, "byAgeBand": {}, "setAside": []}
    for t in tallies:
        for k in ("patients", "inScope", "withGaps", "notEvaluated", "gaps", "patientsSetAside"):
            total[k] += t[k]
        for k in ("outOfScope", "perRule", "perIndicator"):
            total[k].update(t[k])
        _add_groups(total["bySex"], t["bySex"])
        _add_groups(total["byAgeBand"], t["byAgeBand"])
        total["setAside"] += t["setAside"]
    for k in ("outOfScope", "perRule", "perIndicator"):
        total[k] = dict(sorted(total[k].items()))
    total["bySex"] = dict(sorted(total["bySex"].items()))
    total["byAgeBand"] = dict(sorted(total["byAgeBand"].items()))
    return total


def set_aside_order(item: dict[str, Any]) -> tuple[str, int, str]:
    return (str(item["file"]), int(item["line"]), str(item["kind"]))


def dumps(data: Any) -> bytes:
    return orjson.dumps(data, option=orjson.OPT_INDENT_2) + b"\n"


def csv_text(rows: list[list[Any]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue()
