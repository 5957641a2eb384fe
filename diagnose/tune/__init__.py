"""Hyperparameter tuning: grid, random, Bayesian and evolutionary search on Optuna."""

from diagnose.tune.space import LogUniform, log_uniform
from diagnose.tune.study import TuneResult, tune
from diagnose.tune.trainer import tune_trainer

__all__ = ["LogUniform", "TuneResult", "log_uniform", "tune", "tune_trainer"]
