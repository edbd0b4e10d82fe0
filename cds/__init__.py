"""A CDS Hooks 2.0 service giving bone-health advice for patients on aromatase inhibitors."""

from .app import create_app
from .errors import CdsError
from .evaluate import Evaluation, Evaluator

__version__ = "0.1.0"
__all__ = ["CdsError", "Evaluation", "Evaluator", "__version__", "create_app"]
