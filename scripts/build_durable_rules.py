#!/usr/bin/env python3
"""Build the project's patched durable-rules 2.0.28 wheel for the running Python, into .wheels/pyX.Y.

The recipe is ``cds/rules/durable_build.py`` (standard library only), shipped inside the package so that
an installed service can rebuild it too (``python -m cds.rules.durable_build --install``). This script runs
that file from a checkout before the project is installed (``run.sh``), with the checkout's ``.wheels/``
as its folder (the verified sdist is kept there). Prints the wheel's path on stdout; progress on stderr.

    python3.13 scripts/build_durable_rules.py            # -> .wheels/py3.13/durable_rules-2.0.28+cds.1-...
    python3.13 scripts/build_durable_rules.py --wheelhouse DIR
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

spec = importlib.util.spec_from_file_location("durable_build", ROOT / "cds" / "rules" / "durable_build.py")
assert spec is not None and spec.loader is not None
recipe = importlib.util.module_from_spec(spec)
spec.loader.exec_module(recipe)

if __name__ == "__main__":
    sys.exit(recipe.main(home=ROOT / ".wheels"))
