#!/usr/bin/env python3
"""Fuzz the running service through its own OpenAPI document (schemathesis) over real HTTP.

Requests come from three sources, mixed:

* schemathesis cases for every operation of ``/openapi.json``: positive (schema-valid) and negative
  (schema-violating) data, with ``service_id`` both random and one of the real services;
* mutated real hook requests: a scenario from ``fixtures/scenarios`` with one to four of its values
  replaced by something absurd (wrong type, huge number, NaN-like string, far date, deep nesting, ...);
* for each request, an ``Authorization`` header that is either a fresh valid test-client token (its own
  ``jti``, ``aud`` the exact URL called) or a bad one (missing, garbage, expired, wrong audience, wrong
  issuer, unknown key, ``alg: none``, a replayed ``jti``, huge, another scheme).

Each response must not be a server error (5xx) and must not carry a stack trace, and no call to a hook
service or its feedback endpoint may succeed (2xx) with a bad token. The summary gives the
request count, the status counts per source and per token kind, and the time taken.

    .venv/bin/python scripts/fuzz_api.py --requests 10000            # starts `cds serve --prod` itself
    .venv/bin/python scripts/fuzz_api.py --url http://127.0.0.1:5000 # a server trusting the test client

Exit status 0 when nothing failed, 1 otherwise (the first failures are printed).
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import copy
import datetime as dt
import json
import random
import re
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import hypothesis
import jwt
import requests
import schemathesis
from schemathesis.generation import GenerationMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from service_process import _PRIVATE, ROOT, TEST_ISS, service, sign  # noqa: E402

SERVICES = ["bone-health-patient-view", "bone-health-order-select", "bone-health-order-sign"]
HOOK_OF = {
    "bone-health-patient-view": "patient-view",
    "bone-health-order-select": "order-select",
    "bone-health-order-sign": "order-sign",
}
TRACE = re.compile(
    r"Traceback \(most recent call last\)|File \"[^\"]+\", line \d+|werkzeug\.debug|"
    r"\b\w+(Error|Exception): .*\n\s+at |sqlalchemy\.exc\.|psycopg\."
)

TOKEN_KINDS = ["valid"] * 6 + [
    "missing",
    "garbage",
    "expired",
    "wrong-aud",
    "wrong-iss",
    "unknown-key",
    "alg-none",
    "replayed",
    "huge",
    "basic-scheme",
    "future-iat",
    "long-lived",
]



def _forged(url: str, now: float, iss: str, key: object, algorithm: str) -> str:
    """A one-minute token for ``url`` signed as given (a wrong issuer, a stranger's key, or no signature)."""
    claims = {"iss": iss, "aud": url, "exp": int(now) + 60, "iat": int(now), "jti": str(uuid.uuid4())}
    headers = {"kid": _PRIVATE["ES384"]["kid"]} if algorithm != "none" else None
    return jwt.encode(claims, key, algorithm=algorithm, headers=headers)

class Fuzzer:
    def __init__(self, base_url: str, seed: int):
        self.base = base_url.rstrip("/")
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.statuses: collections.Counter[str] = collections.Counter()
        self.by_source: dict[str, collections.Counter[int]] = collections.defaultdict(collections.Counter)
        self.by_token: dict[str, collections.Counter[int]] = collections.defaultdict(collections.Counter)
        self.failures: list[str] = []
        self.requests = 0
        self.used_tokens: list[str] = []
        self.local = threading.local()
        from cryptography.hazmat.primitives.asymmetric import ec

        self.stranger = ec.generate_private_key(ec.SECP384R1())

    # -- tokens -----------------------------------------------------------------------------------------
    def token(self, kind: str, url: str) -> str | None:
        now = time.time()
        if kind == "valid":
            return f"Bearer {sign(url)}"  # kept for replays once it has been answered (see send)
        if kind == "missing":
            return None
        if kind == "garbage":
            return "Bearer " + self.rng.choice(
                ["x", "a.b.c", "eyJhbGciOi.e30.", "..", "\u00e9t\u00e9", "null"]
            )
        if kind == "expired":
            return "Bearer " + sign(url, now=now - 7200)
        if kind == "wrong-aud":
            return "Bearer " + sign(url + "/other")
        if kind == "wrong-iss":
            return "Bearer " + _forged(url, now, "https://evil.example",
                                       jwt.PyJWK(_PRIVATE["ES384"], algorithm="ES384").key, "ES384")
        if kind == "unknown-key":
            return "Bearer " + _forged(url, now, TEST_ISS, self.stranger, "ES384")
        if kind == "alg-none":
            return "Bearer " + _forged(url, now, TEST_ISS, None, "none")
        if kind == "replayed":  # a token the service has already answered (send: "expired" until one has)
            with self.lock:
                old = self.rng.choice(self.used_tokens) if self.used_tokens else sign(url, now=now - 7200)
            return f"Bearer {old}"
        if kind == "huge":
            return "Bearer " + "A" * self.rng.choice([9_000, 70_000])
        if kind == "basic-scheme":
            return "Basic dXNlcjpwYXNz"
        if kind == "future-iat":
            return "Bearer " + sign(url, now=now + 3600)
        if kind == "long-lived":
            return "Bearer " + sign(url, lifetime=10 * 86400)
        raise ValueError(kind)

    # -- sending ----------------------------------------------------------------------------------------
    def session(self) -> requests.Session:
        if not hasattr(self.local, "session"):
            self.local.session = requests.Session()
        return self.local.session

    def send(self, source: str, kwargs: dict[str, Any], kind: str) -> None:
        kwargs = dict(kwargs)
        headers = {
            k: v
            for k, v in (kwargs.pop("headers", None) or {}).items()
            if k.lower() not in ("authorization", "x-schemathesis-testcaseid")
        }
        url = kwargs.pop("url")
        auth = self.token(kind, url.split("?", 1)[0])
        if auth is not None:
            headers["Authorization"] = auth
        kwargs.pop("cookies", None)
        try:
            response = self.session().request(
                headers=headers, url=url, timeout=60, allow_redirects=False, **kwargs
            )
        except requests.RequestException as exc:
            # a header requests itself refuses to send is not a request; a dropped connection is a failure
            if isinstance(exc, requests.exceptions.InvalidHeader | requests.exceptions.InvalidURL):
                return
            self._fail(f"{source} {kwargs.get('method')} {url}: no answer ({type(exc).__name__}: {exc})")
            self.local.__dict__.pop("session", None)
            return
        text = response.text
        with self.lock:
            if kind == "valid" and 200 <= response.status_code < 300 and len(self.used_tokens) < 200:
                # used now: its jti is spent, so the same token again is a replay (recorded only after the
                # answer, so that no "replayed" request can carry a token before its first use)
                self.used_tokens.append(auth.removeprefix("Bearer "))
            self.requests += 1
            self.statuses[str(response.status_code)] += 1
            self.by_source[source][response.status_code] += 1
            self.by_token[kind][response.status_code] += 1
        if response.status_code >= 500:
            self._fail(
                f"{source} [{kind}] {kwargs.get('method')} {url} -> {response.status_code}: {text[:300]}"
            )
        elif kind != "valid" and 200 <= response.status_code < 300 and kwargs.get("method") == "POST" \
                and "/cds-services/" in url:
            self._fail(f"{source} [{kind}] POST {url} -> {response.status_code} with a bad token")
        elif TRACE.search(text):
            self._fail(f"{source} [{kind}] {kwargs.get('method')} {url} -> a stack trace: {text[:300]}")

    def _fail(self, message: str) -> None:
        with self.lock:
            self.failures.append(message)

    def summary(self, seconds: float) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "seconds": round(seconds, 1),
            "statuses": dict(sorted(self.statuses.items())),
            "by_source": {k: dict(sorted(v.items())) for k, v in sorted(self.by_source.items())},
            "by_token": {k: dict(sorted(v.items())) for k, v in sorted(self.by_token.items())},
            "server_errors": sum(v for k, v in self.statuses.items() if k.startswith("5")),
            "failures": len(self.failures),
        }


