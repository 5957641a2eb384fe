"""Explanations: SHAP and Captum attributions behind one interface, with quality checks.

The methods (``explain/methods/``, one adapter each) register themselves when the registry is
first used, so importing this package does not import Captum or SHAP.
"""

from diagnose.explain.api import MethodComparison, compare_methods, explain, explain_prediction
from diagnose.explain.explanation import Explanation, LocalExplanation
from diagnose.explain.registry import METHODS, list_methods

__all__ = ["METHODS", "Explanation", "LocalExplanation", "MethodComparison", "compare_methods", "explain",
           "explain_prediction", "list_methods"]
