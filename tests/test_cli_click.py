"""The ``cds`` command line as a whole: click's CliRunner for the pure parts (version, help, usage errors,
``rules check`` with a site config), real processes for what is about the process (a closed pipe, waiting
for a server that starts later)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import click
import pytest
import yaml
from click.testing import CliRunner
from support import make_test_app
from werkzeug.serving import make_server

from cds.cli import cli, main
from cds.version import __version__

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"


def _walk(command: click.Command, path: str = "cds"):
    yield path, command
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            yield from _walk(sub, f"{path} {name}")


def test_version():
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"cds {__version__}"
    with pytest.raises(SystemExit) as caught:
        main(["--version"])
    assert caught.value.code == 0


def test_every_command_and_option_has_help():
    commands = dict(_walk(cli))
    expected = {"cds serve", "cds evaluate", "cds rules check", "cds dev-token", "cds request", "cds replay",
                "cds wait", "cds audit list", "cds audit show", "cds audit verify", "cds audit export",
                "cds audit rerun", "cds audit replay", "cds audit migrate", "cds audit drain",
                "cds audit token", "cds audit patient-key"}
    assert expected <= set(commands)
    for path, command in commands.items():
        assert (command.help or "").strip(), f"{path} has no help"
        for param in command.params:
            if isinstance(param, click.Option):
                assert (param.help or "").strip(), f"{path} {param.opts[0]} has no help"
    result = CliRunner().invoke(cli, ["replay", "--help"])
    assert result.exit_code == 0 and "--strict" in result.output and "skipped" in result.output


@pytest.mark.parametrize(("argv", "message"), [
    (["request"], "Missing argument 'BUNDLE'"),
    (["request", "x.json"], "Missing option '--url'"),
    (["evaluate", "x.json", "--hook", "nope"], "'nope' is not one of"),
    (["no-such-command"], "No such command 'no-such-command'"),
    (["audit", "list", "--limit", "0"], "--limit"),
])
def test_usage_errors_are_one_line(argv, message, capsys):
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cds: error: ") and message in lines[0], captured.err
    assert captured.out == ""


def test_errors_under_the_runner_are_one_line_and_non_zero(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("[]")
    result = CliRunner().invoke(cli, ["evaluate", str(bad)])
    assert result.exit_code == 2
    assert result.output.strip() == f"cds: error: {bad}: not a FHIR Bundle"


# -- rules check and the site config ------------------------------------------------------------------------


@pytest.mark.parametrize(("content", "message"), [
    ("thresholds:\n  no_such_threshold: 3\n", "override of unknown threshold 'no_such_threshold'"),
    ("thresholds:\n  estradiol_low_pg_ml: low\n", "threshold estradiol_low_pg_ml must be a number"),
    ("thresholds: [1, 2\n", "not YAML"),
    ("- estradiol_low_pg_ml\n", "expected a mapping with 'thresholds'"),
    ("threshold:\n  estradiol_low_pg_ml: 18\n", "unknown section(s) threshold"),
    (None, "cannot read"),
])
def test_rules_check_names_the_problem_in_the_site_config(content, message, tmp_path):
    site = tmp_path / "bad.yaml"
    if content is not None:
        site.write_text(content)
    result = CliRunner().invoke(cli, ["rules", "check"], env={"CDS_SITE_CONFIG": str(site)})
    assert result.exit_code == 2, result.output
    assert "rules OK" not in result.output
    assert message in result.output and str(site) in result.output


def test_rules_check_reports_a_good_site_config(tmp_path):
    site = tmp_path / "site.yaml"
    site.write_text(yaml.safe_dump({"thresholds": {"estradiol_low_pg_ml": 18}}))
    result = CliRunner().invoke(cli, ["rules", "check"], env={"CDS_SITE_CONFIG": str(site)})
    assert result.exit_code == 0, result.output
    assert "rules OK" in result.output
    assert f"site config {site}: 1 override(s) OK (estradiol_low_pg_ml)" in result.output


# -- the process: a closed pipe, waiting for a server -------------------------------------------------------


@pytest.fixture
def audit_db():
    """A SQLite audit trail with enough records that a listing overflows a pipe's buffer."""
    app = make_test_app()
    client = app.test_client()
    bundle = json.loads((FIXTURES / "scenarios" / "trt-man-anastrozole-low-estradiol.json").read_text())
    from cds.hooks.services import discovery_document
    from cds.toolkit.request import build_hook_request, choose_service

    service = choose_service(discovery_document(app.extensions["cds.pack"]), "order-sign")
    for _ in range(40):
        body = build_hook_request(bundle, "order-sign", service)
        assert client.post(f"/cds-services/{service['id']}", json=body).status_code == 200
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CDS_DATABASE_URL": app.config["DATABASE_URL"],
           "CDS_AUDIT_PATIENT_KEY_SECRET": app.config["AUDIT_PATIENT_KEY_SECRET"],
           "CDS_AUDIT_SPOOL_DIR": app.config["AUDIT_SPOOL_DIR"]}
    return env


def test_a_closed_pipe_ends_quietly(audit_db):
    reader, writer = os.pipe()
    os.close(reader)  # nobody reads: the first write fails with EPIPE, whatever the timing
    try:
        done = subprocess.run([sys.executable, "-m", "cds", "audit", "list"], stdout=writer,
                              stderr=subprocess.PIPE, text=True, env=audit_db, timeout=300)
    finally:
        os.close(writer)
    assert done.returncode == 141, done.stderr
    assert done.stderr == ""


@pytest.mark.parametrize("command", ["audit list --limit 500", "audit export"])
def test_cds_into_head_prints_one_line_and_no_traceback(command, audit_db):
    script = f'"{sys.executable}" -m cds {command} | head -1; echo "cds exit ${{PIPESTATUS[0]}}" >&2'
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=audit_db, timeout=300)
    assert done.returncode == 0
    lines = done.stdout.splitlines()
    assert len(lines) == 1
    if command.startswith("audit list"):
        assert lines[0] == "40 record(s)"
    else:  # 40 full records: far more than a pipe holds, so the export outlives head and meets EPIPE
        assert json.loads(lines[0])["seq"] == 1
        assert done.stderr.strip().splitlines()[-1] == "cds exit 141"
    assert done.stderr.strip().splitlines()[-1] in ("cds exit 0", "cds exit 141")
    assert "Traceback" not in done.stderr and "Error" not in done.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_wait_returns_once_a_server_that_starts_later_answers():
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    waiting = subprocess.Popen([sys.executable, "-m", "cds", "wait", "--url", url, "--timeout", "240"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        server = make_server("127.0.0.1", port, make_test_app(), threaded=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            out, err = waiting.communicate(timeout=240)
        finally:
            server.shutdown()
            server.server_close()
    finally:
        if waiting.poll() is None:
            waiting.kill()
            waiting.wait()
    assert waiting.returncode == 0, err
    assert err == ""


def test_wait_gives_up_after_its_timeout_in_one_line(capsys):
    url = f"http://127.0.0.1:{_free_port()}"
    assert main(["wait", "--url", url, "--timeout", "1"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"cds: error: {url} did not answer GET /health within 1 s")


@pytest.mark.parametrize("argv", [[], ["audit"], ["rules"]])
def test_a_group_alone_prints_its_help_as_a_usage_error(argv, capsys):
    assert main(argv) == 2
    captured = capsys.readouterr()
    usage = f"Usage: {' '.join(['cds', *argv])} [OPTIONS] COMMAND"
    assert captured.out == "" and captured.err.startswith(usage)
