"""Installing the project as an operator would, for the install tests: a clean clone of the current commit,
fresh venvs, interpreters by version, commands run from a folder outside the checkout.

Everything runs in real processes with pip resolving the real dependencies (pip's own cache makes a second
run quick); nothing is shared with the suite's own venv.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNNING = f"{sys.version_info.major}.{sys.version_info.minor}"
#: seconds for one pip install or build: generous, the machine may be loaded and PyPI slow
INSTALL_SECONDS = 900


def clean_clone(dest: Path) -> Path:
    """A clone of the current commit (what is committed, nothing else)."""
    subprocess.run(["git", "clone", "-q", str(ROOT), str(dest)], check=True, timeout=300)
    return dest


def find_python(version: str) -> str | None:
    """An interpreter for Python ``version`` that runs: the running one, pythonX.Y on PATH, or pyenv's."""
    if version == RUNNING:
        return sys.executable
    candidates = [shutil.which(f"python{version}") or ""]
    roots = [os.environ.get("PYENV_ROOT", ""), str(Path.home() / ".pyenv")]
    candidates += sorted(p for root in roots if root
                         for p in glob.glob(f"{root}/versions/{version}.*/bin/python{version}"))
    for candidate in candidates:
        if candidate and subprocess.run([candidate, "-c", ""], capture_output=True).returncode == 0:
            return candidate
    return None


def operator_env(**extra: str) -> dict[str, str]:
    """The environment of an operator's shell: none of the suite's CDS_ settings, no PYTHONPATH. One
    difference, for speed only: pip does not compile the installed packages to bytecode (PIP_COMPILE=0;
    most of an install's CPU time here), while it still resolves and installs every dependency."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("CDS_") and k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PIP_COMPILE"] = "0"  # what --no-compile sets (PIP_NO_COMPILE=1 would not)
    env.update(extra)
    return env


def run(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def shown(done: subprocess.CompletedProcess) -> str:
    """A finished command's exit status and output, the end of each, for an assertion message."""
    return f"exit {done.returncode}\n--- stdout\n{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-3000:]}"


def patched_wheel(version: str = RUNNING) -> Path:
    """The project's patched durable-rules wheel for this Python (built by run.sh before the suite runs;
    built here when missing)."""
    wheels = sorted((ROOT / ".wheels" / f"py{version}").glob("durable_rules-*.whl"))
    if wheels:
        return wheels[0]
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "build_durable_rules.py")],
                          capture_output=True, text=True, timeout=INSTALL_SECONDS)
    assert done.returncode == 0, shown(done)
    return Path(done.stdout.strip())
