"""No test can hang the suite: every test runs under a time limit (pytest-timeout), pyproject's default or a
longer one for tests marked slow, and a test that hangs is stopped and reported while the run goes on."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest
from support import SLOW_TIMEOUT_SECONDS

ROOT = Path(__file__).resolve().parent.parent


def _limit(item: pytest.Item, default: float) -> float:
    marker = item.get_closest_marker("timeout")
    if marker is None:
        return default
    return float(marker.args[0] if marker.args else marker.kwargs["timeout"])


def test_the_default_limit_is_set_in_pyproject_and_in_force(request):
    ini = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert 0 < float(ini["timeout"]) < SLOW_TIMEOUT_SECONDS
    assert request.config.pluginmanager.hasplugin("timeout")
    assert float(request.config.getini("timeout")) == float(ini["timeout"])


def test_every_collected_test_has_a_limit_and_slow_tests_a_longer_one(request):
    default = float(request.config.getini("timeout"))
    items = request.session.items
    assert items
    for item in items:
        limit = _limit(item, default)
        assert 0 < limit < 5400, item.nodeid  # below CI's own limit
        if item.get_closest_marker("slow"):
            assert limit >= SLOW_TIMEOUT_SECONDS, item.nodeid


def test_a_hanging_test_is_stopped_and_the_run_goes_on(tmp_path):
    (tmp_path / "test_hang.py").write_text(textwrap.dedent("""
        import socket
        import threading

        def test_waits_forever_on_a_socket():
            server = socket.create_server(("127.0.0.1", 0))
            client = socket.create_connection(server.getsockname())
            client.recv(1)  # the server never sends

        def test_waits_forever_on_an_event():
            threading.Event().wait()

        def test_after_them():
            assert True
    """))
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-o", "timeout=3",
                           "--rootdir", str(tmp_path), str(tmp_path)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=280)
    assert done.returncode == 1, done.stdout[-3000:]
    assert "2 failed, 1 passed" in done.stdout, done.stdout[-3000:]
    stopped = [line for line in done.stdout.splitlines() if line.startswith("FAILED ")]
    assert len(stopped) == 2 and all("Timeout (>3.0s)" in line for line in stopped), done.stdout[-3000:]
