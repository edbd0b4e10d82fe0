"""What the benchmarks share: free ports, wrk, a trusted CDS client signing tokens, servers (the service
under ``cds serve --prod``, a floor app under the same production server), the
database of a run (a fresh PostgreSQL schema, dropped afterwards, or SQLite) and request-body files."""

from __future__ import annotations

import json
import os
import re
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
    """The service under ``cds serve --prod``, or a floor app served the same way (``cds.web.supervisor``).

    ``checkout``: run the code of another checkout of the project (a baseline measured in the same run)."""

    def __init__(self, name: str, app: str, port: int, workers: int, env: dict[str, str],
                 checkout: Path | None = None):
        self.name, self.port = name, port
        if app == "service":
            argv = [sys.executable, "-m", "cds", "serve", "--prod", "--host", "127.0.0.1",
                    "--port", str(port)]
            env = {**env, "CDS_WORKERS": str(workers)}
        else:
            argv = [sys.executable, "-m", "cds.web.supervisor", "--workers", str(workers),
                    "--host", "127.0.0.1", "--port", str(port), "--app", app]
        if checkout is not None:
            env = {**env, "PYTHONPATH": str(checkout)}
        self.log = tempfile.TemporaryFile()  # stderr to a file: a pipe nobody reads could fill and block
        self.proc = subprocess.Popen(
            argv, cwd=checkout or ROOT, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=self.log,
            start_new_session=True)
        deadline = time.time() + 120  # a loaded 2-core machine starts five workers slowly
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                if self.proc.poll() is not None:
                    raise SystemExit(f"bench: {name} failed to start:\n{self.stderr_tail()}") from None
                time.sleep(0.3)
        raise SystemExit(f"bench: {name} did not answer /health within 120 s")

    def stderr_tail(self, chars: int = 3000) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-chars:]

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
            self.proc.wait(timeout=20)
        self.log.close()


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
            threads: int = 2, expect: str = "") -> dict:
    """One wrk run; ``expect``: the card signature every 200 answer must carry (``card_signature``)."""
    threads = max(1, min(threads, connections))  # wrk needs a connection per thread
    env = {
        **os.environ,
        "BENCH_EXPECT": expect,
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


def card_signature(answer_text: str) -> str:
    """The card summaries of an answer, in order, each followed by "|" (what bench/wrk.lua compares)."""
    return "".join(m + "|" for m in re.findall(r'"summary"\s*:\s*"(.*?)"', answer_text))


def write_bodies(path: Path, bodies: list[dict]) -> Path:
    path.write_text("".join(json.dumps(b, separators=(",", ":")) + "\n" for b in bodies))
    return path
