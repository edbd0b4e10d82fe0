"""Print the figures of a benchmark result file as the Markdown tables used in docs/performance.md.

python bench/report.py [bench/results/latest.json] [bench/results/stages.json]

Tables: every workload against both floors (bare and spec), the targets (bench/targets.py), the scale-out
run (bench/results/scale-out.json, when there is one) and CPU per stage (stages.json).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from targets import evaluate, verdict  # noqa: E402


def main(argv: list[str]) -> int:
    result = json.loads(Path(argv[0] if argv else HERE / "results" / "latest.json").read_text())
    print(
        f"Run of {result['when']} on {result['cpus']} CPUs, {result['workers']} server processes per server, "
        f"database {result['database']}, {result['seconds']:g} s per measurement: `{result['command']}`\n"
    )
    print("| workload | conns | service req/s | p50 ms | p99 ms | spec floor req/s | spec p99 ms "
          "| bare floor req/s | bare p99 ms | x spec floor | x bare floor |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, w in result["workloads"].items():
        s, sp, f = w["service"], w["spec_floor"], w["floor"]
        print(
            f"| {name} | {w.get('connections', result['connections'])} | {s['rps']:.1f} | "
            f"{s['p50_ms']:.1f} | {s['p99_ms']:.1f} | {sp['rps']:.1f} | {sp['p99_ms']:.1f} | "
            f"{f['rps']:.1f} | {f['p99_ms']:.1f} | {w['spec_ratio']:.3f} | {w['throughput_ratio']:.3f} |"
        )
    bad = {n: (w["service"]["non_200"], w["spec_floor"]["non_200"]) for n, w in result["workloads"].items()
           if w["service"]["non_200"] or w["spec_floor"]["non_200"]}
    if bad:
        print(f"\nNon-200 answers (service, spec floor): {bad}")
    if "memory" in result:
        m = result["memory"]
        print(
            f"\nMemory: {m['requests']:,} requests in a row; worker RSS (sum over workers) "
            f"{m['rss_after_warmup_kb']:,} kB after warm-up, {m['rss_end_kb']:,} kB at the end "
            f"({m['growth_percent']:+.1f} %)."
        )
    print("\n| target | this run | met |\n|---|---|---|")
    for row in result.get("targets") or evaluate(result):
        print(f"| {row['target']} | {row['measured']} | {verdict(row['met'])} |")
    scale_file = HERE / "results" / "scale-out.json"
    if scale_file.exists():
        scale = json.loads(scale_file.read_text())
        print(f"\nScale-out run of {scale['when']}: `{scale['command']}`; "
              f"replay store {scale['replay_store']}\n")
        print("| replicas | workers each | req/s through the balancer | p50 ms | p99 ms | answers checked "
              "| x 1 replica |")
        print("|---|---|---|---|---|---|---|")
        one = scale["runs"][0]["rps"]
        for run in scale["runs"]:
            print(f"| {run['replicas']} | {run['workers']} | {run['rps']:.1f} | {run['p50_ms']:.1f} | "
                  f"{run['p99_ms']:.1f} | {run['checked']:,} ({run['bad']} bad) | {run['rps'] / one:.2f} |")
        print(f"\nBalancer alone (to a no-op floor): {scale['balancer_cost']}")
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
