"""Hyperparameter tuning: grid, random, Bayesian and evolutionary search on Optuna.

Lazy (PEP 562), like the package: ``dg.tune`` on a plain function, a worker or ``diagnose
tune-status`` loads Optuna alone; ``tune_trainer`` loads torch and the Trainer when first used.
"""

from __future__ import annotations

import importlib
from typing import Any

_PUBLIC = {
    "LogUniform": "diagnose.tune.space", "log_uniform": "diagnose.tune.space", "TuneResult": "diagnose.tune.study",
    "tune": "diagnose.tune.study", "tune_trainer": "diagnose.tune.trainer",
}

__all__ = ["LogUniform", "TuneResult", "log_uniform", "tune", "tune_trainer"]


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'diagnose.tune' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_PUBLIC})
