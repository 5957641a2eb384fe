"""``dg.tune``: hyperparameter search on Optuna, so one study can span processes and machines."""

from __future__ import annotations

import inspect
import logging
import math
import numbers
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import numpy as np
import optuna
import pandas as pd

from diagnose import validate
from diagnose.tune.space import Dimension, decode, parse_space
from diagnose.tune.strategies import make_sampler

log = logging.getLogger(__name__)

Objective = Callable[..., float]


@dataclass
class TuneResult:
    """The outcome of a study: the best parameters and value, every trial, parameter importances."""

    best_params: dict[str, Any]
    best_value: float
    trials: pd.DataFrame
    importances: dict[str, float]
    direction: str
    study: optuna.Study
    histories: dict[int, pd.DataFrame] = field(default_factory=dict)

    def __repr__(self) -> str:
        done = int((self.trials["state"] == "COMPLETE").sum()) if len(self.trials) else 0
        return f"TuneResult(best_value={self.best_value:.4g}, best_params={self.best_params}, {done} trials complete)"


def _storage(url: str | None) -> optuna.storages.BaseStorage | None:
    if url is None:
        return None
    if "://" not in url or url.startswith("redis"):
        return url  # type: ignore[return-value]  # Optuna resolves journal/redis URLs itself
    from sqlalchemy.exc import SQLAlchemyError
    # SQLite: several worker processes on one machine wait for the write lock instead of failing
    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    for attempt in range(6):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
        except SQLAlchemyError:
            # workers started together race to create the schema of a new database: the loser
            # retries once the winner's tables exist
            if attempt == 5:
                raise
            time.sleep(0.2 * (attempt + 1) + random.random() * 0.3)
    raise AssertionError("unreachable")


def _wants_trial(objective: Objective) -> bool:
    try:
        return len(inspect.signature(objective).parameters) >= 2
    except (TypeError, ValueError):
        return False


def _as_value(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, np.floating)):
        raise TypeError(f"objective: must return a float, got {type(value).__name__} ({value!r})")
    return float(value)


def create_study(dims: list[Dimension], strategy: str, direction: str, seed: int | None, storage: str | None,
                 study_name: str | None, pruner: optuna.pruners.BasePruner | None = None) -> optuna.Study:
    """The Optuna study for a space and strategy (joined if it already exists in ``storage``)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our result and report say what happened
    return optuna.create_study(storage=_storage(storage), sampler=make_sampler(strategy, dims, seed),
                               pruner=pruner or optuna.pruners.NopPruner(), study_name=study_name,
                               direction=cast(Literal["minimize", "maximize"], direction),
                               load_if_exists=storage is not None)


def result_of(study: optuna.Study, direction: str, histories: dict[int, pd.DataFrame] | None = None) -> TuneResult:
    """Summarize a study (every trial, from every process that worked on it)."""
    rows = []
    for t in study.trials:
        duration = math.nan
        if t.datetime_complete is not None and t.datetime_start is not None:
            duration = (t.datetime_complete - t.datetime_start).total_seconds()
        last = max(t.intermediate_values) if t.intermediate_values else None
        rows.append({"number": t.number, **{k: decode(v) for k, v in t.params.items()},
                     "value": t.value if t.value is not None else math.nan, "state": t.state.name,
                     "duration_s": duration, "prune_reason": t.user_attrs.get("prune_reason"),
                     "last_reported": t.intermediate_values[last] if last is not None else math.nan,
                     "last_reported_step": last if last is not None else math.nan})
    trials = pd.DataFrame(rows)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        raise RuntimeError("tune: no trial completed; see the trials' states and prune reasons")
    importances: dict[str, float] = {}
    if len(complete) >= 4 and len(study.best_params) > 1:
        try:
            importances = dict(optuna.importance.get_param_importances(study))
        except (RuntimeError, ValueError) as err:  # e.g. a parameter that never varied
            log.info("parameter importances unavailable: %s", err)
    return TuneResult({k: decode(v) for k, v in study.best_params.items()}, float(study.best_value), trials,
                      importances, direction, study, histories or {})


def tune(
    space: Mapping[str, Any],
    objective: Objective,
    strategy: Literal["grid", "random", "bayes", "bayes_gp", "evolutionary"] = "bayes",
    n_trials: int | None = 50,
    direction: Literal["minimize", "maximize"] = "minimize",
    seed: int | None = 0,
    storage: str | None = None,
    study_name: str | None = None,
    timeout: float | None = None,
    pruner: optuna.pruners.BasePruner | None = None,
    progress: bool = False,
) -> TuneResult:
    """Search ``space`` for the parameters that optimize ``objective(params) -> float``.

    Args:
        space: ``name -> list`` (categories; a grid's values), ``(low, high)`` (uniform float, or int
            when both ends are ints), ``dg.log_uniform(low, high)``.
        objective: ``objective(params)``, or ``objective(params, trial)`` to report intermediate
            values (``trial.report``) for pruning. Raise ``optuna.TrialPruned`` to prune.
        strategy: ``grid`` (each combination once; ``n_trials`` defaults to their number),
            ``random``, ``bayes`` (TPE), ``bayes_gp`` (Gaussian process), ``evolutionary`` (CMA-ES;
            a genetic algorithm when the space has categories).
        seed: makes a single-process study reproducible.
        storage, study_name: an Optuna storage URL (``sqlite:///tune.db``, ``postgresql://...``):
            every process started with the same pair works on one study, and the result covers
            all their trials.
    """
    dims = parse_space(space)
    validate.one_of("direction", direction, ("minimize", "maximize"))
    if strategy == "grid" and n_trials is None:
        n_trials = int(np.prod([len(d.values) for d in dims])) if all(d.kind == "categorical" for d in dims) else None
    if n_trials is not None:
        validate.positive_int("n_trials", n_trials)
    if not callable(objective):
        raise TypeError(f"objective: expected a callable params -> float, got {type(objective).__name__}")
    study = create_study(dims, strategy, direction, seed, storage, study_name, pruner)
    with_trial = _wants_trial(objective)

    def run(trial: optuna.Trial) -> float:
        params = {d.name: decode(d.suggest(trial)) for d in dims}
        value = objective(params, trial) if with_trial else objective(params)
        return _as_value(value)

    study.optimize(run, n_trials=n_trials, timeout=timeout, show_progress_bar=progress,
                   catch=(), gc_after_trial=False)
    return result_of(study, direction)
