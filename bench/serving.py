"""Latency under load of `cds serve --prod` at several settings, and of a baseline checkout, in one run.

    python bench/serving.py [--seconds 10] [--connections 8] [--rounds 2] [--only NAME,NAME] [--workload cold]
                            [--baseline DIR]

Every configuration serves the same bodies (``bench/workload.py``: the typical cold order-sign of
``bench/run.py``, a different patient each request, the warm-patient cache off; or ``--workload warm``, one
patient with the cache on) with JWT and audit on, and is driven by wrk at the same connection count
(``bench/wrk.lua``, one token per request). The configurations run one after the other, in ``--rounds``
interleaved rounds, so that a change in the machine's load falls on all of them; each round's figures and
the median over rounds are printed and written to ``bench/results/serving.json``.

Configurations (``CONFIGS``): the production server (waitress processes, ``cds/web/supervisor.py``) at
several processes x threads, and the default with the token id stored in a transaction of its own before
the call (``CDS_REPLAY_WITH_AUDIT=false``) instead of with the call's audit record. ``baseline-*``: the same
``cds serve --prod`` run from another checkout of the project (``--baseline DIR``, e.g. an export of an
earlier commit: ``git archive COMMIT | tar -x -C DIR``), to compare a change with what it replaces on the
same machine in the same run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from run import SERVICE_PATH, Client, Server, bench_database, free_port, need_wrk, write_bodies, wrk_run  # noqa: E402
from workload import order_sign  # noqa: E402

# name: (workers, threads, extra environment)
CONFIGS: dict[str, tuple[int, int, dict[str, str]]] = {
    "production-5x4": (5, 4, {}),
    "production-2x4": (2, 4, {}),
    "production-5x2": (5, 2, {}),
    "production-5x1": (5, 1, {}),
    "production-5x4-replay-apart": (5, 4, {"CDS_REPLAY_WITH_AUDIT": "false"}),  # jti in its own transaction
    "baseline-5x4": (5, 4, {}),
    "baseline-5x1": (5, 1, {}),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--only",
                        help="comma-separated configuration names (default all): " + ", ".join(CONFIGS))
    parser.add_argument("--workload", choices=["cold", "warm"], default="cold")
    parser.add_argument("--database", default="auto", help="as bench/run.py --database")
    parser.add_argument("--baseline", type=Path, help="another checkout of the project, for baseline-*")
    parser.add_argument("--out", default=str(HERE / "results" / "serving.json"))
    args = parser.parse_args(argv)
    names = (args.only.split(",") if args.only
             else [n for n in CONFIGS if args.baseline or "baseline" not in n])
    if any("baseline" in n for n in names) and not args.baseline:
        raise SystemExit("bench: baseline-* configurations need --baseline DIR")
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        raise SystemExit(f"bench: unknown configuration(s) {', '.join(unknown)}; known: {', '.join(CONFIGS)}")
    wrk = need_wrk()
    work = Path(tempfile.mkdtemp(prefix="cds-bench-serving-"))
    client = Client(work)
    port = free_port()
    database, drop_schema = bench_database(work, args.database)
    if args.workload == "cold":
        bodies = [order_sign(f"cold-{i}", 40, seed=i) for i in range(200)]
    else:
        bodies = [order_sign("warm-1", 40)]
    body_file = write_bodies(work / "bodies.ndjson", bodies)
    aud = f"http://127.0.0.1:{port}{SERVICE_PATH}"
    base_env = {
        "CDS_DEV_MODE": "false",
        "CDS_TRUSTED_CLIENTS": str(client.trusted),
        "CDS_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "CDS_LOG_LEVEL": "WARNING",
        "CDS_DATABASE_URL": database,
        "CDS_AUDIT_SPOOL_DIR": str(work / "spool"),
        "CDS_AUDIT_PATIENT_KEY_SECRET": "bench-patient-key-secret-0123456789",
        "CDS_LINK_SECRET": "bench-link-secret-0123456789abcdef",
        # cold: the bodies repeat under wrk, so no cache keyed by a patient's content
        "CDS_MODEL_CACHE_SIZE": "0" if args.workload == "cold" else "20000",
        "CDS_FACTS_CACHE_SIZE": "0" if args.workload == "cold" else "1000",
        "CDS_SUGGESTION_CACHE_SIZE": "0" if args.workload == "cold" else "1024",
    }
    runs: dict[str, list[dict]] = {n: [] for n in names}
    tokens = work / "tokens"
    try:
        for round_ in range(args.rounds):
            for name in names:
                workers, threads, extra = CONFIGS[name]
                env = {**base_env, "CDS_THREADS": str(threads), **extra}
                server = Server(name, "service", port, workers, env,
                                checkout=args.baseline.resolve() if "baseline" in name else None)
                try:
                    client.tokens(aud, 400, tokens)
                    wrk_run(wrk, port, body_file, tokens, 2, args.connections)  # warm-up
                    client.tokens(aud, int(600 * args.seconds), tokens)
                    result = wrk_run(wrk, port, body_file, tokens, args.seconds, args.connections)
                finally:
                    server.stop()
                runs[name].append(result)
                print(f"round {round_ + 1} {name:20} {result['rps']:7.1f} req/s  p50 {result['p50_ms']:7.1f}"
                      f"  p95 {result['p95_ms']:7.1f}  p99 {result['p99_ms']:7.1f} ms"
                      f"  non-200 {result['non_200']}  socket errors {result['socket_errors']}", flush=True)
    finally:
        drop_schema()
        shutil.rmtree(work, ignore_errors=True)
    summary = {}
    print(f"\nmedian over {args.rounds} round(s), {args.connections} connections, {args.workload}:")
    for name in names:
        med = {k: statistics.median(r[k] for r in runs[name]) for k in ("rps", "p50_ms", "p95_ms", "p99_ms")}
        workers, threads, extra = CONFIGS[name]
        summary[name] = {"workers": workers, "threads": threads, "env": extra, "median": med,
                         "runs": runs[name]}
        print(f"| {name} | {workers} x {threads} | {med['rps']:.1f} | {med['p50_ms']:.1f}"
              f" | {med['p95_ms']:.1f}"
              f" | {med['p99_ms']:.1f} |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python", "bench/serving.py", *(argv if argv is not None else sys.argv[1:])]),
        "database": database.split("://", 1)[0], "connections": args.connections, "seconds": args.seconds,
        "workload": args.workload, "rounds": args.rounds, "configs": summary,
    }, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
