"""Metrics at /metrics, and `cds serve --prod` (waitress processes under cds/web/supervisor.py) answering
/health on a free port, restarting a worker that dies and stopping cleanly on SIGTERM and SIGINT."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from builders import hook_body, med, obs, patient

from cds.web.serving import prepare_metrics_dir, worker_count

ROOT = Path(__file__).resolve().parent.parent


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample in a Prometheus exposition (0 when absent)."""
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
            if all(found.get(k) == v for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_count_requests_cards_and_errors(client, call):
    before = client.get("/metrics").get_data(as_text=True)
    body = hook_body("patient-view", record=[patient(), med(), obs("2243-4", 12, "pg/mL", "2026-10-01")])
    assert call(body).status_code == 200
    assert client.post("/cds-services/bone-health-patient-view", data=b"{").status_code == 400
    assert client.get("/no-such-page").status_code == 404
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    after = response.get_data(as_text=True)

    def grew(name, **labels):
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert (
        grew("cds_http_requests_total", endpoint="/cds-services/<service_id>", method="POST", status="200")
        == 1
    )
    assert (
        grew("cds_http_requests_total", endpoint="/cds-services/<service_id>", method="POST", status="400")
        == 1
    )
    assert grew("cds_cards_total", rule="low-estradiol-on-ai", indicator="warning") == 1
    assert grew("cds_cards_total", rule="vitamin-d-missing", indicator="info") == 1
    assert grew("cds_errors_total", endpoint="/cds-services/<service_id>", kind="client") == 1
    assert grew("cds_errors_total", endpoint="(unmatched)", kind="client") == 1
    assert grew("cds_http_request_duration_seconds_count", endpoint="/cds-services/<service_id>") == 2


def test_metrics_can_be_turned_off(tmp_path):
    from cds import create_app

    app = create_app({"METRICS_ENABLED": False, "DATABASE_URL": "sqlite://"})
    response = app.test_client().get("/metrics")
    assert response.status_code == 404
    assert response.get_json()["resourceType"] == "OperationOutcome"


def test_worker_count_and_metrics_folder(tmp_path):
    assert worker_count(0, cores=2) == 5
    assert worker_count(3, cores=64) == 3
    env: dict[str, str] = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "m")}
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "counter_1.db").write_bytes(b"stale")
    assert prepare_metrics_dir(env) == str(tmp_path / "m")
    assert not list((tmp_path / "m").iterdir())
    fresh: dict[str, str] = {}
    folder = prepare_metrics_dir(fresh)
    assert fresh["PROMETHEUS_MULTIPROC_DIR"] == folder and os.path.isdir(folder)
    os.rmdir(folder)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prod_env(tmp_path: Path, port: int, **extra: str) -> dict[str, str]:
    """The environment of a `cds serve --prod` on ``port``: production trust, its own public URL."""
    from support import trusted_clients_file_in

    return {
        **os.environ,
        "CDS_WORKERS": "2",
        "CDS_DEV_MODE": "false",
        "CDS_TRUSTED_CLIENTS": str(trusted_clients_file_in(tmp_path)),
        "CDS_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "CDS_DATABASE_URL": f"sqlite:///{tmp_path}/audit.sqlite3",
        "CDS_LINK_SECRET": "serving-test-link-secret-0123456789",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
        **extra,
    }


def wait_for_health(base: str, proc: subprocess.Popen, seconds: float = 120) -> requests.Response | None:
    """The first answer of ``GET /health``, retrying every kind of request error up to a generous deadline."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            return requests.get(f"{base}/health", timeout=(2, 30))  # workers may still be booting
        except requests.RequestException:
            time.sleep(0.3)
    return None


def start_prod(tmp_path: Path, port: int, **extra: str) -> subprocess.Popen:
    log = (tmp_path / "service.log").open("w")
    try:
        return subprocess.Popen([sys.executable, "-m", "cds", "serve", "--prod", "--port", str(port)],
                                cwd=tmp_path, env=prod_env(tmp_path, port, **extra), stdout=log,
                                stderr=subprocess.STDOUT)
    finally:
        log.close()


def workers_of(proc: subprocess.Popen) -> list[int]:
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
    return [int(pid) for pid in children.read_text().split()] if children.exists() else []


def gone(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status")
    try:
        return "State:\tZ" in status.read_text()
    except FileNotFoundError:
        return True


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> int:
    proc.send_signal(sig)
    try:
        return proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise


def test_serve_prod_answers_health_from_every_worker_and_sums_their_metrics(tmp_path):
    port = free_port()
    proc = start_prod(tmp_path, port)
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "service.log"
    try:
        health = wait_for_health(base, proc)
        assert health is not None, log.read_text()
        assert health.status_code == 200
        assert health.json()["status"] == "ok"
        for _ in range(6):
            assert requests.get(f"{base}/health", timeout=30).status_code == 200
        metrics = requests.get(f"{base}/metrics", timeout=30).text
        # every worker writes to the shared folder, and /metrics adds them all up
        assert sample(metrics, "cds_http_requests_total", endpoint="/health", method="GET", status="200") == 7
        text = log.read_text()
        assert text.count("cds: started worker") == 2 and len(workers_of(proc)) == 2
        assert "/metrics is open to anyone" in text  # no CDS_METRICS_TOKEN: said at start
    finally:
        if proc.poll() is None:
            stop(proc)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_killed_worker_is_replaced_and_a_stop_signal_ends_every_worker(tmp_path, sig):
    port = free_port()
    proc = start_prod(tmp_path, port)
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "service.log"
    try:
        assert wait_for_health(base, proc) is not None, log.read_text()
        first = workers_of(proc)
        assert len(first) == 2
        os.kill(first[0], signal.SIGKILL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and (first[0] in workers_of(proc) or len(workers_of(proc)) < 2):
            time.sleep(0.2)
        now = workers_of(proc)
        assert first[0] not in now and first[1] in now and len(now) == 2, log.read_text()[-2000:]
        assert f"worker {first[0]} exited with status -9; starting another" in log.read_text()
        for _ in range(4):  # the new worker boots meanwhile; every answer comes from a live one
            assert requests.get(f"{base}/health", timeout=60).status_code == 200
        assert stop(proc, sig) == 0
        assert all(gone(pid) for pid in now), log.read_text()[-2000:]
        assert "Traceback" not in log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.slow
def test_workers_that_cannot_start_stop_the_service_with_one_line(tmp_path):
    port = free_port()
    proc = start_prod(tmp_path, port, CDS_RULES_DIR=str(tmp_path / "no-such-rules"))
    try:
        assert proc.wait(timeout=300) == 1
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = (tmp_path / "service.log").read_text()
    assert "workers in a row exited within" in text, text[-3000:]
    assert text.count("exited with status 1") == 5  # and no more started after the fifth


@pytest.mark.parametrize("flag", [["--help"]])
def test_serve_help_mentions_prod(flag, capsys):
    from cds.cli import main

    with pytest.raises(SystemExit):
        main(["serve", *flag])
    assert "--prod" in capsys.readouterr().out
