"""A CDS Hooks 2.0 service giving bone-health advice for patients on aromatase inhibitors.

The names below are imported on first use, so that ``import cds`` (and so the ``cds`` command's start-up
check of the rules engine, ``cds.rules.durable_build``) does not load durable-rules' C extension.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from cds.errors import CdsError
from cds.version import __version__

if TYPE_CHECKING:
    from cds.decide.evaluate import Evaluation, Evaluator
    from cds.web.app import create_app

__all__ = ["CdsError", "Evaluation", "Evaluator", "__version__", "create_app"]

_LAZY = {"Evaluation": "cds.decide.evaluate", "Evaluator": "cds.decide.evaluate", "create_app": "cds.web.app"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'cds' has no attribute {name!r}")
