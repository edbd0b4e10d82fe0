"""Where the machine's CPU goes per call under load: the service's workers, PostgreSQL, wrk, the rest.

    python bench/cpu_split.py [--seconds 10] [--connections 8] [--workload cold|warm]
                              [--app service|spec_floor]

Serves the workload of ``bench/run.py`` (``typical-cold``: 200 patients, the caches of a patient's content
off; ``warm``: one patient, caches on) under ``cds serve --prod`` (or the spec floor), drives it with wrk at
``--connections`` for ``--seconds`` after a warm-up, and reads the CPU time (user + system, from /proc) that
each group of processes used meanwhile: the server's worker processes, its master, PostgreSQL's processes,
wrk, and the whole machine (/proc/stat). Prints milliseconds of CPU per answered call for each, so that the
service's cost per call can be set beside what one call costs in process (``bench/stages.py``).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from servers import Client, Server, bench_database, free_port, need_wrk, write_bodies, wrk_run  # noqa: E402
from workload import order_sign  # noqa: E402

SERVICE_PATH = "/cds-services/bone-health-order-sign"
TICK = os.sysconf("SC_CLK_TCK")


def _cpu(pid: int) -> float:
    """User + system CPU seconds of one process (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            pass
    return found


def _named(word: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if word in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


def _machine() -> float:
    """CPU seconds the whole machine spent busy (all but idle and iowait)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(values) - values[3] - values[4]) / TICK


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--workers", type=int, default=0, help="server processes (0: the service's default)")
    parser.add_argument("--workload", choices=["cold", "warm"], default="cold")
    parser.add_argument("--app", choices=["service", "spec_floor"], default="service")
    args = parser.parse_args(argv)
    wrk = need_wrk()
    work = Path(tempfile.mkdtemp(prefix="cds-cpu-"))
    client = Client(work)
    port = free_port()
    database, drop = bench_database(work, "auto")
    cold = args.workload == "cold"
    bodies = ([order_sign(f"cold-{i}", 40, seed=i) for i in range(200)] if cold
              else [order_sign("warm", 40)])
    body_file = write_bodies(work / "bodies.ndjson", bodies)
    aud = f"http://127.0.0.1:{port}{SERVICE_PATH}"
    client.tokens(aud, 6000, work / "warm-tokens")
    client.tokens(aud, int(3000 * args.seconds), work / "tokens")
    env = {
        "CDS_DEV_MODE": "false", "CDS_TRUSTED_CLIENTS": str(client.trusted),
        "CDS_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "CDS_LOG_LEVEL": "WARNING", "CDS_DATABASE_URL": database, "CDS_AUDIT_SPOOL_DIR": str(work / "spool"),
        "CDS_AUDIT_PATIENT_KEY_SECRET": "bench-patient-key-secret-0123456789",
        "CDS_LINK_SECRET": "bench-link-secret-0123456789abcdef", "SPEC_FLOOR_AUDIENCE": aud,
        "CDS_MODEL_CACHE_SIZE": "0" if cold else "20000", "CDS_FACTS_CACHE_SIZE": "0" if cold else "1000",
        "CDS_SUGGESTION_CACHE_SIZE": "0" if cold else "1024",
    }
    workers = args.workers or 2 * (os.cpu_count() or 1) + 1
    app = "service" if args.app == "service" else "bench.spec_floor:app"
    server = Server(args.app, app, port, workers, env)
    try:
        wrk_run(wrk, port, body_file, work / "warm-tokens", 2, args.connections)
        groups = {"server workers": _children(server.proc.pid), "server master": [server.proc.pid],
                  "PostgreSQL": _named("postgres:")}
        before = {name: {pid: _cpu(pid) for pid in pids} for name, pids in groups.items()}
        machine = _machine()
        children = os.times()  # wrk runs as our child: its CPU is counted once it has been waited for
        run = wrk_run(wrk, port, body_file, work / "tokens", args.seconds, args.connections)
        after = os.times()
        wrk_cpu = (after.children_user - children.children_user
                   + after.children_system - children.children_system)
        busy = _machine() - machine
        calls = run["requests"] - run.get("non_200", 0)
        print(f"{args.app}, {args.workload}, {args.connections} connections, {workers} workers: "
              f"{calls} calls, {run['rps']:.1f} req/s")
        spent = {name: sum(_cpu(pid) - start for pid, start in before[name].items())
                 for name in groups}
        spent["wrk"] = wrk_cpu
        spent["rest of the machine"] = busy - sum(spent.values())
        for name, seconds in spent.items():
            print(f"  {1000 * seconds / calls:6.2f} ms CPU per call  {name}")
        print(f"  {1000 * busy / calls:6.2f} ms CPU per call  the whole machine "
              f"({busy / args.seconds:.2f} of {os.cpu_count()} cores busy)")
    finally:
        server.stop()
        drop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
