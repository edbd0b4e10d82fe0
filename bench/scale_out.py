"""Scale-out on one machine: 1 and then 2 replicas of ``cds serve --prod`` behind a round-robin balancer,
one PostgreSQL, one Redis (docs/scaling.md).

    python bench/scale_out.py [--seconds 15] [--connections 8] [--workers N] [--quick]
    ./run.sh bench --scale-out [--quick]

- The database is a fresh schema in PostgreSQL (``CDS_BENCH_POSTGRES_URL``, default 127.0.0.1:5432/test),
  dropped at the end; the migrations run once (``cds audit migrate``) before any replica starts, and the
  replicas start with ``CDS_AUDIT_MIGRATE_ON_START=false``.
- The replay store is Redis (``CDS_REPLAY_REDIS_URL``, a key prefix of the run's own) when this checkout's
  settings have that setting and Redis answers at ``CDS_BENCH_REDIS_URL`` (default redis://127.0.0.1:6379/14);
  otherwise the database's ``seen_jti`` table, and the result says which.
- Replicas share the audit patient-key secret, the link secret, the trusted-client file and the public URL
  (the balancer's); each has its own spool folder. Each replica has ``--workers`` server processes.
- The balancer is bench/balancer.py (connection round-robin). Its cost is measured: the bare floor direct
  and through it, in the same run; the 1-replica service is also measured direct.
- Every answer is checked by wrk (status 200 and the expected cards, bench/wrk.lua); the same jti sent
  to both replicas at once must be accepted exactly once; ``cds audit verify`` runs on the shared
  database at the end and must pass.

Writes bench/results/scale-out.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from servers import (  # noqa: E402
    ROOT,
    SERVICE_PATH,
    Client,
    Server,
    bench_database,
    card_signature,
    free_port,
    need_wrk,
    write_bodies,
    wrk_run,
)
from workload import order_sign  # noqa: E402


class Balancer:
    def __init__(self, port: int, backends: list[int]):
        self.port = port
        argv = [sys.executable, str(HERE / "balancer.py"), "--port", str(port)]
        for b in backends:
            argv += ["--backend", f"127.0.0.1:{b}"]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=2):
                    return
            except OSError:
                if self.proc.poll() is not None or time.time() > deadline:
                    raise SystemExit("bench: the balancer did not start") from None
                time.sleep(0.2)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=20)


def redis_replay(work_prefix: str) -> tuple[dict[str, str], str]:
    """Environment for the Redis replay store, or none (and why) when it cannot be used here."""
    from cds import settings

    if not any(s.name == "REPLAY_REDIS_URL" for s in settings.SETTINGS):
        return {}, "database (seen_jti): this checkout has no CDS_REPLAY_REDIS_URL setting"
    url = os.environ.get("CDS_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
    host_port = url.split("://", 1)[1].split("/", 1)[0].rsplit("@", 1)[-1]
    host, _, port = host_port.partition(":")
    try:
        with socket.create_connection((host, int(port or 6379)), timeout=3) as s:
            s.sendall(b"PING\r\n")
            if not s.recv(64).startswith(b"+PONG"):
                raise OSError("no PONG")
    except OSError as exc:
        return {}, f"database (seen_jti): Redis at {host_port} did not answer ({exc})"
    env = {"CDS_REPLAY_REDIS_URL": url, "CDS_REPLAY_REDIS_PREFIX": f"bench-scale-{work_prefix}:"}
    return env, f"Redis ({host_port}, SET NX with expiry)"


def post(port: int, body: bytes, token: str) -> tuple[int, str]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{SERVICE_PATH}", data=body, method="POST",
                                 headers={"Content-Type": "application/json",
                                          "Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def one_token(client: Client, aud: str, work: Path) -> str:
    token_file = work / "probe.tokens"
    client.tokens(aud, 1, token_file)
    return token_file.read_text().strip()


def pick_seed(client: Client, aud: str, port: int, work: Path) -> tuple[int, str]:
    """The first workload seed whose typical patient gets at least one card, and that card signature."""
    for seed in range(40):
        status, text = post(port, json.dumps(order_sign("scale-0", 40, seed=seed)).encode(),
                            one_token(client, aud, work))
        if status != 200:
            raise SystemExit(f"bench: unexpected probe answer {status}: {text[:300]}")
        if card_signature(text):
            return seed, card_signature(text)
    raise SystemExit("bench: no workload seed below 40 gives a card; the answers could not be checked")


def same_jti_on_both(client: Client, aud: str, ports: list[int], body: bytes, work: Path,
                     count: int = 20) -> dict:
    """Each of ``count`` tokens sent to every replica at the same moment: accepted exactly once each."""
    token_file = work / "double.tokens"
    client.tokens(aud, count, token_file)
    tokens = token_file.read_text().split()
    accepted_once = 0
    statuses: list[list[int]] = []
    for token in tokens:
        answers: list[int] = []
        start = threading.Barrier(len(ports))

        def send(port: int, token: str = token, answers: list[int] = answers, start=start) -> None:
            start.wait()
            answers.append(post(port, body, token)[0])

        threads = [threading.Thread(target=send, args=(p,)) for p in ports]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        statuses.append(sorted(answers))
        accepted_once += answers.count(200) == 1 and all(s == 200 or s == 401 for s in answers)
    return {"tokens": count, "accepted_exactly_once": accepted_once, "statuses": statuses[:5]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--workers", type=int, default=(os.cpu_count() or 1) * 2 + 1,
                        help="server processes per replica")
    parser.add_argument("--quick", action="store_true", help="5 s per measurement")
    parser.add_argument("--out", default=str(HERE / "results"))
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds = 5
    wrk = need_wrk()
    work = Path(tempfile.mkdtemp(prefix="cds-scale-"))
    database, drop_schema = bench_database(work, "auto")
    if not database.startswith("postgresql"):
        raise SystemExit("bench: the scale-out run needs PostgreSQL "
                         "(CDS_BENCH_POSTGRES_URL or 127.0.0.1:5432)")
    client = Client(work)
    lb_port, ports = free_port(), [free_port(), free_port()]
    aud = f"http://127.0.0.1:{lb_port}{SERVICE_PATH}"
    replay_env, replay_store = redis_replay(uuid.uuid4().hex[:10])
    shared = {
        "CDS_DEV_MODE": "false", "CDS_TRUSTED_CLIENTS": str(client.trusted),
        "CDS_PUBLIC_URL": f"http://127.0.0.1:{lb_port}", "CDS_LOG_LEVEL": "WARNING",
        "CDS_DATABASE_URL": database, "CDS_AUDIT_PATIENT_KEY_SECRET": "bench-patient-key-secret-0123456789",
        "CDS_LINK_SECRET": "bench-link-secret-0123456789abcdef", "CDS_AUDIT_MIGRATE_ON_START": "false",
        "CDS_MODEL_CACHE_SIZE": "0", "CDS_FACTS_CACHE_SIZE": "0", "CDS_SUGGESTION_CACHE_SIZE": "0",
        **replay_env,  # bodies repeat: no cache
    }
    print(f"replay store: {replay_store}", flush=True)
    cds = str(Path(sys.executable).with_name("cds"))
    subprocess.run([cds, "audit", "migrate"], env={**os.environ, **shared}, check=True, cwd=ROOT,
                   stdout=subprocess.DEVNULL)
    # 200 patients whose data give the same cards (same values, other ids): every answer can be checked
    bodies: list[dict] = []
    body_file = work / "bodies.ndjson"
    expect = ""
    results: dict = {
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "cpus": os.cpu_count(),
        "command": " ".join(["python", "bench/scale_out.py", *(argv if argv is not None else sys.argv[1:])]),
        "replay_store": replay_store, "connections": args.connections, "seconds": args.seconds, "runs": [],
    }
    replicas: list[Server] = []
    try:
        for i, port in enumerate(ports):
            replicas.append(Server(f"replica {i + 1}", "service", port, args.workers,
                                   {**shared, "CDS_AUDIT_SPOOL_DIR": str(work / f"spool-{i + 1}")}))
            if i == 0:
                seed, expect = pick_seed(client, aud, port, work)
                bodies = [order_sign(f"scale-{i}", 40, seed=seed) for i in range(200)]
                body_file = write_bodies(work / "bodies.ndjson", bodies)
                for body in bodies[1:4]:  # other patients, same data: the same cards
                    status, text = post(port, json.dumps(body).encode(), one_token(client, aud, work))
                    if status != 200 or card_signature(text) != expect:
                        raise SystemExit(f"bench: unexpected probe answer {status}: {text[:300]}")
                results["seed"] = seed
                results["expected_cards"] = expect.rstrip("|").split("|")
                results["direct_1_replica"] = measure(wrk, client, aud, port, body_file, work, args, expect)
                print(f"1 replica, direct: {results['direct_1_replica']['rps']:.1f} req/s", flush=True)
            balancer = Balancer(lb_port, ports[: i + 1])
            try:
                run = measure(wrk, client, aud, lb_port, body_file, work, args, expect)
            finally:
                balancer.stop()
            run.update(replicas=i + 1, workers=args.workers)
            results["runs"].append(run)
            print(f"{i + 1} replica(s) through the balancer: {run['rps']:.1f} req/s p50 {run['p50_ms']:.1f} "
                  f"p99 {run['p99_ms']:.1f} ms; {run['checked']} answers checked, {run['bad']} bad",
                  flush=True)
        results["same_jti"] = same_jti_on_both(client, aud, ports, json.dumps(bodies[0]).encode(), work)
        print(f"same jti to both replicas at once: {results['same_jti']['accepted_exactly_once']} of "
              f"{results['same_jti']['tokens']} accepted exactly once", flush=True)
    finally:
        for r in replicas:
            r.stop()
    verify = subprocess.run([cds, "audit", "verify"], env={**os.environ, **shared}, cwd=ROOT,
                            capture_output=True, text=True)
    output = (verify.stdout + verify.stderr).strip()[-800:]
    results["audit_verify"] = {"exit": verify.returncode, "output": output}
    verified = re.search(r"(\d+) record\(s\) verified", output)
    answered = sum(r["checked"] for r in [*results["runs"], results["direct_1_replica"]])
    results["audit_verify"].update(records=int(verified.group(1)) if verified else None,
                                   answers_checked=answered)
    # every answered call has its record in the shared chain (warm-ups and probes add more)
    records_ok = verified is not None and int(verified.group(1)) >= answered
    print(f"cds audit verify: exit {verify.returncode}\n{output}\n"
          f"records in the chain >= answers checked ({answered}): {records_ok}", flush=True)
    results["balancer_cost"] = balancer_cost(wrk, work, body_file, args, lb_port, ports[0])
    print(f"balancer cost: {results['balancer_cost']}", flush=True)
    drop_schema()
    ok = (verify.returncode == 0 and records_ok and all(r["bad"] == 0 for r in results["runs"])
          and results["same_jti"]["accepted_exactly_once"] == results["same_jti"]["tokens"])
    results["all_checks_passed"] = ok
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "scale-out.json").write_text(json.dumps(results, indent=2))
    print(f"wrote {out / 'scale-out.json'}; all checks passed: {ok}")
    shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


def measure(wrk: str, client: Client, aud: str, port: int, body_file: Path, work: Path, args,
            expect: str) -> dict:
    tokens = work / "run.tokens"
    client.tokens(aud, 600, tokens)
    wrk_run(wrk, port, body_file, tokens, 2, args.connections, expect=expect)  # warm-up
    client.tokens(aud, int(1500 * args.seconds), tokens)
    run = wrk_run(wrk, port, body_file, tokens, args.seconds, args.connections, expect=expect)
    run["bad"] = run["non_200"] + run["wrong_cards"] + run["socket_errors"]
    return run


def balancer_cost(wrk: str, work: Path, body_file: Path, args, lb_port: int, floor_port: int) -> str:
    """The bare floor direct and through the balancer, same bodies and connections."""
    floor = Server("floor", "bench.floor:app", floor_port, args.workers, {})
    try:
        wrk_run(wrk, floor_port, body_file, None, 2, args.connections)
        direct = wrk_run(wrk, floor_port, body_file, None, args.seconds, args.connections)
        balancer = Balancer(lb_port, [floor_port])
        try:
            wrk_run(wrk, lb_port, body_file, None, 2, args.connections)
            through = wrk_run(wrk, lb_port, body_file, None, args.seconds, args.connections)
        finally:
            balancer.stop()
    finally:
        floor.stop()
    return (f"bare floor {direct['rps']:.0f} req/s direct (p50 {direct['p50_ms']:.2f} ms), "
            f"{through['rps']:.0f} req/s through the balancer (p50 {through['p50_ms']:.2f} ms): "
            f"{through['rps'] / direct['rps']:.2f} x; about "
            f"{max(0.0, 1000 / through['rps'] - 1000 / direct['rps']):.2f} ms per request at "
            f"{args.connections} connections")


if __name__ == "__main__":
    raise SystemExit(main())
