"""The wheel carries everything the service needs: built from a clean clone of the current commit, installed
(not editable) with its real dependencies into a fresh venv of the running Python, it runs from a folder
outside the checkout: ``cds --version``, ``cds rules check``, ``cds evaluate`` of a fixture (the same output
as the checkout's), and ``cds serve`` answering one signed hook call (``cds request``) with cards and
recording it in the audit database its packaged migrations made.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from install_support import (
    INSTALL_SECONDS,
    ROOT,
    clean_clone,
    operator_env,
    patched_wheel,
    run,
    shown,
)

from cds.version import __version__

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2 * INSTALL_SECONDS)]

FIXTURE = "fixtures/scenarios/trt-man-anastrozole-low-estradiol.json"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(the venv's bin folder, a folder outside the checkout to run in, the clone)."""
    base = tmp_path_factory.mktemp("wheel")
    clone = clean_clone(base / "clone")
    env = operator_env()
    # the project's own wheel; its dependencies are resolved when it is installed
    built = run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(base / "dist"),
                 str(clone)], base, env, timeout=INSTALL_SECONDS)
    assert built.returncode == 0, shown(built)
    (wheel,) = (base / "dist").glob("cds_bone_health-*.whl")
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    # the project's wheel and the patched durable-rules wheel; every other dependency resolved by pip
    durable = patched_wheel()
    done = run([str(venv / "bin" / "python"), "-m", "pip", "install", "--find-links", str(durable.parent),
                str(wheel), str(durable)], base, env, timeout=INSTALL_SECONDS)
    assert done.returncode == 0, shown(done)
    site = base / "site"
    site.mkdir()
    return venv / "bin", site, clone


def test_the_wheel_holds_the_rule_pack_and_the_data(installed):
    bin_dir, site, _ = installed
    done = run([str(bin_dir / "python"), "-c",
                "import cds, cds.db, cds.rules.pack as p; print(cds.__file__); print(p.DEFAULT_DIR); "
                "print(cds.db.MIGRATIONS)"], site, operator_env())
    assert done.returncode == 0, shown(done)
    package, pack, migrations = (Path(line) for line in done.stdout.splitlines())
    venv = bin_dir.parent
    for path in (package, pack, migrations):
        assert venv in path.parents, f"{path} is not inside the installed package"
    shipped = {p.relative_to(pack).as_posix() for p in pack.rglob("*.yaml")}
    source = {p.relative_to(ROOT / "rules").as_posix() for p in (ROOT / "rules").rglob("*.yaml")}
    assert shipped == source  # pack, thresholds, value sets, every rule, the archive
    assert (pack / "archive").is_dir() and (pack / "rules").is_dir()
    templates = {p.relative_to(ROOT / "cds").as_posix() for p in (ROOT / "cds" / "templates").rglob("*")
                 if p.is_file()}
    assert templates and all((package.parent / t).is_file() for t in templates)
    versions = {p.name for p in (ROOT / "cds" / "migrations" / "versions").glob("*.py")}
    assert versions and {p.name for p in (migrations / "versions").glob("*.py")} >= versions


def test_version_rules_check_and_evaluate_run_outside_the_checkout(installed):
    bin_dir, site, clone = installed
    env = operator_env()
    version = run([str(bin_dir / "cds"), "--version"], site, env)
    assert (version.returncode, version.stdout) == (0, f"cds {__version__}\n"), shown(version)

    check = run([str(bin_dir / "cds"), "rules", "check"], site, env)
    assert check.returncode == 0, shown(check)
    assert check.stdout.startswith("rule pack bone-health-ai ") and " rules OK " in check.stdout, shown(check)

    args = ["evaluate", str(clone / FIXTURE), "--hook", "order-sign", "--at", "2026-11-22"]
    evaluated = run([str(bin_dir / "cds"), *args], site, env)
    assert evaluated.returncode == 0, shown(evaluated)
    assert " card(s) for " in evaluated.stdout and "low-estradiol" in evaluated.stdout, shown(evaluated)
    # the installed package gives what the checkout gives (the pack's path is in neither output)
    checkout = run([sys.executable, "-m", "cds", *args], ROOT, env)
    assert checkout.returncode == 0, shown(checkout)
    assert evaluated.stdout == checkout.stdout


def test_serve_answers_a_signed_hook_call_with_cards(installed):
    bin_dir, site, clone = installed
    env = operator_env()
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = site / "serve.log"
    with log.open("w") as out:
        server = subprocess.Popen([str(bin_dir / "cds"), "serve", "--port", str(port)], cwd=site, env=env,
                                  stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        waited = run([str(bin_dir / "cds"), "wait", "--url", url, "--timeout", "240"], site, env, timeout=300)
        assert waited.returncode == 0, shown(waited) + "\n--- service log\n" + log.read_text()[-3000:]
        # the development client's key and token, made and signed by the installed toolkit
        answered = run([str(bin_dir / "cds"), "request", str(clone / FIXTURE), "--hook", "order-sign",
                        "--url", url, "--json"], site, env)
        assert answered.returncode == 0, shown(answered) + "\n--- service log\n" + log.read_text()[-3000:]
        cards = json.loads(answered.stdout)["cards"]
        assert cards, answered.stdout
        assert all(card["summary"] and card["indicator"] in ("info", "warning", "critical") for card in cards)
        # the call's audit record, in the database the packaged migrations made, read by the installed cds
        listed = run([str(bin_dir / "cds"), "audit", "list"], site, env)
        assert listed.returncode == 0 and listed.stdout.startswith("1 record(s)\n"), shown(listed)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
