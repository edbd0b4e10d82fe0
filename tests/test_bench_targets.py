"""The benchmark's target evaluation (bench/targets.py) reads a run's figures right: met, not met, and
not measured (a workload left out, a short memory run, no audit-append figures)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from targets import append_rates, evaluate  # noqa: E402


def _run(rps: float, p50: float = 10.0, p99: float = 20.0) -> dict:
    return {"rps": rps, "p50_ms": p50, "p99_ms": p99, "non_200": 0}


def _workload(service: dict, spec: float, bare: float, connections: int) -> dict:
    return {"connections": connections, "service": service, "spec_floor": _run(spec), "floor": _run(bare),
            "spec_ratio": service["rps"] / spec, "throughput_ratio": service["rps"] / bare}


def test_targets_met_not_met_and_not_measured():
    results = {
        "workloads": {
            "typical-cold": _workload(_run(60, p99=49), 100, 1000, 8),
            "warm": _workload(_run(90), 100, 1000, 8),
            "scale-10": _workload(_run(50, p50=10), 100, 1000, 1),
            "scale-100": _workload(_run(40, p50=19), 100, 1000, 1),
            "scale-1000": _workload(_run(10, p50=99), 100, 1000, 1),
        },
        "memory": {"requests": 5000, "growth_percent": 1.0},
        "append": {"designs": {"chains": {"1": {"appends_per_s": 500}, "4": {"appends_per_s": 1500},
                                           "16": {"appends_per_s": 1999}}}},
        "append-calls": {"designs": {"chains+claim": {"1": {"appends_per_s": 400},
                                                      "16": {"appends_per_s": 1700}},
                                     "chains": {"1": {"appends_per_s": 10}, "16": {"appends_per_s": 10}}}},
    }
    rows = evaluate(results)
    met = [r["met"] for r in rows]
    assert met == [True, False, True, True, True, None, False, True], rows
    assert "0.60 x" in rows[0]["measured"] and "0.90 x" in rows[1]["measured"]
    assert "1999 vs 500 appends/s" in rows[6]["measured"]  # 3.998 x: not met, however it rounds
    assert "4.25 x (1700 vs 400" in rows[7]["measured"]  # the record-with-token-id design, not the other

    results["workloads"]["scale-1000"]["service"]["p50_ms"] = 400  # 0.42 ms per resource, was 0.1: not linear
    results["memory"]["requests"] = 100_000
    results["append"]["designs"]["chains"]["16"]["appends_per_s"] = 2000
    del results["append-calls"]["designs"]["chains+claim"]["16"]
    met = [r["met"] for r in evaluate(results)]
    assert met == [True, False, True, False, False, True, True, None]


def test_nothing_measured_is_never_counted_as_met():
    rows = evaluate({"workloads": {}})
    assert len(rows) == 8 and all(r["met"] is None for r in rows)


def test_append_figures_as_bench_append_writes_them():
    written = {"designs": {"chains": {"1": {"appends_per_s": 10, "ratio": 1.0},
                                      "16": {"appends_per_s": 50.5}},
                           "single": {"1": {"appends_per_s": 3}}}}
    assert append_rates(written) == {1: 10.0, 16: 50.5}
    assert append_rates(written, "single") == {1: 3.0}
    assert append_rates({"writers": {"1": 10}}) == {} and append_rates(None) == {}
