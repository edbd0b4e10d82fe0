"""The README's "Try it" blocks, pasted into a fresh clone as a newcomer would: each exits 0 and shows what
the README says it shows.

The commands are the README's own. Two things differ from a newcomer's machine: the port (a free one, in
place of 5000, so the test runs beside a service already on 5000) and the install (``CDS_VENV`` names a
small venv that reads the packages of the venv the suite runs in, so the test does not install them again).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent


def try_it_blocks(readme: str) -> list[str]:
    section = readme.split("\n## Try it\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)```", section, re.S)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _overlay_venv(clone: Path, target: Path) -> None:
    """A venv with this suite's packages (by a .pth file) and the clone's own ``cds`` on the path, marked
    installed for run.sh: no pip run, and nothing written into the suite's own venv."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(target)], check=True, timeout=300)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    site = target / "lib" / version / "site-packages"
    site.mkdir(parents=True, exist_ok=True)
    (site / "shared.pth").write_text(f"{clone}\n{sysconfig.get_paths()['purelib']}\n")
    cds = target / "bin" / "cds"
    cds.write_text(f'#!/bin/sh\nexec "{target}/bin/python" -m cds "$@"\n')
    cds.chmod(0o755)
    digest = subprocess.run(
        "cat pyproject.toml scripts/build_durable_rules.py cds/rules/durable_build.py | sha1sum | cut -c1-12",
        shell=True, cwd=clone, capture_output=True, text=True, check=True).stdout.strip()
    (target / f".installed-{digest}").touch()


def _run(block: str, clone: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    script = "set -euo pipefail\n" + block + "\nkill $(jobs -p) 2>/dev/null || true\nwait || true\n"
    # Output goes to files, not pipes: a server left running in the background would hold a pipe open.
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(["bash", "-c", script], cwd=clone, env=env, text=True, start_new_session=True,
                                stdout=out, stderr=err)
        try:
            proc.wait(timeout=900)
        finally:
            try:
                os.killpg(proc.pid, signal.SIGTERM)  # the backgrounded server, whatever happened
            except ProcessLookupError:
                pass
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out.read(), err.read())


def test_the_readme_try_it_blocks_run_on_a_fresh_clone(tmp_path):
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True, timeout=300)
    blocks = try_it_blocks((clone / "README.md").read_text(encoding="utf-8"))
    assert len(blocks) == 2, "the Try it section holds the server block and the offline block"
    venv = tmp_path / "venv"
    _overlay_venv(clone, venv)
    port = _free_port()
    # a newcomer's shell: none of the suite's own CDS_ settings (such as its CDS_PUBLIC_URL)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDS_")}
    env.update(CDS_VENV=str(venv), CDS_PORT=str(port), CDS_PYTHON=sys.executable)  # the suite's Python
    env.pop("PYTHONPATH", None)

    served = _run(blocks[0].replace("127.0.0.1:5000", f"127.0.0.1:{port}"), clone, env)
    assert served.returncode == 0, served.stderr[-3000:]
    assert '"id": "bone-health-patient-view"' in served.stdout  # the discovery document
    # the four cards the README names for this man on anastrozole with no results
    for summary in ("No 25-OH vitamin D", "baseline DXA", "stradiol", "No calcium result"):
        assert summary in served.stdout, served.stdout[-3000:]
    assert served.stdout.count('"summary"') == 4

    offline = _run(blocks[1], clone, env)
    assert offline.returncode == 0, offline.stderr[-3000:]
    assert "low-estradiol" in offline.stdout and "OK" in offline.stdout, offline.stdout[-3000:]
