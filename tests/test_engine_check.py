"""The start-up check of the rules engine's library (``cds.rules.durable_build.problem``): whatever the
import of durable-rules fails with, the ``cds`` command says it in one line that names the fix, exits 3 and
prints no traceback; a working engine passes unnoticed. (On Python 3.13 with PyPI's real build:
tests/test_install_doc.py.)

The failures are made by a finder on ``sys.meta_path`` that refuses durable-rules' C extension, so the
import system itself raises them, as the dynamic loader's error does.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cds.rules import durable_build

BLOCKER = textwrap.dedent("""
    import sys

    class Refuse:
        def find_spec(self, name, path=None, target=None):
            if name == {name!r}:
                raise {error}({message!r}, name={name!r})

    sys.meta_path.insert(0, Refuse())
""")


def _engine_refused(error: str, name: str, message: str, *args: str) -> subprocess.CompletedProcess:
    script = BLOCKER.format(error=error, name=name, message=message) + textwrap.dedent(f"""
        from cds.cli import main
        raise SystemExit(main({list(args)!r}))
    """)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=240)


UNDEFINED = ("/venv/lib/python3.13/site-packages/durable_rules_engine.cpython-313-x86_64-linux-gnu.so: "
             "undefined symbol: PyEval_CallObject")


@pytest.mark.parametrize("args", [["--version"], ["serve"], ["rules", "check"], ["audit", "list"], []])
def test_an_extension_that_does_not_load_stops_every_command_with_one_line(args):
    done = _engine_refused("ImportError", "durable_rules_engine", UNDEFINED, *args)
    version = "{}.{}".format(*sys.version_info[:2])
    assert done.returncode == 3 and done.stdout == "", done.stderr
    assert done.stderr == (
        f"cds: durable-rules {durable_build.installed_version()} cannot run on Python {version}: its C "
        f"extension does not load (undefined symbol: PyEval_CallObject); fix: {sys.executable} -m "
        "cds.rules.durable_build --install (builds and installs the patched durable-rules 2.0.28+cds.1)\n")


def test_no_durable_rules_at_all_stops_with_one_line():
    done = _engine_refused("ModuleNotFoundError", "durable", "No module named 'durable'",
                           "evaluate", "x.json")
    assert done.returncode == 3 and done.stdout == ""
    assert done.stderr.startswith("cds: durable-rules is not installed for Python ")
    assert done.stderr.endswith(f"; fix: {sys.executable} -m cds.rules.durable_build --install "
                                "(builds and installs the patched durable-rules 2.0.28+cds.1)\n")
    assert done.stderr.count("\n") == 1


def test_a_working_engine_passes():
    assert durable_build.problem() is None


@settings(max_examples=60, deadline=None)
@given(message=st.text(min_size=0, max_size=300), name=st.sampled_from(["durable_rules_engine", "durable"]),
       not_found=st.booleans())
def test_any_failure_of_durable_rules_is_one_line_naming_the_fix(message, name, not_found):
    """Whatever the loader says (newlines, control characters, nothing at all), the answer is one line."""
    error = ModuleNotFoundError if not_found else ImportError

    class Refuse:
        def find_spec(self, fullname, path=None, target=None):
            if fullname == name:
                raise error(f"{name}: {message}", name=name)
            return None

    saved = {k: sys.modules.pop(k) for k in ("cds.rules.engine", "durable.engine", "durable",
                                            "durable_rules_engine") if k in sys.modules}
    refuse = Refuse()
    sys.meta_path.insert(0, refuse)
    try:
        said = durable_build.problem()
    finally:
        sys.meta_path.remove(refuse)
        for k in ("cds.rules.engine", "durable.engine", "durable", "durable_rules_engine"):
            sys.modules.pop(k, None)
        sys.modules.update(saved)
    assert said is not None
    assert len(said.splitlines()) == 1
    assert said.startswith("durable-rules ")
    assert said.endswith(f"; fix: {durable_build.fix_command()} (builds and installs the patched "
                         "durable-rules 2.0.28+cds.1)")
