"""docs/install.md's plain-pip blocks, run line by line as written, each in a fresh clone with the Python it
names; on 3.13, between ``pip install .`` (PyPI's durable-rules) and the fix, every ``cds`` command stops at
start-up with the one line that names the problem and the fix, exit status 3, no traceback.

Each block runs in the test session of its own Python; the 3.12 block, which CI has no session for (it runs
3.11 and 3.13), runs in the 3.11 session.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import click
import pytest
from install_support import INSTALL_SECONDS, ROOT, RUNNING, clean_clone, find_python, operator_env, run, shown

from cds.cli import ENGINE_UNAVAILABLE, cli
from cds.version import __version__

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3 * INSTALL_SECONDS)]

FIX_LINE = "python -m cds.rules.durable_build --install"


def plain_pip_blocks(text: str) -> dict[str, str]:
    """The section's ```sh blocks, by the Python version their first line makes a venv with."""
    section = text.split("\n## With plain pip\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
    return {re.match(r"python(3\.\d+) -m venv ", block).group(1): block for block in blocks}


BLOCKS = plain_pip_blocks((ROOT / "docs" / "install.md").read_text(encoding="utf-8"))


def runs_here(version: str) -> bool:
    return version == RUNNING or (version == "3.12" and RUNNING == "3.11")


def every_command_line() -> list[list[str]]:
    """Every ``cds`` command and subcommand (from the command line's own tree), ``--version``, ``--help``."""
    found: list[list[str]] = [["--version"], ["--help"]]

    def walk(group: click.Group, path: list[str]) -> None:
        for name, command in sorted(group.commands.items()):
            if isinstance(command, click.Group):
                walk(command, [*path, name])
            else:
                found.append([*path, name])

    walk(cli, [])
    return found


def _bash(lines: list[str], clone: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    script = "set -euo pipefail\n" + "\n".join(lines) + "\n"
    return run(["bash", "-c", script], clone, env, timeout=INSTALL_SECONDS)


def test_the_doc_has_a_block_for_each_supported_python():
    assert sorted(BLOCKS) == ["3.11", "3.12", "3.13"]
    for version, block in BLOCKS.items():
        assert "pip install .\n" in block and "cds --version\n" in block
        assert (FIX_LINE in block) == (version == "3.13")


@pytest.mark.parametrize("version", sorted(BLOCKS))
def test_the_plain_pip_block_runs(version, tmp_path):
    if not runs_here(version):
        session = "3.11 (or 3.12)" if version == "3.12" else version
        pytest.skip(f"the {version} block runs in the Python {session} session")
    python = find_python(version)
    if python is None:
        pytest.skip(f"no Python {version} interpreter here (python{version} on PATH or pyenv's)")
    clone = clean_clone(tmp_path / "clone")
    # `pythonX.Y` on PATH as the doc's first line calls it (a pyenv shim may not run it)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / f"python{version}").symlink_to(python)
    env = operator_env()
    env["PATH"] = f"{bin_dir}:{env.get('PATH', '')}"
    lines = [line for line in BLOCKS[version].splitlines() if line.strip()]

    if FIX_LINE in lines:
        fix_at = lines.index(FIX_LINE)
        installed = _bash(lines[:fix_at], clone, env)
        assert installed.returncode == 0, shown(installed)
        _every_command_stops_with_one_line(clone / "venv", version, env)
        lines = [lines[0], *lines[fix_at:]]  # the venv's first line again: it activates the venv

    done = _bash(lines, clone, env)
    assert done.returncode == 0, shown(done)
    assert f"cds {__version__}\n" in done.stdout, shown(done)
    assert re.search(r"^rule pack bone-health-ai \S+: \d+ rules OK ", done.stdout, re.M), shown(done)


def _every_command_stops_with_one_line(venv: Path, version: str, env: dict[str, str]) -> None:
    python = venv / "bin" / "python"
    # the fix names this venv's own interpreter (python, python3 or python3.13: as the script was written)
    expected = re.compile(
        re.escape(f"cds: durable-rules 2.0.28 cannot run on Python {version}: its C extension does not load "
                  f"(undefined symbol: PyEval_CallObject); fix: {python}") + r"(3(\.\d+)?)?"
        + re.escape(" -m cds.rules.durable_build --install (builds and installs the patched durable-rules "
                    "2.0.28+cds.1)") + "\n")
    site = venv.parent / "elsewhere"
    site.mkdir()
    commands = every_command_line()
    assert ["serve"] in commands and ["rules", "check"] in commands and ["audit", "list"] in commands
    for args in commands:
        done = run([str(venv / "bin" / "cds"), *args], site, env)
        said = f"cds {' '.join(args)}: {shown(done)}"
        assert done.returncode == ENGINE_UNAVAILABLE and done.stdout == "", said
        assert expected.fullmatch(done.stderr), said
    # `python -m cds` is the same command
    done = run([str(python), "-m", "cds", "serve"], site, env)
    assert done.returncode == ENGINE_UNAVAILABLE and expected.fullmatch(done.stderr), shown(done)
