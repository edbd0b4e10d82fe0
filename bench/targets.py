"""The performance targets (docs/performance.md, "Targets"), evaluated on one run's results.

Each target gives a row: what was asked, what this run measured, and whether it was met (``True``/``False``),
or ``None`` when this run did not measure it (a workload left out, a quick run too short for the memory
target, no audit-append figures). Ratios are always between servers measured in the same run.
"""

from __future__ import annotations

from typing import Any

MEMORY_CALLS = 100_000
# the marginal cost per resource from 100 to 1,000 may be at most this times the one from 10 to 100
LINEAR_SLACK = 1.5
NOT_MEASURED = "not measured in this run"


def _row(target: str, measured: str, met: bool | None) -> dict[str, Any]:
    return {"target": target, "measured": measured, "met": met}


def append_rates(data: Any, design: str = "chains") -> dict[int, float]:
    """Aggregate appends/s by writer count of one design (the service's default, a chain per writer) from
    bench/append.py's JSON: ``{"designs": {"chains": {"1": {"appends_per_s": 465, ...}, ...}, ...}}``.
    Anything else: ``{}``."""
    rates: dict[int, float] = {}
    designs = data.get("designs") if isinstance(data, dict) else None
    figures = designs.get(design) if isinstance(designs, dict) else None
    for k, v in (figures or {}).items() if isinstance(figures, dict) else []:
        value = v.get("appends_per_s") if isinstance(v, dict) else None
        if str(k).isdigit() and isinstance(value, int | float):
            rates[int(k)] = float(value)
    return rates


def evaluate(results: dict[str, Any]) -> list[dict[str, Any]]:
    w = results.get("workloads", {})
    rows = []
    for name, want, label in (("typical-cold", 0.6, "cold"), ("warm", 1.0, "warm")):
        if name in w:
            r = w[name]
            rows.append(_row(
                f"{label}: throughput >= {want:g} x spec floor",
                f"{r['spec_ratio']:.2f} x ({r['service']['rps']:.0f} vs {r['spec_floor']['rps']:.0f} req/s; "
                f"{r['throughput_ratio']:.3f} x bare floor)",
                r["spec_ratio"] >= want))
        else:
            rows.append(_row(f"{label}: throughput >= {want:g} x spec floor", NOT_MEASURED, None))
    if "typical-cold" in w:
        r = w["typical-cold"]
        at8 = r["connections"] == 8
        rows.append(_row("cold: p99 < 50 ms at 8 connections",
                         f"{r['service']['p99_ms']:.1f} ms at {r['connections']} connections "
                         f"(spec floor {r['spec_floor']['p99_ms']:.1f} ms)",
                         r["service"]["p99_ms"] < 50 if at8 else None))
    else:
        rows.append(_row("cold: p99 < 50 ms at 8 connections", NOT_MEASURED, None))
    if "scale-1000" in w:
        r = w["scale-1000"]
        one = r["connections"] == 1
        rows.append(_row("1,000 Observations: p50 < 100 ms at one connection",
                         f"{r['service']['p50_ms']:.1f} ms at {r['connections']} connection(s)",
                         r["service"]["p50_ms"] < 100 if one else None))
    else:
        rows.append(_row("1,000 Observations: p50 < 100 ms at one connection", NOT_MEASURED, None))
    if all(f"scale-{n}" in w for n in (10, 100, 1000)):
        p10, p100, p1000 = (w[f"scale-{n}"]["service"]["p50_ms"] for n in (10, 100, 1000))
        low, high = (p100 - p10) / 90, (p1000 - p100) / 900
        linear = high <= LINEAR_SLACK * max(low, 1e-6)
        rows.append(_row("cost linear in resources (10, 100, 1,000 Observations)",
                         f"p50 {p10:.1f}, {p100:.1f}, {p1000:.1f} ms: {low * 1000:.0f} us per Observation "
                         f"from 10 to 100, {high * 1000:.0f} us from 100 to 1,000",
                         linear))
    else:
        rows.append(_row("cost linear in resources", NOT_MEASURED, None))
    m = results.get("memory")
    if m:
        rows.append(_row("100,000 calls: worker memory grows < 10 % after warm-up",
                         f"{m['growth_percent']:+.1f} % over {m['requests']:,} calls",
                         m["growth_percent"] < 10 if m["requests"] >= MEMORY_CALLS else None))
    else:
        rows.append(_row("100,000 calls: worker memory grows < 10 % after warm-up", NOT_MEASURED,
                         None))
    for key, design, label in APPEND_ROWS:
        rows.append(_append_row(results, key, design, label))
    return rows


#: the audit-append rows: (results key and file stem, design, what a writer is)
APPEND_ROWS = (
    ("append", "chains", "16 writers >= 4 x one writer (a process each)"),
    ("append-calls", "chains+claim",
     "16 concurrent calls >= 4 x one call (4 per process, each record with its token id)"),
)


def _append_row(results: dict[str, Any], key: str, design: str, label: str) -> dict[str, Any]:
    target = f"audit appends (PostgreSQL): {label}"
    rates = append_rates(results.get(key), design)
    if 1 in rates and 16 in rates:
        ratio = rates[16] / rates[1]
        when = results.get(f"{key}_file_time", "?")
        return _row(target, f"{ratio:.2f} x ({rates[16]:.0f} vs {rates[1]:.0f} appends/s; bench/append.py, "
                            f"bench/results/{key}.json of {when})", ratio >= 4)
    return _row(target, NOT_MEASURED if key not in results
                else f"bench/results/{key}.json holds no 1- and 16-writer figures of {design}", None)


def verdict(met: bool | None) -> str:
    return {True: "yes", False: "**no**", None: "not measured"}[met]


def print_targets(rows: list[dict[str, Any]]) -> None:
    print("\ntargets:")
    for row in rows:
        print(f"  {verdict(row['met']).strip('*'):12} {row['target']}: {row['measured']}")
