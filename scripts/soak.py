#!/usr/bin/env python3
"""Soak the service: two `cds serve --prod` processes sharing one PostgreSQL schema, many threads, many
patients, every answer checked against that patient's own expected cards.

Patients are made from the scenario fixtures (``fixtures/scenarios`` and ``fixtures/<rule-id>/``): each
gets its own id and its lab and DXA values shifted by a patient-specific amount, so that two patients made
from one scenario get different card text. Each patient's expected cards are computed beforehand, one
patient at a time, in this process (the same rule pack, no concurrency). Then the threads send the calls,
each with a fresh token, alternating between the two services; every response must be 200 with exactly the
expected cards (a card of another patient, or another patient's value in the text, is a failure).

Afterwards: the audit trail (one chain across both processes) verifies, holds exactly one record per call,
and each worker's memory (RSS) after the run is compared with its memory after the warm-up.

    .venv/bin/python scripts/soak.py --requests 20000              # PostgreSQL from CDS_TEST_POSTGRES_URL
"""

from __future__ import annotations

import argparse
import concurrent.futures
import copy
import datetime as dt
import json
import os
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import requests
from sqlalchemy import create_engine, func, select, text

sys.path.insert(0, str(Path(__file__).resolve().parent))
from service_process import ROOT, service, sign  # noqa: E402

