"""Benchmark the service against two floors under the production server, in one run.

    python bench/run.py [--seconds 15] [--connections 8] [--workers N] [--memory-requests 100000] [--quick]
    python bench/run.py --scale-out [--quick]     (1 and 2 replicas behind a balancer: bench/scale_out.py)

For every workload three servers are started one after the other on local ports, each under the production
server (cds/web/supervisor.py) with the same worker count, and driven by wrk with the same request bodies:

    service      ``cds serve --prod``: JWT on (a fresh ES384 token per request, jti in the replay store),
                 audit on (a hash-chained record per call), FHIR validation and the rules
    bare floor   bench/floor.py: Flask reads the body and answers ``{"cards": []}``
    spec floor   bench/spec_floor.py: parse the body, verify the same token, refuse a replayed jti and
                 append one hash-chained record in one locked transaction, in the same database; no FHIR,
                 no rules (the least a CDS Hooks service with client authentication and a durable audit
                 must do, done naively). It is sent the very tokens the service was sent (its own tables).

Workloads:

    typical-cold   a typical order-sign (Patient, ~40 Observations, 3 MedicationRequests, 1 draft order),
                   200 patients in turn, the caches of a patient's content (models, facts, suggestions) off
    warm           the same patient again and again (the caches on), as order-select then order-sign do
    scale-N        one patient with N = 10, 100, 1000 Observations (all in one prefetch Bundle)
    memory         N requests in a row: resident memory of the workers after warm-up and at the end
    append         bench/append.py: audit appends/s with 1, 4 and 16 writer processes (PostgreSQL)
    gaps           bench/gaps.py: the care-gaps report (`cds gaps`) on a Synthea-shaped Bulk Data export
                   against a plain loop over the call layer (no wrk; `--only gaps` runs it alone)

Every workload is reported as a ratio to both floors and the targets of docs/performance.md are evaluated
(bench/targets.py), with the audit-append figure of bench/append.py (run as the `append` workload).
Writes bench/results/latest.json and bench/results/latency-vs-resources.png. Needs wrk (Debian package
`wrk`; installed with apt-get when missing and running as root).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from servers import (  # noqa: E402
    SERVICE_PATH,
    Client,
    Server,
    bench_database,
    free_port,
    need_wrk,
    write_bodies,
    wrk_run,
)
from targets import evaluate, print_targets  # noqa: E402
from workload import order_sign, order_sign_all_in_one  # noqa: E402

FLOORS = {"floor": "bench.floor:app", "spec_floor": "bench.spec_floor:app"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--workers", type=int, default=(os.cpu_count() or 1) * 2 + 1)
    parser.add_argument("--memory-requests", type=int, default=100_000)
    parser.add_argument("--only", help="comma-separated workloads to run (typical-cold, warm, scale-10, "
                                       "scale-100, scale-1000, append, memory, gaps); default all")
    parser.add_argument("--scale-connections", type=int, default=1,
                        help="connections for the 10/100/1,000-Observation series "
                             "(1: the cost of one request)")
    parser.add_argument("--quick", action="store_true", help="5 s per workload, 5,000 requests for memory")
    parser.add_argument("--out", default=str(HERE / "results"))
    parser.add_argument(
        "--database",
        default="auto",
        help="auto (PostgreSQL at CDS_BENCH_POSTGRES_URL or 127.0.0.1:5432/test when it answers, "
        "else SQLite), sqlite, or a SQLAlchemy URL",
    )
    parser.add_argument("--baseline", type=Path,
                        help="another checkout of the project (e.g. `git worktree add /tmp/base main~1`): "
                             "its `cds serve --prod` is measured in each workload too (x baseline)")
    parser.add_argument("--scale-out", action="store_true",
                        help="run bench/scale_out.py instead (1 and 2 replicas behind a round-robin "
                             "balancer)")
    args, rest = parser.parse_known_args(argv)
    if args.scale_out:
        import scale_out

        forwarded = ["--out", args.out, "--connections", str(args.connections),
                     "--workers", str(args.workers)]
        if args.quick:
            forwarded.append("--quick")
        elif "--seconds" in (argv if argv is not None else sys.argv[1:]):
            forwarded += ["--seconds", str(args.seconds)]
        return scale_out.main([*forwarded, *rest])
    if rest:
        parser.error(f"unrecognised arguments: {' '.join(rest)}")
    if args.only and "gaps" in args.only.split(","):  # the care-gaps report: its own script, no wrk
        status = run_gaps_bench(Path(args.out), args.quick)
        args.only = ",".join(w for w in args.only.split(",") if w != "gaps")
        if not args.only:
            return status
    if args.quick:
        args.seconds, args.memory_requests = 5, 5_000
    wrk = need_wrk()
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="cds-bench-"))
    client = Client(work)
    port, floor_port = free_port(), free_port()
    database, drop_service_schema = bench_database(work, args.database)
    # the baseline's own database: its trail grows through the workloads as the service's does, and a
    # checkout of another revision may keep another schema
    (work / "baseline").mkdir()
    base_database, drop_base_schema = bench_database(work / "baseline", args.database) \
        if args.baseline is not None else (database, lambda: None)

    def drop_schema() -> None:
        drop_service_schema()
        drop_base_schema()

    base_env = {
        "CDS_DEV_MODE": "false",
        "CDS_TRUSTED_CLIENTS": str(client.trusted),
        "CDS_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "CDS_LOG_LEVEL": "WARNING",
        "CDS_DATABASE_URL": database,
        "CDS_AUDIT_SPOOL_DIR": str(work / "spool"),
        "CDS_AUDIT_PATIENT_KEY_SECRET": "bench-patient-key-secret-0123456789",
        "CDS_LINK_SECRET": "bench-link-secret-0123456789abcdef",
    }
    aud = f"http://127.0.0.1:{port}{SERVICE_PATH}"
    results: dict = {
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "database": database.split("://", 1)[0],
        "command": " ".join(["python", "bench/run.py", *(argv if argv is not None else sys.argv[1:])]),
        "workers": args.workers,
        "connections": args.connections,
        "seconds": args.seconds,
        "workloads": {},
    }
    # tokens per second of a measurement: above what any of the three servers answers here, so that no
    # token is sent twice (a wrapped-around token is a replay, refused, and counted as non-200)
    per_second_guess = 3000

    def measure(name: str, bodies: list[dict], cache: bool, connections: int | None = None) -> None:
        connections = connections or args.connections
        body_file = write_bodies(work / f"{name}.ndjson", bodies)
        warm_tokens, tokens = work / f"{name}.warm-tokens", work / f"{name}.tokens"
        # one token file for the warm-ups and one for the measurements, each sent once to the service and
        # once to the spec floor (their jti tables are separate)
        client.tokens(aud, int(per_second_guess * 2), warm_tokens)
        client.tokens(aud, int(per_second_guess * args.seconds), tokens)
        env = {**base_env, "CDS_MODEL_CACHE_SIZE": "20000" if cache else "0",  # cold bodies repeat under
               "CDS_FACTS_CACHE_SIZE": "1000" if cache else "0",  # wrk: no cache of a patient's content
               "CDS_SUGGESTION_CACHE_SIZE": "1024" if cache else "0"}
        runs = {}
        service = Server("service", "service", port, args.workers, env)
        try:
            wrk_run(wrk, port, body_file, warm_tokens, 2, connections)
            runs["service"] = wrk_run(wrk, port, body_file, tokens, args.seconds, connections)
        finally:
            service.stop()
        if args.baseline is not None:  # the same workload against another checkout's service, fresh tokens
            base_warm, base_tokens = work / f"{name}.base-warm-tokens", work / f"{name}.base-tokens"
            client.tokens(aud, int(per_second_guess * 2), base_warm)
            client.tokens(aud, int(per_second_guess * args.seconds), base_tokens)
            baseline = Server("baseline", "service", port, args.workers,
                              {**env, "CDS_DATABASE_URL": base_database,
                               "CDS_AUDIT_SPOOL_DIR": str(work / "baseline" / "spool")},
                              checkout=args.baseline.resolve())
            try:
                wrk_run(wrk, port, body_file, base_warm, 2, connections)
                runs["baseline"] = wrk_run(wrk, port, body_file, base_tokens, args.seconds, connections)
            finally:
                baseline.stop()
        for floor, app in FLOORS.items():
            authed = floor == "spec_floor"
            server = Server(floor, app, floor_port, args.workers, {**env, "SPEC_FLOOR_AUDIENCE": aud})
            try:
                wrk_run(wrk, floor_port, body_file, warm_tokens if authed else None, 2, connections)
                runs[floor] = wrk_run(wrk, floor_port, body_file, tokens if authed else None, args.seconds,
                                      connections)
            finally:
                server.stop()
        svc = runs["service"]
        results["workloads"][name] = {
            "connections": connections,
            **runs,
            "throughput_ratio": svc["rps"] / runs["floor"]["rps"],
            "spec_ratio": svc["rps"] / runs["spec_floor"]["rps"],
            "resources": sum(
                len((v or {}).get("entry", [])) if isinstance(v, dict) and "entry" in v else 1
                for v in bodies[0]["prefetch"].values()
                if v is not None
            )
            + 1,
        }
        print(
            f"{name:13} service {svc['rps']:7.1f} req/s p50 {svc['p50_ms']:6.1f} p99 {svc['p99_ms']:6.1f} ms"
            f" (non-200 {svc['non_200']}) | spec floor {runs['spec_floor']['rps']:7.1f} req/s"
            f" p99 {runs['spec_floor']['p99_ms']:5.1f} ms (non-200 {runs['spec_floor']['non_200']})"
            f" | floor {runs['floor']['rps']:7.1f} req/s"
            f" | x spec {svc['rps'] / runs['spec_floor']['rps']:.3f}"
            f" x floor {svc['rps'] / runs['floor']['rps']:.3f}"
            + (f" | baseline {runs['baseline']['rps']:7.1f} req/s p99 {runs['baseline']['p99_ms']:6.1f} ms"
               f" x baseline {svc['rps'] / runs['baseline']['rps']:.3f}" if "baseline" in runs else ""),
            flush=True,
        )
        if "baseline" in runs:
            results["workloads"][name]["baseline_ratio"] = svc["rps"] / runs["baseline"]["rps"]

    wanted = set(args.only.split(",")) if args.only else None

    def chosen(name: str) -> bool:
        return wanted is None or name in wanted

    if chosen("typical-cold"):
        measure("typical-cold", [order_sign(f"cold-{i}", 40, seed=i) for i in range(200)], cache=False)
    if chosen("warm"):
        measure("warm", [order_sign("warm-1", 40)], cache=True)
    for n in (10, 100, 1000):
        if chosen(f"scale-{n}"):
            measure(f"scale-{n}", [order_sign_all_in_one(f"scale-{n}", n)], cache=False,
                    connections=args.scale_connections)
    if chosen("append"):  # the audit-append microbenchmark (PostgreSQL), its figures read by load_append
        run_append(out_dir, min(args.seconds, 8.0))
    if not chosen("memory"):
        drop_schema()
        load_append(results, out_dir)
        results["targets"] = evaluate(results)
        print_targets(results["targets"])
        (out_dir / "partial.json").write_text(json.dumps(results, indent=2))
        print(f"wrote {out_dir / 'partial.json'}")
        return 0

    (out_dir / "partial.json").write_text(json.dumps(results, indent=2))  # kept should the memory run stop

    # memory: many requests in a row against one service, RSS after warm-up vs at the end
    body_file = write_bodies(work / "memory.ndjson", [order_sign(f"mem-{i}", 40, seed=i) for i in range(50)])
    service = Server("service", "service", port, args.workers, {**base_env, "CDS_MODEL_CACHE_SIZE": "20000"})
    try:
        tokens = work / "memory.tokens"
        client.tokens(aud, 3000, tokens)
        wrk_run(wrk, port, body_file, tokens, 3, args.connections)
        before = service.worker_rss_kb()
        done, started, rate, non_200, samples = 0, time.time(), 500.0, 0, []
        while done < args.memory_requests:
            chunk = 10
            # three times the last rate: the load here varies, and a token sent twice is a refused replay
            client.tokens(aud, max(int(rate * chunk * 3), 3000), tokens)
            run = wrk_run(wrk, port, body_file, tokens, chunk, args.connections)
            done += run["requests"]
            rate = max(run["rps"], 50.0)
            if run["non_200"]:
                non_200 += run["non_200"]
                samples.append(run.get("stderr", "")[:300])
                print(f"memory run: {run['non_200']} non-200 answers: {samples[-1]}", flush=True)
        after = service.worker_rss_kb()
    finally:
        service.stop()
    results["memory"] = {
        "requests": done,
        "rss_after_warmup_kb": before,
        "rss_end_kb": after,
        "growth_percent": 100 * (after - before) / before,
        "seconds": time.time() - started,
        "non_200": non_200,
        "non_200_samples": samples[:3],
    }
    print(
        f"memory: {done} requests, worker RSS {before} kB -> {after} kB "
        f"({results['memory']['growth_percent']:+.1f} %)",
        flush=True,
    )

    drop_schema()
    load_append(results, out_dir)
    results["targets"] = evaluate(results)
    print_targets(results["targets"])
    (out_dir / "latest.json").write_text(json.dumps(results, indent=2))
    if all(f"scale-{n}" in results["workloads"] for n in (10, 100, 1000)):
        plot(results, out_dir / "latency-vs-resources.png")
    print(f"wrote {out_dir / 'latest.json'} and {out_dir / 'latency-vs-resources.png'}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


#: bench/append.py's two runs: 1, 4 and 16 writer processes (every design), and 1, 4 and 16 concurrent
#: calls in processes of 4 request threads (the service's default path: a chain per process, the token id
#: with the record)
APPEND_RUNS = (
    ("append", []),
    ("append-calls", ["--calls-per-process", "4", "--designs", "chains,chains+claim"]),
)


def run_append(out_dir: Path, seconds: float) -> None:
    """Run bench/append.py's two layouts into out_dir/append.json and out_dir/append-calls.json."""
    for key, extra in APPEND_RUNS:
        print(f"audit appends: bench/append.py --seconds {seconds:g} {' '.join(extra)}", flush=True)
        done = subprocess.run([sys.executable, str(HERE / "append.py"), "--seconds", f"{seconds:g}", *extra,
                               "--json", str(out_dir / f"{key}.json")], check=False)
        if done.returncode != 0:
            print(f"audit appends: bench/append.py {' '.join(extra)} failed (exit {done.returncode}); not "
                  "measured in this run", flush=True)
            (out_dir / f"{key}.json").unlink(missing_ok=True)


