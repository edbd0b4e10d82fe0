"""Benchmark the service against the floor (a no-op Flask endpoint) under the production server.

    python bench/run.py [--seconds 15] [--connections 8] [--workers N] [--memory-requests 100000] [--quick]

Starts the service (JWT on, audit on) and the floor under gunicorn on local ports with the same workers,
drives both with wrk for a bounded time per workload, and reports throughput and p50/p95/p99 latency for
both and their ratios:

    typical-cold   a typical order-sign (Patient, ~40 Observations, 3 MedicationRequests, 1 draft order),
                   a different patient on every request and the warm-patient caches (models, facts) turned off
    warm           the same patient again and again (the caches on), as order-select then order-sign do
    scale-N        one patient with N = 10, 100, 1000 Observations (all in one prefetch Bundle)
    memory         N requests in a row: resident memory of the workers after warm-up and at the end

Writes bench/results/latest.json and bench/results/latency-vs-resources.png. Needs wrk (Debian package
`wrk`; installed with apt-get when missing and running as root).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from workload import order_sign, order_sign_all_in_one  # noqa: E402

SERVICE_PATH = "/cds-services/bone-health-order-sign"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def need_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], check=True, stdout=subprocess.DEVNULL,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        found = shutil.which("wrk")
    if not found:
        raise SystemExit("bench: wrk is required (Debian: apt-get install wrk)")
    return found


class Client:
    """A CDS client key pair trusted by the service under test, signing one token per request."""

    def __init__(self, workdir: Path):
        import jwt
        from cryptography.hazmat.primitives.asymmetric import ec

        self.jwt = jwt
        self.key = ec.generate_private_key(ec.SECP384R1())
        public = jwt.algorithms.ECAlgorithm.to_jwk(self.key.public_key(), as_dict=True)
        public.update(kid="bench", alg="ES384", use="sig")
        self.iss = "urn:cds:bench-client"
        self.trusted = workdir / "trusted-clients.json"
        self.trusted.write_text(json.dumps({"clients": [{"iss": self.iss, "jwks": {"keys": [public]}}]}))

    def tokens(self, aud: str, count: int, path: Path) -> None:
        now = int(time.time())
        with path.open("w") as out:
            for _ in range(count):
                claims = {"iss": self.iss, "aud": aud, "iat": now, "exp": now + 3600, "jti": uuid.uuid4().hex}
                out.write(self.jwt.encode(claims, self.key, algorithm="ES384",
                                          headers={"kid": "bench", "typ": "JWT"}) + "\n")


class Server:
    """The service under ``cds serve --prod`` (gunicorn), or the floor app under the same gunicorn config."""

    def __init__(self, name: str, app: str, port: int, workers: int, env: dict[str, str]):
        self.name, self.port = name, port
        if app == "service":
            argv = [str(Path(sys.executable).with_name("cds")), "serve", "--prod", "--host", "127.0.0.1",
                    "--port", str(port)]
            env = {**env, "CDS_WORKERS": str(workers)}
        else:
            argv = [sys.executable, "-m", "gunicorn", "--config", "python:cds.web.gunicorn_conf", "--workers",
                    str(workers), "--bind", f"127.0.0.1:{port}", app]
        self.proc = subprocess.Popen(
            argv, cwd=ROOT, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            start_new_session=True)
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                if self.proc.poll() is not None:
                    raise SystemExit(
                        f"bench: {name} failed to start:\n{self.proc.stderr.read().decode()[-3000:]}"
                    ) from None
                time.sleep(0.3)
        raise SystemExit(f"bench: {name} did not answer /health within 60 s")

    def worker_rss_kb(self) -> int:
        total = 0
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        for pid in children.read_text().split() if children.exists() else []:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        return total

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(self.proc.pid, signal.SIGKILL)


def bench_database(work: Path, choice: str) -> tuple[str, object]:
    """The audit/replay database for the run: a fresh PostgreSQL schema (dropped afterwards) or SQLite."""
    if choice not in ("auto", "sqlite"):
        return choice, lambda: None
    if choice == "auto":
        from sqlalchemy import create_engine, text
        from sqlalchemy.exc import OperationalError

        base = os.environ.get("CDS_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
        schema = f"bench_{uuid.uuid4().hex[:10]}"
        admin = create_engine(base, connect_args={"connect_timeout": 3})
        try:
            with admin.begin() as conn:
                conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        except OperationalError:
            admin.dispose()
        else:
            def drop() -> None:
                with admin.begin() as conn:
                    conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
                admin.dispose()

            return f"{base}?options=-csearch_path%3D{schema}", drop
    return f"sqlite:///{work}/audit.sqlite3", lambda: None


def wrk_run(wrk: str, port: int, bodies: Path, tokens: Path | None, seconds: float, connections: int,
            threads: int = 2) -> dict:
    threads = max(1, min(threads, connections))  # wrk needs a connection per thread
    env = {
        **os.environ,
        "BENCH_BODIES": str(bodies),
        "BENCH_TOKENS": str(tokens or ""),
        "BENCH_PATH": SERVICE_PATH,
        "BENCH_THREADS": str(threads),
    }
    out = subprocess.run(
        [
            wrk,
            "-t",
            str(threads),
            "-c",
            str(connections),
            "-d",
            f"{max(1, int(seconds))}s",
            "--latency",
            "-s",
            str(HERE / "wrk.lua"),
            f"http://127.0.0.1:{port}",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=seconds + 120,
    )
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if line is None:
        raise SystemExit(f"bench: wrk gave no result:\n{out.stdout}\n{out.stderr}")
    result = json.loads(line[len("BENCH_JSON ") :])
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    if out.stderr.strip():
        result["stderr"] = out.stderr.strip()[:600]
    return result


def write_bodies(path: Path, bodies: list[dict]) -> Path:
    path.write_text("".join(json.dumps(b, separators=(",", ":")) + "\n" for b in bodies))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--workers", type=int, default=(os.cpu_count() or 1) * 2 + 1)
    parser.add_argument("--memory-requests", type=int, default=100_000)
    parser.add_argument("--only", help="comma-separated workloads to run (typical-cold, warm, scale-10, "
                                       "scale-100, scale-1000, memory); default all")
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
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.memory_requests = 5, 5_000
    wrk = need_wrk()
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="cds-bench-"))
    client = Client(work)
    port, floor_port = free_port(), free_port()
    database, drop_schema = bench_database(work, args.database)
    base_env = {
        "CDS_DEV_MODE": "false",
        "CDS_TRUSTED_CLIENTS": str(client.trusted),
        "CDS_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "CDS_LOG_LEVEL": "WARNING",
        "CDS_DATABASE_URL": database,
        "CDS_AUDIT_SPOOL_DIR": str(work / "spool"),
        "CDS_AUDIT_PATIENT_KEY_SECRET": "bench-patient-key-secret-0123456789",
    }
    aud = f"http://127.0.0.1:{port}{SERVICE_PATH}"
    results: dict = {
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "database": database.split("://", 1)[0],
        "command": " ".join(["python", "bench/run.py", *(argv or sys.argv[1:])]),
        "workers": args.workers,
        "connections": args.connections,
        "seconds": args.seconds,
        "workloads": {},
    }
    per_second_guess = 1000

    def measure(name: str, bodies: list[dict], cache: bool, connections: int | None = None) -> None:
        connections = connections or args.connections
        body_file = write_bodies(work / f"{name}.ndjson", bodies)
        tokens = work / f"{name}.tokens"
        client.tokens(aud, int(per_second_guess * args.seconds), tokens)
        env = {**base_env, "CDS_MODEL_CACHE_SIZE": "20000" if cache else "0",
               "CDS_FACTS_CACHE_SIZE": "1000" if cache else "0"}  # cold bodies repeat under wrk: no cache
        service = Server("service", "service", port, args.workers, env)
        try:
            wrk_run(wrk, port, body_file, tokens, 2, connections)  # warm-up
            client.tokens(aud, int(per_second_guess * args.seconds), tokens)
            svc = wrk_run(wrk, port, body_file, tokens, args.seconds, connections)
        finally:
            service.stop()
        floor = Server("floor", "bench.floor:app", floor_port, args.workers, {})
        try:
            wrk_run(wrk, floor_port, body_file, None, 2, connections)
            flo = wrk_run(wrk, floor_port, body_file, None, args.seconds, connections)
        finally:
            floor.stop()
        results["workloads"][name] = {
            "connections": connections,
            "service": svc,
            "floor": flo,
            "throughput_ratio": svc["rps"] / flo["rps"],
            "resources": sum(
                len((v or {}).get("entry", [])) if isinstance(v, dict) and "entry" in v else 1
                for v in bodies[0]["prefetch"].values()
                if v is not None
            )
            + 1,
        }
        print(
            f"{name:14} service {svc['rps']:8.1f} req/s p50 {svc['p50_ms']:7.2f} p99 {svc['p99_ms']:7.2f} ms"
            f" (non-200 {svc['non_200']}) | floor {flo['rps']:8.1f} req/s p99 {flo['p99_ms']:6.2f} ms"
            f" | ratio {svc['rps'] / flo['rps']:.3f}",
            flush=True,
        )

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
    if not chosen("memory"):
        drop_schema()
        (out_dir / "partial.json").write_text(json.dumps(results, indent=2))
        print(f"wrote {out_dir / 'partial.json'}")
        return 0

    # memory: many requests in a row against one service, RSS after warm-up vs at the end
    body_file = write_bodies(work / "memory.ndjson", [order_sign(f"mem-{i}", 40, seed=i) for i in range(50)])
    service = Server("service", "service", port, args.workers, {**base_env, "CDS_MODEL_CACHE_SIZE": "20000"})
    try:
        tokens = work / "memory.tokens"
        client.tokens(aud, 3000, tokens)
        wrk_run(wrk, port, body_file, tokens, 3, args.connections)
        before = service.worker_rss_kb()
        done, started, rate = 0, time.time(), 500.0
        while done < args.memory_requests:
            chunk = 10
            client.tokens(aud, int(rate * chunk * 1.5) + 100, tokens)
            run = wrk_run(wrk, port, body_file, tokens, chunk, args.connections)
            done += run["requests"]
            rate = max(run["rps"], 50.0)
            if run["non_200"]:
                print(f"memory run: {run['non_200']} non-200 answers", flush=True)
        after = service.worker_rss_kb()
    finally:
        service.stop()
    results["memory"] = {
        "requests": done,
        "rss_after_warmup_kb": before,
        "rss_end_kb": after,
        "growth_percent": 100 * (after - before) / before,
        "seconds": time.time() - started,
    }
    print(
        f"memory: {done} requests, worker RSS {before} kB -> {after} kB "
        f"({results['memory']['growth_percent']:+.1f} %)",
        flush=True,
    )

    drop_schema()
    (out_dir / "latest.json").write_text(json.dumps(results, indent=2))
    plot(results, out_dir / "latency-vs-resources.png")
    print(f"wrote {out_dir / 'latest.json'} and {out_dir / 'latency-vs-resources.png'}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [10, 100, 1000]
    series = {
        q: [results["workloads"][f"scale-{n}"]["service"][f"{q}_ms"] for n in sizes] for q in ("p50", "p99")
    }
    floor = [results["workloads"][f"scale-{n}"]["floor"]["p50_ms"] for n in sizes]
    fig, ax = plt.subplots(figsize=(6, 4))
    for q, values in series.items():
        ax.plot(sizes, values, marker="o", label=f"service {q}")
    ax.plot(sizes, floor, marker="x", linestyle="--", label="floor p50")
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
