"""diagnose: is your PyTorch network training well, and why does it predict what it predicts.

The public names of shared/API.md, loaded on first use (PEP 562): ``import diagnose`` costs
torch's import and little more, and ``dg.watch`` does not load SHAP, Captum, Optuna, matplotlib,
scikit-learn, SciPy or Jinja2; the first ``dg.explain``/``dg.report``/``dg.tune`` does.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> (module, attribute); None: the module itself
_PUBLIC: dict[str, tuple[str, str | None]] = {
    "datasets": ("diagnose.datasets", None),
    "Explanation": ("diagnose.explain.explanation", "Explanation"),
    "LocalExplanation": ("diagnose.explain.explanation", "LocalExplanation"),
    "compare_methods": ("diagnose.explain.api", "compare_methods"),
    "explain": ("diagnose.explain.api", "explain"),
    "explain_prediction": ("diagnose.explain.api", "explain_prediction"),
    "ExplanationConsistency": ("diagnose.explain.consistency", "ExplanationConsistency"),
    "explanation_consistency": ("diagnose.explain.consistency", "explanation_consistency"),
    "list_explain_methods": ("diagnose.explain.registry", "list_methods"),
    "Finding": ("diagnose.findings.base", "Finding"),
    "findings": ("diagnose.findings", "findings"),
    "list_finding_rules": ("diagnose.findings", "list_rules"),
    "cnn": ("diagnose.models", "cnn"),
    "mlp": ("diagnose.models", "mlp"),
    "Run": ("diagnose.monitor.run", "Run"),
    "load_run": ("diagnose.monitor.run", "load_run"),
    "list_statistics": ("diagnose.monitor.statistics", "list_statistics"),
    "Watch": ("diagnose.monitor.watch", "Watch"),
    "watch": ("diagnose.monitor.watch", "watch"),
    "report": ("diagnose.report", "report"),
    "compare": ("diagnose.report.compare", "compare"),
    "preflight": ("diagnose.preflight", "preflight"),
    "Preflight": ("diagnose.preflight", "Preflight"),
    "Callback": ("diagnose.trainer.callbacks", "Callback"),
    "Comparison": ("diagnose.trainer.compare", "Comparison"),
    "compare_optimizers": ("diagnose.report.compare", "compare_optimizers"),
    "CrossValidation": ("diagnose.trainer.cross_validation", "CrossValidation"),
    "cross_validate": ("diagnose.trainer.cross_validation", "cross_validate"),
    "EarlyStopping": ("diagnose.trainer.early_stopping", "EarlyStopping"),
    "list_losses": ("diagnose.trainer.losses", "list_losses"),
    "list_optimizers": ("diagnose.trainer.optimizers", "list_optimizers"),
    "Entropy": ("diagnose.trainer.regularizers", "Entropy"),
    "GaussianNoise": ("diagnose.trainer.regularizers", "GaussianNoise"),
    "L1": ("diagnose.trainer.regularizers", "L1"),
    "L2": ("diagnose.trainer.regularizers", "L2"),
    "Regularizer": ("diagnose.trainer.regularizers", "Regularizer"),
    "Trainer": ("diagnose.trainer.trainer", "Trainer"),
    "TuneResult": ("diagnose.tune.study", "TuneResult"),
    "list_strategies": ("diagnose.tune.strategies", "list_strategies"),
    "log_uniform": ("diagnose.tune.space", "log_uniform"),
    "tune": ("diagnose.tune.study", "tune"),
    "tune_trainer": ("diagnose.tune.trainer", "tune_trainer"),
}
__all__ = [  # the keys of _PUBLIC (a test checks they agree), written out for tools that read it
    "Callback", "Comparison", "CrossValidation", "EarlyStopping", "Entropy", "Explanation",
    "ExplanationConsistency", "Finding", "GaussianNoise", "L1", "L2", "LocalExplanation", "Regularizer", "Run",
    "Trainer", "TuneResult", "Watch", "__version__", "cnn", "compare", "compare_methods", "compare_optimizers",
    "cross_validate", "datasets", "explain", "explain_prediction", "explanation_consistency", "findings",
    "list_explain_methods", "list_finding_rules", "list_losses", "list_optimizers", "list_statistics",
    "list_strategies", "load_run", "log_uniform", "mlp", "Preflight", "preflight", "report", "tune", "tune_trainer",
    "watch",
]

# Five public functions share the name of the subpackage that defines them. Python binds a
# subpackage onto its parent when it is first imported (``diagnose.report = <module>``), which
# would hide ``dg.report`` the function; the package keeps the function instead.
_SHADOWED = frozenset({"explain", "findings", "preflight", "report", "tune"})


class _Package(types.ModuleType):
    def __setattr__(self, name: str, value: Any) -> None:
        if name in _SHADOWED and isinstance(value, types.ModuleType):
            return  # the import system binding a subpackage: dg.<name> stays the function
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'diagnose' has no attribute {name!r}")
    module_name, attribute = _PUBLIC[name]
    module = importlib.import_module(module_name)
    value = module if attribute is None else getattr(module, attribute)
    globals()[name] = value  # the next access is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_PUBLIC})


if TYPE_CHECKING:  # what the names are, for type checkers and editors
    from diagnose import datasets
    from diagnose.explain.api import compare_methods, explain, explain_prediction
    from diagnose.explain.consistency import ExplanationConsistency, explanation_consistency
    from diagnose.explain.explanation import Explanation, LocalExplanation
    from diagnose.explain.registry import list_methods as list_explain_methods
    from diagnose.findings import findings
    from diagnose.findings import list_rules as list_finding_rules
    from diagnose.findings.base import Finding
    from diagnose.models import cnn, mlp
    from diagnose.monitor.run import Run, load_run
    from diagnose.monitor.statistics import list_statistics
    from diagnose.monitor.watch import Watch, watch
    from diagnose.preflight import Preflight, preflight
    from diagnose.report import report
    from diagnose.report.compare import compare, compare_optimizers
    from diagnose.trainer.callbacks import Callback
    from diagnose.trainer.compare import Comparison
    from diagnose.trainer.cross_validation import CrossValidation, cross_validate
    from diagnose.trainer.early_stopping import EarlyStopping
    from diagnose.trainer.losses import list_losses
    from diagnose.trainer.optimizers import list_optimizers
    from diagnose.trainer.regularizers import L1, L2, Entropy, GaussianNoise, Regularizer
    from diagnose.trainer.trainer import Trainer
    from diagnose.tune.space import log_uniform
    from diagnose.tune.strategies import list_strategies
    from diagnose.tune.study import TuneResult, tune
    from diagnose.tune.trainer import tune_trainer