PG_URL = os.environ.get("CDS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
SERVICES = {
    "patient-view": "bone-health-patient-view",
    "order-select": "bone-health-order-select",
    "order-sign": "bone-health-order-sign",
}


# -- patients ------------------------------------------------------------------------------------------------


def scenario_bundles() -> list[tuple[str, dict[str, Any]]]:
    """(hook, bundle) of every fixture that has a sidecar saying which hook it is for."""
    out = []
    for path in sorted((ROOT / "fixtures").glob("*/*.json")):
        if path.name.endswith(".expected.json"):
            continue
        sidecar = path.with_name(path.name[:-5] + ".expected.json")
        if not sidecar.exists():
            continue
        hook = json.loads(sidecar.read_text()).get("hook")
        if hook in SERVICES:
            out.append((hook, json.loads(path.read_text())))
    return out


def _rename(node: Any, old: str, new: str) -> Any:
    if isinstance(node, dict):
        return {k: _rename(v, old, new) for k, v in node.items()}
    if isinstance(node, list):
        return [_rename(v, old, new) for v in node]
    if isinstance(node, str) and node in (old, f"Patient/{old}"):
        return node.replace(old, new)
    return node


def make_patient(k: int, scenarios: list[tuple[str, dict[str, Any]]]) -> tuple[str, dict[str, Any]]:
    """Patient ``k``: a scenario with its own id and values shifted by ``(k // len(scenarios)) * 0.1``."""
    from cds.toolkit.offline import hook_request

    hook, bundle = scenarios[k % len(scenarios)]
    bundle = copy.deepcopy(bundle)
    shift = round((k // len(scenarios)) * 0.1, 1)
    old = next(
        (
            e["resource"]["id"]
            for e in bundle.get("entry", [])
            if e.get("resource", {}).get("resourceType") == "Patient"
        ),
        None,
    )
    new = f"soak-{k:05d}"
    if old:
        bundle = _rename(bundle, old, new)
    for entry in bundle.get("entry", []):
        quantity = entry.get("resource", {}).get("valueQuantity")
        if isinstance(quantity, dict) and isinstance(quantity.get("value"), int | float) and shift:
            quantity["value"] = round(quantity["value"] + shift, 2)
    return hook, hook_request(bundle, hook)


def _explain(node: Any) -> bool:
    return isinstance(node, dict) and node.get("label") == "Why this card?"


def normalise(cards: list[dict[str, Any]]) -> list[Any]:
    """Cards without what differs per call (uuids, the "Why this card?" link to this call's record)."""

    def strip(node: Any) -> Any:
        if isinstance(node, dict):
            return {
                k: strip(v)
                for k, v in node.items()
                if k != "uuid" and not (k == "links" and all(_explain(x) for x in v))
            }
        if isinstance(node, list):
            return [strip(v) for v in node if not _explain(v)]
        return node

    return sorted((strip(c) for c in cards), key=lambda c: json.dumps(c, sort_keys=True))


def local_service() -> Any:
    """The service's ``HookService`` as ``create_app`` builds it (audit on a throw-away SQLite)."""
    import tempfile

    from cds import create_app

    where = Path(tempfile.mkdtemp(prefix="cds-soak-expected-"))
    app = create_app(
        {
            "DATABASE_URL": f"sqlite:///{where}/audit.sqlite3",
            "METRICS_ENABLED": False,
            "AUDIT_SPOOL_DIR": str(where / "spool"),
            "AUDIT_SECRET_FILE": str(where / "secret"),
            "DEV_CLIENT_DIR": str(where / "dev-client"),
        }
    )
    return app.extensions["cds.service"]


def expected_cards(patients: list[tuple[str, dict[str, Any]]], now: dt.datetime) -> list[list[Any]]:
    """Each patient's cards from the service's own code path, in this process, one patient at a time."""
    hook_service = local_service()
    return [
        normalise(hook_service.call(SERVICES[hook], copy.deepcopy(body), now=now)["cards"])
        for hook, body in patients
    ]


def cards_in_threads(
    order: list[int], patients: int, threads: int, now_iso: str
) -> list[tuple[int, list[Any]]]:
    """In this process: evaluate patients ``order`` (indices, repeats allowed) from ``threads`` threads at
    once; return ``(index, cards)`` per call. Used by the multi-process isolation test."""
    scenarios = scenario_bundles()
    people = {k: make_patient(k, scenarios) for k in set(order)}
    assert all(k < patients for k in order)
    hook_service = local_service()
    now = dt.datetime.fromisoformat(now_iso)

    def one(k: int) -> tuple[int, list[Any]]:
        hook, body = people[k]
        return k, normalise(hook_service.call(SERVICES[hook], copy.deepcopy(body), now=now)["cards"])

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        return list(pool.map(one, order))


# -- the database --------------------------------------------------------------------------------------------


def create_schema(base_url: str = PG_URL) -> tuple[str, str]:
    """A fresh schema; returns (its name, a URL whose search_path is that schema)."""
    schema = f"soak_{uuid.uuid4().hex[:10]}"
    admin = create_engine(base_url, connect_args={"connect_timeout": 3})
    try:
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    finally:
        admin.dispose()
    sep = "&" if "?" in base_url else "?"
    return schema, f"{base_url}{sep}options=-csearch_path%3D{schema}"


def drop_schema(schema: str, base_url: str = PG_URL) -> None:
    admin = create_engine(base_url)
    try:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    finally:
        admin.dispose()


def audit_figures(url: str) -> tuple[int, int, str | None]:
    """(records stored, records whose chain links were checked, the first break or None)."""
    from cds.ledger.schema import audit_record
    from cds.review import queries

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            stored = conn.execute(select(func.count()).select_from(audit_record)).scalar_one()
        checked, broken = queries.verify_chain(engine)
        return stored, checked, None if broken is None else str(broken)
    finally:
        engine.dispose()


# -- the run -------------------------------------------------------------------------------------------------


def run_soak(
    total: int,
    *,
    patients: int = 200,
    threads: int = 16,
    workers: int = 2,
    base_url: str = PG_URL,
    folder: Path | None = None,
    log: Any = print,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    import tempfile

    folder = Path(folder or tempfile.mkdtemp(prefix="cds-soak-"))
    now = dt.datetime.now(dt.UTC)
    scenarios = scenario_bundles()
    people = [make_patient(k, scenarios) for k in range(patients)]
    expected = expected_cards(people, now)
    log(f"soak: {patients} patients from {len(scenarios)} scenarios, expected cards computed")
    schema, url = create_schema(base_url)
    failures: list[str] = []
    statuses: dict[int, int] = {}
    latencies: list[float] = []
    lock = threading.Lock()
    try:
        # one after the other: both migrate the same schema at start-up
        with (
            service(url, workers=workers, folder=folder / "a", env=env) as a,
            service(url, workers=workers, folder=folder / "b", env=env) as b,
        ):
            targets = [a.url, b.url]
            local = threading.local()

            def one(i: int) -> None:
                k = (i * 7919) % patients  # every patient, interleaved
                hook, body = people[k]
                body = {**body, "hookInstance": str(uuid.uuid4())}
                url_ = f"{targets[i % 2]}/cds-services/{SERVICES[hook]}"
                if not hasattr(local, "s"):
                    local.s = requests.Session()
                started = time.perf_counter()
                try:
                    response = local.s.post(
                        url_, json=body, timeout=60, headers={"Authorization": f"Bearer {sign(url_)}"}
                    )
                except requests.RequestException as exc:
                    with lock:
                        failures.append(f"call {i} patient {k}: no answer ({type(exc).__name__})")
                    return
                elapsed = time.perf_counter() - started
                with lock:
                    statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                    latencies.append(elapsed)
                if response.status_code != 200:
                    with lock:
                        failures.append(
                            f"call {i} patient {k}: HTTP {response.status_code} {response.text[:200]}"
                        )
                    return
                got = normalise(response.json()["cards"])
                if got != expected[k]:
                    others = [j for j, cards in enumerate(expected) if cards == got and j != k]
                    with lock:
                        failures.append(
                            f"call {i} patient {k}: cards differ from its own expected cards"
                            + (f" (they are patient {others[0]}'s)" if others else "")
                        )

            def blast(n: int, offset: int) -> None:
                with concurrent.futures.ThreadPoolExecutor(threads) as pool:
                    list(pool.map(one, range(offset, offset + n)))

            warm = min(total, max(patients, 2 * threads))
            blast(warm, 0)  # every patient once: caches and pools at their working size
            rss_before = {**a.worker_rss_kib(), **b.worker_rss_kib()}
            started = time.perf_counter()
            done, step = warm, max(1000, (total - warm) // 10)
            while done < total:
                n = min(step, total - done)
                blast(n, done)
                done += n
                log(
                    f"soak: {done}/{total} calls, {len(failures)} failures, "
                    f"{time.perf_counter() - started:.0f} s"
                )
            seconds = time.perf_counter() - started
            rss_after = {**a.worker_rss_kib(), **b.worker_rss_kib()}
            spooled = sum(len(list((p.folder / "spool").glob("*.json"))) for p in (a, b))
            logs = a.log.read_text() + b.log.read_text()
        stored, checked, broken = audit_figures(url)
    finally:
        drop_schema(schema, base_url)
    latencies.sort()
    return {
        "requests": total,
        "patients": patients,
        "threads": threads,
        "processes": 2,
        "workers_each": workers,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "seconds_after_warmup": round(seconds, 1),
        "requests_per_second": round((total - warm) / seconds, 1) if seconds and total > warm else None,
        "latency_ms": {
            "p50": round(latencies[len(latencies) // 2] * 1000, 1),
            "p99": round(latencies[int(len(latencies) * 0.99)] * 1000, 1),
        }
        if latencies
        else {},
        "audit_records_expected": total,
        "audit_records_stored": stored,
        "chain_checked": checked,
        "chain_broken": broken,
        "spooled_left": spooled,
        "rss_kib_before": rss_before,
        "rss_kib_after": rss_after,
        "rss_growth_kib": {pid: rss_after.get(pid, 0) - v for pid, v in rss_before.items()},
        "workers_replaced": sorted(set(rss_after) ^ set(rss_before)),
        "service_log_tracebacks": logs.count("Traceback"),
        "failures": failures,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--patients", type=int, default=500)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2, help="server processes per service process")
    parser.add_argument("--json", help="also write the summary to this file")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an environment variable for both service processes (e.g. CDS_MODEL_CACHE_SIZE=0)",
    )
    args = parser.parse_args(argv)
    import logging

    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("cds").setLevel(logging.ERROR)  # the expected cards' own app: its start-up chatter
    summary = run_soak(
        args.requests,
        patients=args.patients,
        threads=args.threads,
        workers=args.workers,
        log=lambda m: print(m, flush=True),
        env=dict(item.split("=", 1) for item in args.env),
    )
    shown = {**summary, "failures": summary["failures"][:20], "failure_count": len(summary["failures"])}
    print(json.dumps(shown, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(shown, indent=2) + "\n")
    ok = (
        not summary["failures"]
        and summary["audit_records_stored"] == args.requests
        and summary["chain_broken"] is None
        and summary["chain_checked"] == args.requests
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
