"""Print the figures of a benchmark result file as the Markdown tables used in docs/performance.md.

python bench/report.py [bench/results/latest.json] [bench/results/stages.json]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    result = json.loads(Path(argv[0] if argv else HERE / "results" / "latest.json").read_text())
    print(
        f"Run of {result['when']} on {result['cpus']} CPUs, {result['workers']} gunicorn workers per server, "
        f"database {result['database']}, {result['seconds']:g} s per measurement: `{result['command']}`\n"
    )
    print(
        "| workload | conns | service req/s | p50 ms | p95 ms | p99 ms | floor req/s | floor p99 ms | ratio |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, w in result["workloads"].items():
        s, f = w["service"], w["floor"]
        print(
            f"| {name} | {w.get('connections', result['connections'])} | {s['rps']:.1f} | "
            f"{s['p50_ms']:.1f} | {s['p95_ms']:.1f} | {s['p99_ms']:.1f} | {f['rps']:.1f} | "
            f"{f['p99_ms']:.1f} | "
            f"{w['throughput_ratio']:.3f} |"
        )
    if "memory" in result:
        m = result["memory"]
        print(
            f"\nMemory: {m['requests']:,} requests in a row; worker RSS (sum over workers) "
            f"{m['rss_after_warmup_kb']:,} kB after warm-up, {m['rss_end_kb']:,} kB at the end "
            f"({m['growth_percent']:+.1f} %)."
        )
    stages_file = Path(argv[1]) if len(argv) > 1 else HERE / "results" / "stages.json"
    if stages_file.exists():
        stages = json.loads(stages_file.read_text())
        print("\n| stage (CPU ms per call) | " + " | ".join(stages) + " |")
        print("|---|" + "---|" * len(stages))
        names = list(next(iter(stages.values()))["stages_ms"])
        for name in names:
            cells = " | ".join(f"{v['stages_ms'].get(name, 0):.2f}" for v in stages.values())
            print(f"| {name} | {cells} |")
        print("| **total** | " + " | ".join(f"**{v['total_ms']:.2f}**" for v in stages.values()) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