# -- the cases ------------------------------------------------------------------------------------------


def _draw(strategy: Any, n: int, seed: int, base: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []

    @hypothesis.settings(
        max_examples=n,
        deadline=None,
        database=None,
        derandomize=False,
        suppress_health_check=list(hypothesis.HealthCheck),
        phases=[hypothesis.Phase.generate],
    )
    @hypothesis.seed(seed)
    @hypothesis.given(case=strategy)
    def collect(case: Any) -> None:
        found.append(case.as_transport_kwargs(base_url=base))

    collect()
    return found


def schemathesis_cases(base: str, n: int, seed: int) -> list[tuple[str, dict[str, Any]]]:
    """About ``n`` request descriptions generated by schemathesis from the served document."""
    doc = requests.get(f"{base}/openapi.json", timeout=10).json()
    schema = schemathesis.openapi.from_dict(doc)
    operations = [r.ok() for r in schema.get_all_operations()]
    plans = []
    for op in operations:
        has_service = "{service_id}" in op.path
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            plans.append((op, mode, None))
            if has_service:
                plans += [(op, mode, sid) for sid in SERVICES] * 2
    per_plan = max(1, n // len(plans))
    out: list[tuple[str, dict[str, Any]]] = []
    for i, (op, mode, sid) in enumerate(plans):
        strategy = op.as_strategy(generation_mode=mode, path_parameters={"service_id": sid} if sid else None)
        try:
            found = _draw(strategy, per_plan, seed + i, base)
        except hypothesis.errors.Unsatisfiable:
            continue  # nothing to violate (an operation without parameters or body)
        label = f"schemathesis-{mode.value}" + ("-real-service" if sid else "")
        out += [(label, kw) for kw in found]
    return out


ABSURD: list[Any] = [
    None,
    "",
    "NaN",
    "nan",
    "Infinity",
    "-1e309",
    1e308,
    -1e308,
    10**40,
    -5,
    0,
    -0.0,
    True,
    [],
    {},
    [None],
    {"": None},
    "0000-00-00",
    "0001-01-01",
    "9999-12-31T23:59:59+14:00",
    "2026-11-22T12:00:00-12:00",
    "\u0000",
    "\ud7ff" * 50,
    "x" * 5000,
    "Patient/other",
    "../../etc/passwd",
    "<script>alert(1)</script>",
    "' OR 1=1 --",
    {"reference": None},
    "deep",
]
for _ in range(40):
    ABSURD[-1] = [ABSURD[-1]]


def _paths(node: Any, path: tuple = ()) -> list[tuple]:
    out = [path] if path else []
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*path, i))
    return out


