"""Explanations: SHAP and Captum attributions behind one interface, with quality checks."""

from diagnose.explain import methods  # noqa: F401 - registers the methods
from diagnose.explain.api import MethodComparison, compare_methods, explain, explain_prediction
from diagnose.explain.explanation import Explanation, LocalExplanation
from diagnose.explain.registry import METHODS, list_methods

__all__ = ["METHODS", "Explanation", "LocalExplanation", "MethodComparison", "compare_methods", "explain",
           "explain_prediction", "list_methods"]