def run_gaps_bench(out_dir: Path, quick: bool) -> int:
    """bench/gaps.py (the care-gaps report against a plain loop), writing out_dir/gaps.json."""
    command = [sys.executable, str(HERE / "gaps.py"), "--out", str(out_dir), *(["--quick"] if quick else [])]
    print(f"care-gaps report: {' '.join(command[1:])}", flush=True)
    return subprocess.run(command, check=False).returncode


def load_append(results: dict, out_dir: Path) -> None:
    """The audit-append microbenchmark's figures (bench/append.py writes bench/results/append*.json)."""
    for key, _ in APPEND_RUNS:
        append_file = out_dir / f"{key}.json"
        if append_file.exists():
            results[key] = json.loads(append_file.read_text())
            written = dt.datetime.fromtimestamp(append_file.stat().st_mtime, dt.UTC)
            results[f"{key}_file_time"] = written.isoformat(timespec="seconds")


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [10, 100, 1000]
    series = {
        q: [results["workloads"][f"scale-{n}"]["service"][f"{q}_ms"] for n in sizes] for q in ("p50", "p99")
    }
    floor = [results["workloads"][f"scale-{n}"]["floor"]["p50_ms"] for n in sizes]
    spec = [results["workloads"][f"scale-{n}"]["spec_floor"]["p50_ms"] for n in sizes]
    fig, ax = plt.subplots(figsize=(6, 4))
    for q, values in series.items():
        ax.plot(sizes, values, marker="o", label=f"service {q}")
    ax.plot(sizes, spec, marker="s", linestyle="--", label="spec floor p50")
    ax.plot(sizes, floor, marker="x", linestyle="--", label="bare floor p50")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("Observations in the request")
    ax.set_ylabel("latency (ms)")
    ax.set_title("order-sign latency vs Observations "
                 f"({results['workloads']['scale-10']['connections']} connection(s), cold)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    raise SystemExit(main())
