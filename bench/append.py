"""Audit appends per second on PostgreSQL with 1, 4 and 16 concurrent writer processes.

    python bench/append.py [--writers 1,4,16] [--seconds 8] [--threads 1 | --calls-per-process 4]
                           [--designs chains,single,chains+jti,chains+claim]

Each writer is a separate process with its own ``AuditStore`` (as each server process has), appending
records through the store's real path (``AuditStore.submit``: the group-commit writer, the chain, the
record and its cards in one transaction, committed before ``submit`` returns) for ``--seconds``, with
``--threads`` request threads per process; or, with ``--calls-per-process K``, each writer is one
concurrent call and the calls run in as few processes of at most K request threads as they fit in (16
writers with K = 4: four processes of four threads, as four of the service's workers would hold them).
The records are copies of one real record of the service (an order-sign call with ``--observations``
Observations, about 16 KB of canonical JSON), each with its own
id and card uuids. Two designs, measured in the same run on the same throwaway schema:

    chains   each process appends to a chain of its own (``CDS_AUDIT_OWN_CHAINS`` on, the default)
    single   every process appends to one chain under one lock, reading the head in each transaction
             (``CDS_AUDIT_OWN_CHAINS`` off: the trail's earlier design), and no group commit

and, for the database token-id store, each record with the token id of its call (a new ``jti`` each time):

    chains+jti    the token id stored in a transaction of its own before the record (``JtiStore.remember``;
                  ``CDS_REPLAY_WITH_AUDIT`` off)
    chains+claim  the token id stored in the record's transaction, batched by the group-commit writer with
                  the records of concurrent calls (``CDS_REPLAY_WITH_AUDIT`` on, the default)

Every token id must be taken (a refusal fails the run), and all of them must be in ``seen_jti`` at the end.

Prints aggregate appends/s and the ratio to one writer of the same design, then verifies the trail
(``cds audit verify``'s checks) and drops the schema. ``--json PATH`` writes the figures.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import multiprocessing as mp
import os
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from run import Client  # noqa: E402
from workload import order_sign  # noqa: E402

SECRET = "append-bench-patient-key-secret-0123"
TOKEN_ISS = "https://ehr.example.org/bench"


def template_record(work: Path, observations: int) -> dict[str, Any]:
    """One record as the service writes it: a real order-sign call through the app, on SQLite."""
    from sqlalchemy import create_engine, text

    from cds import create_app

    client = Client(work)
    base, path = "http://localhost", "/cds-services/bone-health-order-sign"
    app = create_app(
        {
            "DEV_MODE": False,
            "TRUSTED_CLIENTS": str(client.trusted),
            "PUBLIC_URL": base,
            "DATABASE_URL": f"sqlite:///{work}/template.sqlite3",
            "AUDIT_SPOOL_DIR": str(work / "spool"),
            "AUDIT_PATIENT_KEY_SECRET": SECRET,
            "LINK_SECRET": SECRET,
            "AUDITOR_TOKENS": "",
            "LOG_LEVEL": "ERROR",
        }
    )
    client.tokens(base + path, 1, work / "token")
    response = app.test_client().post(
        path,
        json=order_sign("bench-append", observations),
        headers={"Authorization": f"Bearer {(work / 'token').read_text().strip()}"},
    )
    assert response.status_code == 200, response.get_data(as_text=True)[:300]
    app.extensions["cds.audit"].close()
    engine = create_engine(f"sqlite:///{work}/template.sqlite3")
    with engine.connect() as conn:
        content = conn.execute(
            text("SELECT content FROM audit_record ORDER BY seq DESC LIMIT 1")
        ).scalar_one()
    engine.dispose()
    return json.loads(content)


def fresh(template: dict[str, Any]) -> dict[str, Any]:
    content = copy.deepcopy(template)
    content["id"] = str(uuid.uuid4())
    content["time"] = dt.datetime.now(dt.UTC).isoformat()
    for card in content.get("cards") or []:
        card["uuid"] = str(uuid.uuid4())
    return content


def writer(
    url: str,
    design: str,
    template: dict[str, Any],
    threads: int,
    seconds: float,
    start: Any,
    counts: Any,
    index: int,
    spool: str,
) -> None:
    from cds.auth.jti_store import JtiStore
    from cds.db import engine_for
    from cds.ledger.spool import Spool
    from cds.ledger.store import AuditStore
    from cds.rules import pack as rulepack

    chain_design, _, tokens = design.partition("+")
    engine = engine_for(url)
    store = AuditStore(
        engine,
        rulepack.load(),
        SECRET.encode(),
        Spool(spool),
        own_chains=chain_design == "chains",
        group_commit=chain_design == "chains",
        checkpoint_seconds=2.0,
    )
    token_ids = JtiStore(engine) if tokens else None
    if token_ids is not None and tokens == "claim" and not store.take_claims(token_ids):
        raise SystemExit("the token-id store is not the audit database")
    expiry = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=30)
    refused = [0]

    def entry() -> dict[str, Any]:
        made: dict[str, Any] = {"kind": "call", "content": fresh(template)}
        if token_ids is not None:
            jti = str(uuid.uuid4())
            if tokens == "jti" and not token_ids.remember(TOKEN_ISS, jti, expiry):
                refused[0] += 1
            if tokens == "claim":
                made["claim"] = token_ids.claim(TOKEN_ISS, jti, expiry)
        return made

    store.submit(entry())  # connect, claim the chain
    done = [0] * threads

    def run(t: int, until: float) -> None:
        while time.monotonic() < until:
            store.submit(entry())  # raises TokenReplayed if a claim was refused
            done[t] += 1

    start.wait()
    until = time.monotonic() + seconds
    workers = [threading.Thread(target=run, args=(t, until)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    counts[index] = sum(done)
    if store.spool.count() or store.lost or refused[0]:
        counts[index] = -1  # an entry went to the spool or was lost: the figure would not be the database's
    store.close()
    engine.dispose()


def layout(writers: int, threads: int, calls_per_process: int) -> list[int]:
    """Request threads of each writer process: ``writers`` processes of ``threads`` each, or, with
    ``calls_per_process``, ``writers`` concurrent calls in as few processes of at most that many threads."""
    if calls_per_process <= 0:
        return [threads] * writers
    processes = -(-writers // calls_per_process)
    return [writers // processes + (1 if i < writers % processes else 0) for i in range(processes)]


def measure(
    url: str, design: str, template: dict[str, Any], threads: list[int], seconds: float, spool: str
) -> float:
    ctx = mp.get_context("spawn")
    n = len(threads)
    start = ctx.Barrier(n + 1)
    counts = ctx.Array("l", n)
    procs = [
        ctx.Process(target=writer, args=(url, design, template, t, seconds, start, counts, i, spool))
        for i, t in enumerate(threads)
    ]
    for p in procs:
        p.start()
    start.wait()
    for p in procs:
        p.join()
    if any(p.exitcode for p in procs) or min(counts) < 0:
        raise SystemExit(f"a writer failed ({design}, {n} writers): exit codes {[p.exitcode for p in procs]}")
    return sum(counts) / seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--writers", default="1,4,16")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--threads", type=int, default=1, help="request threads per writer process")
    parser.add_argument("--calls-per-process", type=int, default=0,
                        help="count --writers as concurrent calls, in processes of at most this many request "
                        "threads (4: the service's CDS_THREADS); 0: one process per writer")
    parser.add_argument("--observations", type=int, default=40)
    parser.add_argument("--designs", default="chains,single,chains+jti,chains+claim")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    from sqlalchemy import create_engine, text

    from cds.db import engine_for, ensure_schema
    from cds.review.verify import verify_all

    work = Path(tempfile.mkdtemp(prefix="cds-append-"))
    template = template_record(work, args.observations)
    size = len(json.dumps(template, sort_keys=True, separators=(",", ":")))
    base = os.environ.get("CDS_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
    schema = f"bench_append_{uuid.uuid4().hex[:8]}"
    admin = create_engine(base)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = f"{base}?options=-csearch_path%3D{schema}"
    results: dict[str, Any] = {
        "record_bytes": size,
        "threads": args.threads,
        "calls_per_process": args.calls_per_process,
        "seconds": args.seconds,
        "cpus": os.cpu_count(),
        "designs": {},
    }
    try:
        engine = engine_for(url)
        ensure_schema(engine)
        writers = [int(w) for w in args.writers.split(",")]
        expected_tokens = 0
        print(
            f"records of {size} bytes; "
            + (f"writers are concurrent calls, at most {args.calls_per_process} per process"
               if args.calls_per_process > 0 else f"{args.threads} thread(s) per writer process")
            + f"; {args.seconds:g} s each"
        )
        for design in args.designs.split(","):
            rates = {}
            for n in writers:
                shape = layout(n, args.threads, args.calls_per_process)
                rates[n] = measure(url, design, template, shape, args.seconds, str(work / "spool"))
                if "+" in design:
                    expected_tokens += round(rates[n] * args.seconds) + len(shape)  # and each process's first
                ratio = rates[n] / rates[writers[0]]
                print(f"  {design:12s} {n:3d} writer(s): {rates[n]:8.0f} appends/s  {ratio:5.2f}x one writer")
            results["designs"][design] = {
                str(n): {"appends_per_s": round(r), "ratio": round(r / rates[writers[0]], 2)}
                for n, r in rates.items()
            }
        if "chains" in results["designs"] and "single" in results["designs"]:
            top = str(writers[-1])
            vs = (
                results["designs"]["chains"][top]["appends_per_s"]
                / results["designs"]["single"][top]["appends_per_s"]
            )
            print(f"  chains / single at {top} writers: {vs:.2f}x")
        with engine.connect() as conn:
            stored = conn.execute(text("SELECT count(*) FROM seen_jti")).scalar_one()
            appended = conn.execute(text("SELECT count(*) FROM audit_record")).scalar_one()
        print(f"token ids stored: {stored} of {expected_tokens} (records: {appended})")
        results["token_ids_stored"] = stored
        if stored != expected_tokens:
            print("a token id is missing from seen_jti", file=sys.stderr)
            return 1
        began = time.monotonic()
        report = verify_all(engine)
        print(
            f"verify: {'OK' if report.ok else 'BROKEN'}: {report.records} records in {len(report.chains)} "
            f"chain(s), {report.checkpoints} checkpoint(s), {time.monotonic() - began:.1f} s"
            + ("" if report.ok else f" {report.problems}")
        )
        results["verified"] = {
            "ok": report.ok,
            "records": report.records,
            "chains": len(report.chains),
            "checkpoints": report.checkpoints,
        }
        engine.dispose()
        if args.json:
            args.json.write_text(json.dumps(results, indent=2) + "\n")
        return 0 if report.ok else 1
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


if __name__ == "__main__":
    sys.exit(main())
