"""A CDS Hooks 2.0 service giving bone-health advice for patients on aromatase inhibitors."""

from cds.decide.evaluate import Evaluation, Evaluator
from cds.errors import CdsError
from cds.version import __version__
from cds.web.app import create_app

__all__ = ["CdsError", "Evaluation", "Evaluator", "__version__", "create_app"]
