"""Where the time of one hook call goes: CPU time per stage, in process, cold and warm.

    python bench/stages.py [--requests 300] [--observations 40]

Runs the real app (JWT on, audit on, database as ``--database``) through Flask's test client and times
each stage by wrapping the functions that do it: reading the body, checking the client token (with the
replay store), the facts cache's key (a digest of what the facts come from), FHIR validation, facts, the
rules engine, findings and cards, and the audit record. The remainder is Flask, the envelope, prefetch
bookkeeping and the response. Prints milliseconds per call, for three runs: cold (a new patient each call:
every call misses the facts cache), warm with only the model cache, and warm with both caches.
"""

from __future__ import annotations

import argparse
import collections
import functools
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from servers import Client, bench_database  # noqa: E402
from workload import order_sign  # noqa: E402

SPENT: dict[str, float] = collections.defaultdict(float)


def timed(name: str, func):
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        started = time.process_time()
        try:
            return func(*args, **kwargs)
        finally:
            SPENT[name] += time.process_time() - started

    return wrapper


def instrument(app) -> None:
    from cds.call.service import HookService
    from cds.decide import evaluate
    from cds.fhir import parse as fhir_parse
    from cds.web import api

    if not hasattr(api._body, "__wrapped__"):  # module functions are shared by the runs: wrapped once
        api._body = timed("read and parse the JSON body", api._body)
        HookService._derived_key = timed("facts cache key (digest of the call's content)",
                                         HookService._derived_key)
        fhir_parse.parse_all = timed("FHIR validation (prefetch)", fhir_parse.parse_all)
        evaluate.render_card = timed("findings to cards", evaluate.render_card)
    verifier = app.extensions["cds.auth"]
    verifier.verify = timed("verify the client JWT (incl. jti store)", verifier.verify)
    service = app.extensions["cds.service"]
    evaluator = app.extensions["cds.evaluator"]
    evaluator.facts = timed("facts", evaluator.facts)
    evaluator.run_facts = timed("rules engine", evaluator.run_facts)
    service.audit.record_call = timed("audit record", service.audit.record_call)
    suppression = getattr(service, "suppression", None)  # (a checkout from before suppression has none)
    if suppression is not None:
        suppression.apply = timed("suppression (with its history read)", suppression.apply)
        if suppression.history is not None:
            suppression.history.card_history = timed("suppression: the history read",
                                                     suppression.history.card_history)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--observations", type=int, default=40)
    parser.add_argument("--database", default="auto")
    args = parser.parse_args()
    from cds import create_app

    work = Path(tempfile.mkdtemp(prefix="cds-stages-"))
    client = Client(work)
    database, drop = bench_database(work, args.database)
    base = "http://localhost"
    path = "/cds-services/bone-health-order-sign"
    results = {}
    for label, cache, facts_cache, bodies in (
        ("cold (a new patient each call, model cache off; facts cache on, every call a miss)", 0, 1_000,
         [order_sign(f"c{i}", args.observations, seed=i) for i in range(args.requests)]),
        ("warm, model cache only (the same patient again, facts cache off)", 20_000, 0,
         [order_sign("w", args.observations)]),
        ("warm (the same patient again, both caches on)", 20_000, 1_000,
         [order_sign("w", args.observations)]),
    ):
        app = create_app(
            {
                "DEV_MODE": False,
                "TRUSTED_CLIENTS": str(client.trusted),
                "PUBLIC_URL": base,
                "DATABASE_URL": database,
                "AUDIT_SPOOL_DIR": str(work / "spool"),
                "AUDIT_PATIENT_KEY_SECRET": "stages-patient-key-secret-0123",
                "LOG_LEVEL": "WARNING",
                "MODEL_CACHE_SIZE": cache,
                "FACTS_CACHE_SIZE": facts_cache,
            }
        )
        instrument(app)
        http = app.test_client()
        raw = [json.dumps(b).encode() for b in bodies]
        tokens_file = work / "tokens"
        client.tokens(base + path, args.requests + 20, tokens_file)
        tokens = tokens_file.read_text().split()
        for i in range(20):  # warm-up: imports, connections, the warm patient's models
            http.post(
                path,
                data=raw[i % len(raw)],
                content_type="application/json",
                headers={"Authorization": f"Bearer {tokens.pop()}"},
            )
        SPENT.clear()
        started = time.process_time()
        for i in range(args.requests):
            response = http.post(
                path,
                data=raw[i % len(raw)],
                content_type="application/json",
                headers={"Authorization": f"Bearer {tokens.pop()}", "X-Run": uuid.uuid4().hex},
            )
            assert response.status_code == 200, response.get_data(as_text=True)[:300]
        total = (time.process_time() - started) / args.requests * 1000
        stages = {name: spent / args.requests * 1000 for name, spent in SPENT.items()}
        stages["everything else (Flask, envelope, prefetch, response)"] = total - sum(stages.values())
        results[label] = {"total_ms": total, "stages_ms": stages}
        print(f"\n{label}: {total:.2f} ms CPU per call")
        for name, ms in sorted(stages.items(), key=lambda kv: -kv[1]):
            print(f"  {ms:6.2f} ms  {name}")
    drop()
    print(json.dumps(results, indent=2), file=open(HERE / "results" / "stages.json", "w"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
