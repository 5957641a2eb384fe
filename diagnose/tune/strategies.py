"""Search strategies by name: each an Optuna sampler with the study's seed."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import optuna

from diagnose.registry import Registry
from diagnose.tune.space import Dimension

SamplerFactory = Callable[[list[Dimension], int | None], optuna.samplers.BaseSampler]


def _grid(dims: list[Dimension], seed: int | None) -> optuna.samplers.BaseSampler:
    continuous = [d.name for d in dims if d.kind != "categorical"]
    if continuous:
        raise ValueError(f"space: strategy 'grid' needs a list of values for every parameter; "
                         f"{continuous} {'is a range' if len(continuous) == 1 else 'are ranges'}")
    return optuna.samplers.GridSampler({d.name: list(d.values) for d in dims}, seed=seed)


def _random(dims: list[Dimension], seed: int | None) -> optuna.samplers.BaseSampler:
    return optuna.samplers.RandomSampler(seed=seed)


def _bayes(dims: list[Dimension], seed: int | None) -> optuna.samplers.BaseSampler:
    # TPE (Bergstra et al., 2011): handles categorical and conditional spaces, cheap per trial.
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=10, multivariate=True)


def _gp(dims: list[Dimension], seed: int | None) -> optuna.samplers.BaseSampler:
    # A Gaussian-process sampler: better on small continuous budgets, costlier per trial.
    return optuna.samplers.GPSampler(seed=seed)


def _evolutionary(dims: list[Dimension], seed: int | None) -> optuna.samplers.BaseSampler:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if all(d.kind != "categorical" for d in dims):
            # CMA-ES (Hansen, 2016) for continuous (and integer) spaces
            return optuna.samplers.CmaEsSampler(seed=seed, n_startup_trials=5)
        # a genetic algorithm (NSGA-II's selection, crossover and mutation) when there are categories
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=10)


STRATEGIES: Registry[SamplerFactory] = Registry("strategy")
STRATEGIES.add("grid", _grid)
STRATEGIES.add("random", _random)
STRATEGIES.add("bayes", _bayes)
STRATEGIES.add("bayes_gp", _gp)
STRATEGIES.add("evolutionary", _evolutionary)


def list_strategies() -> list[str]:
    """The search strategies ``dg.tune`` accepts."""
    return STRATEGIES.names()


def make_sampler(strategy: str, dims: list[Dimension], seed: int | None) -> optuna.samplers.BaseSampler:
    """The Optuna sampler of a strategy name, seeded."""
    return STRATEGIES.get(strategy)(dims, seed)
