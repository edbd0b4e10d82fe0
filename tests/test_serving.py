"""Metrics at /metrics, and `cds serve --prod` (gunicorn) answering /health on a free port."""

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

from cds.web.serving import gunicorn_argv, prepare_metrics_dir, worker_count

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


def test_worker_count_and_command_line(tmp_path):
    assert worker_count(0, cores=2) == 5
    assert worker_count(3, cores=64) == 3
    argv = gunicorn_argv("0.0.0.0", 8080, 5)
    assert argv[-1] == "cds:create_app()"
    assert argv[argv.index("--bind") + 1] == "0.0.0.0:8080" and argv[argv.index("--workers") + 1] == "5"
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


def test_serve_prod_runs_gunicorn_and_answers_health(tmp_path):
    port = free_port()
    env = prod_env(tmp_path, port)
    log = (tmp_path / "gunicorn.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "cds", "serve", "--prod", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        health = wait_for_health(base, proc)
        assert health is not None, (tmp_path / "gunicorn.log").read_text()
        assert health.status_code == 200
        assert health.json()["status"] == "ok"
        for _ in range(6):
            assert requests.get(f"{base}/health", timeout=30).status_code == 200
        metrics = requests.get(f"{base}/metrics", timeout=30).text
        # every worker writes to the shared folder, and /metrics adds them all up
        assert sample(metrics, "cds_http_requests_total", endpoint="/health", method="GET", status="200") == 7
        text = (tmp_path / "gunicorn.log").read_text()
        assert "gunicorn" in text.lower() and text.count("Booting worker") == 2
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.mark.parametrize("flag", [["--help"]])
def test_serve_help_mentions_prod(flag, capsys):
    from cds.cli import main

    with pytest.raises(SystemExit):
        main(["serve", *flag])
    assert "--prod" in capsys.readouterr().out
