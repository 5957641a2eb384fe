"""diagnose: is your PyTorch network training well, and why does it predict what it predicts.

The public names of shared/API.md are re-exported here.
"""

__version__ = "0.1.0"

from diagnose import datasets
from diagnose.explain import Explanation, LocalExplanation, compare_methods, explain, explain_prediction
from diagnose.explain import list_methods as list_explain_methods
from diagnose.findings import Finding, findings
from diagnose.models import cnn, mlp
from diagnose.report import report
from diagnose.monitor.run import Run, load_run
from diagnose.monitor.watch import Watch, watch
from diagnose.trainer.callbacks import Callback
from diagnose.trainer.compare import Comparison, compare_optimizers
from diagnose.trainer.cross_validation import CrossValidation, cross_validate
from diagnose.trainer.early_stopping import EarlyStopping
from diagnose.trainer.optimizers import list_optimizers
from diagnose.trainer.regularizers import L1, L2, Entropy, GaussianNoise, Regularizer
from diagnose.trainer.trainer import Trainer
from diagnose.tune import TuneResult, log_uniform, tune, tune_trainer

__all__ = [
    "Callback", "Comparison", "Explanation", "Finding", "LocalExplanation", "compare_methods", "explain",
    "explain_prediction", "findings", "list_explain_methods", "CrossValidation", "EarlyStopping", "Entropy", "GaussianNoise", "L1", "L2",
    "Regularizer", "Run", "Trainer", "Watch", "cnn", "compare_optimizers", "cross_validate", "datasets",
    "list_optimizers", "load_run", "log_uniform", "mlp", "report", "tune", "tune_trainer", "TuneResult", "watch",
    "__version__",
]