def _set(node: Any, path: tuple, value: Any) -> None:
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value


def scenario_bodies() -> list[tuple[str, dict[str, Any]]]:
    from cds.toolkit.offline import hook_request, load_bundle

    out = []
    for path in sorted((ROOT / "fixtures" / "scenarios").glob("*.json")):
        if path.name.endswith(".expected.json"):
            continue
        sidecar = json.loads(path.with_name(path.name[:-5] + ".expected.json").read_text())
        out.append((sidecar["hook"], hook_request(load_bundle(path), sidecar["hook"])))
    return out


def mutated_cases(base: str, n: int, rng: random.Random) -> list[tuple[str, dict[str, Any]]]:
    bodies = scenario_bodies()
    out = []
    for _ in range(n):
        hook, body = rng.choice(bodies)
        body = copy.deepcopy(body)
        body["hookInstance"] = str(uuid.uuid4())
        paths = _paths(body)
        for _ in range(rng.randint(1, 4)):
            target = rng.choice(paths)
            try:
                _set(body, target, copy.deepcopy(rng.choice(ABSURD)))
            except (KeyError, IndexError, TypeError):
                continue  # an earlier mutation replaced a parent
        service = next(s for s, h in HOOK_OF.items() if h == hook)
        if rng.random() < 0.1:
            service = rng.choice(SERVICES)  # the body for another hook
        if rng.random() < 0.05:
            data = json.dumps(body).encode()[: rng.randint(0, 200)]  # cut short: not JSON
            out.append(
                (
                    "mutated-scenario",
                    {
                        "method": "POST",
                        "url": f"{base}/cds-services/{service}",
                        "data": data,
                        "headers": {"Content-Type": "application/json"},
                    },
                )
            )
            continue
        out.append(
            (
                "mutated-scenario",
                {
                    "method": "POST",
                    "url": f"{base}/cds-services/{service}",
                    "data": json.dumps(body, allow_nan=True).encode(),
                    "headers": {"Content-Type": "application/json"},
                },
            )
        )
    return out


def run(
    base: str, total: int, *, seed: int = 0, threads: int = 4, log: Any = print
) -> tuple[dict[str, Any], list[str]]:
    fuzzer = Fuzzer(base, seed)
    rng = random.Random(seed)
    started = time.perf_counter()
    round_ = 0
    while fuzzer.requests < total:
        want = total - fuzzer.requests
        cases = schemathesis_cases(base, max(want * 6 // 10, 60), seed + 1000 * round_)
        cases += mutated_cases(base, max(want - len(cases), want * 4 // 10), rng)
        rng.shuffle(cases)
        cases = cases[:want]
        with concurrent.futures.ThreadPoolExecutor(threads) as pool:
            futures = [pool.submit(fuzzer.send, source, kw, rng.choice(TOKEN_KINDS)) for source, kw in cases]
            for future in futures:
                future.result()
        round_ += 1
        log(
            f"fuzz: {fuzzer.requests} requests, {len(fuzzer.failures)} failures, "
            f"{time.perf_counter() - started:.0f} s"
        )
    return fuzzer.summary(time.perf_counter() - started), fuzzer.failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=10_000, help="how many requests to send")
    parser.add_argument("--url", help="a running service trusting the test client (default: start one)")
    parser.add_argument("--seed", type=int, default=int(dt.datetime.now().timestamp()))
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2, help="server processes of the started service")
    parser.add_argument("--json", help="also write the summary to this file")
    args = parser.parse_args(argv)
    print(f"fuzz: seed {args.seed}", flush=True)

    def go(url: str) -> tuple[dict[str, Any], list[str]]:
        return run(
            url, args.requests, seed=args.seed, threads=args.threads, log=lambda m: print(m, flush=True)
        )

    if args.url:
        summary, failures = go(args.url)
    else:
        with service(workers=args.workers) as proc:
            summary, failures = go(proc.url)
            log = proc.log.read_text()
            summary["service_log_tracebacks"] = log.count("Traceback")
    summary["seed"] = args.seed
    print(json.dumps(summary, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")
    for message in failures[:20]:
        print("FAIL:", message, file=sys.stderr)
    return 1 if failures or summary["server_errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
