"""Token replay store: ``remember()`` throughput and latency, the database store against the Redis store.

    python bench/replay.py [--seconds 5] [--processes 1,4] [--rounds 2] [--out bench/results]

Each store is the one the service builds (``JtiStore`` on SQLite and on PostgreSQL, ``RedisJtiStore``),
driven directly, without HTTP: separate processes (spawned, one store each, as the server's processes have)
start together and call ``remember(iss, new jti, expiry)`` in a loop for ``--seconds``; every call is
timed. Each call must answer True (a new token id) and, at the end, a replayed id must answer False, or
the run fails. Stores and process counts are measured one after another in the same run, ``--rounds``
times in alternating order (the median round is reported), so that the ratios compare like with like on
a loaded machine. Ratios are to the database stores at the same process count.

PostgreSQL: ``CDS_BENCH_POSTGRES_URL`` (default the local ``test`` database), a fresh schema dropped
afterwards. Redis: ``CDS_BENCH_REDIS_URL`` (default database 14 of 127.0.0.1:6379), a fresh key prefix
deleted afterwards. A store that does not answer is left out, saying why. Results go to
``<out>/replay.json``; the table is printed in Markdown.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing
import os
import platform
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from cds.auth.jti_redis import RedisJtiStore  # noqa: E402
from cds.auth.jti_store import JtiStore  # noqa: E402

ISS = "https://ehr.example.org/bench"
PG_URL = os.environ.get("CDS_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("CDS_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")


def open_store(kind: str, where: str) -> JtiStore | RedisJtiStore:
    if kind == "redis":
        url, prefix = where.split(" ", 1)
        return RedisJtiStore.from_url(url, timeout=5.0, prefix=prefix)
    return JtiStore.from_url(where)


def close_store(store: JtiStore | RedisJtiStore) -> None:
    if isinstance(store, RedisJtiStore):
        store.close()
    else:
        store.engine.dispose()


def _worker(kind: str, where: str, seconds: float, ready, start, results) -> None:
    store = open_store(kind, where)
    expiry = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=30)
    store.remember(ISS, f"warm-up-{uuid.uuid4()}", expiry)  # connection, schema: not measured
    tag = uuid.uuid4().hex
    latencies: list[float] = []
    refused = 0
    ready.put(os.getpid())
    start.wait(timeout=300)
    end = time.perf_counter() + seconds
    n = 0
    while True:
        began = time.perf_counter()
        if began >= end:
            break
        if not store.remember(ISS, f"{tag}-{n}", expiry):
            refused += 1
        latencies.append(time.perf_counter() - began)
        n += 1
    replay_refused = not store.remember(ISS, f"{tag}-0", expiry)
    close_store(store)
    results.put({"calls": n, "refused": refused, "replay_refused": replay_refused, "latencies": latencies})


def measure(kind: str, where: str, processes: int, seconds: float) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    ready, start, results = ctx.Queue(), ctx.Event(), ctx.Queue()
    children = [ctx.Process(target=_worker, args=(kind, where, seconds, ready, start, results))
                for _ in range(processes)]
    for child in children:
        child.start()
    for _ in children:  # every child has imported, connected and made its warm-up call
        ready.get(timeout=300)
    start.set()
    parts = [results.get(timeout=seconds + 300) for _ in children]
    for child in children:
        child.join(timeout=60)
        if child.exitcode != 0:
            raise SystemExit(f"replay bench: a {kind} worker failed (exit {child.exitcode})")
    calls = sum(p["calls"] for p in parts)
    if any(p["refused"] for p in parts) or not all(p["replay_refused"] for p in parts):
        raise SystemExit(f"replay bench: the {kind} store refused a new token id or accepted a replay")
    latencies = sorted(x for p in parts for x in p["latencies"])
    return {"store": kind, "processes": processes, "calls": calls, "per_second": calls / seconds,
            "p50_ms": 1000 * _quantile(latencies, 0.50), "p99_ms": 1000 * _quantile(latencies, 0.99)}


def _quantile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def postgres_schema() -> tuple[str | None, Callable[[], None], str]:
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import OperationalError

    schema = f"bench_replay_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_URL, connect_args={"connect_timeout": 3})
    try:
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    except OperationalError as exc:
        admin.dispose()
        return None, lambda: None, f"PostgreSQL unreachable at {PG_URL}: {str(exc.orig).splitlines()[0]}"

    def drop() -> None:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()

    return f"{PG_URL}?options=-csearch_path%3D{schema}", drop, ""


def redis_prefix() -> tuple[str | None, Callable[[], None], str]:
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_timeout=10, socket_connect_timeout=5)
    try:
        client.ping()
    except redis.RedisError as exc:
        return None, lambda: None, f"no Redis answers at {REDIS_URL} ({type(exc).__name__})"
    prefix = f"cds-bench-{uuid.uuid4().hex[:10]}:"

    def drop() -> None:
        for batch in _batches(client.scan_iter(match=prefix + "*", count=1000), 1000):
            client.delete(*batch)
        client.close()

    return f"{REDIS_URL} {prefix}", drop, ""


def _batches(items: Any, size: int) -> Any:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0,
                        help="measured time per store and process count")
    parser.add_argument("--processes", default="1,4", help="comma-separated process counts")
    parser.add_argument("--rounds", type=int, default=2, help="rounds, in alternating order; the median "
                        "round per store and process count is reported")
    parser.add_argument("--out", default=str(HERE / "results"))
    args = parser.parse_args(argv)
    counts = [int(p) for p in args.processes.split(",") if p.strip()]

    started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    work = Path(tempfile.mkdtemp(prefix="cds-bench-replay-"))
    stores: dict[str, str] = {"sqlite": f"sqlite:///{work}/replay.sqlite3"}
    cleanups: list[Callable[[], None]] = []
    skipped: dict[str, str] = {}
    for kind, opener in (("postgresql", postgres_schema), ("redis", redis_prefix)):
        where, drop, why = opener()
        cleanups.append(drop)
        if where is None:
            skipped[kind] = why
            print(f"replay bench: {kind} left out: {why}", file=sys.stderr)
        else:
            stores[kind] = where
    runs: dict[tuple[str, int], list[dict[str, Any]]] = {}
    try:
        for r in range(args.rounds):
            order = list(stores.items()) if r % 2 == 0 else list(reversed(stores.items()))
            for processes in counts:
                for kind, where in order:
                    result = measure(kind, where, processes, args.seconds)
                    runs.setdefault((kind, processes), []).append(result)
                    print(f"round {r + 1}: {kind:10} {processes} process(es): {result['per_second']:8.0f}/s  "
                          f"p50 {result['p50_ms']:.2f} ms  p99 {result['p99_ms']:.2f} ms", file=sys.stderr)
    finally:
        for drop in cleanups:
            drop()
    rows = [_median_round(runs[(kind, p)]) for p in counts for kind in stores]
    for row in rows:
        for base in ("sqlite", "postgresql"):
            ref = next((x for x in rows if x["store"] == base and x["processes"] == row["processes"]), None)
            row[f"x_{base}"] = row["per_second"] / ref["per_second"] if ref else None
    report = {"when": started, "cpus": os.cpu_count(),
              "python": platform.python_version(), "seconds": args.seconds, "rounds": args.rounds,
              "command": "python bench/replay.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "skipped": skipped, "rows": rows}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "replay.json").write_text(json.dumps(report, indent=2) + "\n")
    print(markdown(report))
    return 0


def _median_round(results: list[dict[str, Any]]) -> dict[str, Any]:
    ordered = sorted(results, key=lambda r: r["per_second"])
    chosen = dict(ordered[(len(ordered) - 1) // 2])
    chosen["rounds_per_second"] = [round(r["per_second"]) for r in results]
    return chosen


def markdown(report: dict[str, Any]) -> str:
    def ratio(value: float | None) -> str:
        return f"{value:.2f}×" if value is not None else "—"

    lines = [f"Run of {report['when']} on {report['cpus']} CPUs, Python {report['python']}, "
             f"{report['seconds']:g} s per measurement, median of {report['rounds']} rounds: "
             f"`{report['command'].strip()}`", "",
             "| store | processes | remember()/s | p50 ms | p99 ms | × SQLite | × PostgreSQL |",
             "|---|---|---|---|---|---|---|"]
    for row in report["rows"]:
        lines.append(f"| {row['store']} | {row['processes']} | {row['per_second']:,.0f} | "
                     f"{row['p50_ms']:.2f} | {row['p99_ms']:.2f} | {ratio(row['x_sqlite'])} | "
                     f"{ratio(row['x_postgresql'])} |")
    for kind, why in report["skipped"].items():
        lines.append(f"\n{kind} left out: {why}")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
