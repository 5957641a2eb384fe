"""``dg.tune``: hyperparameter search on Optuna, so one study can span processes and machines."""

from __future__ import annotations

import inspect
import logging
import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import optuna
import pandas as pd

from diagnose import validate
from diagnose.tune import workers
from diagnose.tune.space import Dimension, decode, parse_space
from diagnose.tune.strategies import make_sampler

log = logging.getLogger(__name__)

Objective = Callable[..., float]


class NoTrialCompleted(RuntimeError):
    """Every trial of the study failed or was pruned: there is no best (``study`` says why)."""

    def __init__(self, message: str, study: optuna.Study) -> None:
        super().__init__(message)
        self.study = study


# The columns of ``TuneResult.trials`` that are not parameters.
TRIAL_COLUMNS = ("number", "value", "state", "duration_s", "prune_reason", "last_reported", "last_reported_step",
                 "run_dir")


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

    @property
    def param_names(self) -> list[str]:
        """The tuned parameters (the columns of ``trials`` that are not bookkeeping)."""
        return [c for c in self.trials.columns if c not in TRIAL_COLUMNS]

    @property
    def run_dirs(self) -> dict[int, Path]:
        """Trial number -> the run directory of its diagnostics (``tune_trainer(run_dir=...)``), for
        the trials of every worker that recorded one."""
        if "run_dir" not in self.trials:
            return {}
        rows = self.trials.dropna(subset=["run_dir"])
        return {int(n): Path(d) for n, d in zip(rows["number"], rows["run_dir"])}

    def best_trials(self, k: int = 3) -> pd.DataFrame:
        """The ``k`` best complete trials, best first."""
        done = self.trials[self.trials["state"] == "COMPLETE"]
        return done.sort_values("value", ascending=self.direction == "minimize").head(k)

    def best_run_dirs(self, k: int = 3) -> list[Path]:
        """The recorded runs of the ``k`` best complete trials that have one, best first: what
        ``dg.compare(result.best_run_dirs(3))`` puts side by side."""
        validate.positive_int("k", k)
        dirs = self.run_dirs
        return [dirs[int(n)] for n in self.best_trials(len(self.trials))["number"] if int(n) in dirs][:k]

    def __repr__(self) -> str:
        done = int((self.trials["state"] == "COMPLETE").sum()) if len(self.trials) else 0
        return f"TuneResult(best_value={self.best_value:.4g}, best_params={self.best_params}, {done} trials complete)"


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
                 study_name: str | None, pruner: optuna.pruners.BasePruner | None = None,
                 heartbeat: float | None = workers.HEARTBEAT_SECONDS) -> tuple[optuna.Study, bool]:
    """The Optuna study for a space and strategy, and whether this call created it (a study
    already in ``storage`` under ``study_name`` is joined)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our result and report say what happened
    sampler = make_sampler(strategy, dims, seed)
    pruner = pruner or optuna.pruners.NopPruner()
    goal = cast(Literal["minimize", "maximize"], direction)
    if storage is None:
        return optuna.create_study(sampler=sampler, pruner=pruner, study_name=study_name, direction=goal), True
    backend = workers.storage_from_url(storage, heartbeat)
    try:
        return optuna.create_study(storage=backend, sampler=sampler, pruner=pruner, study_name=study_name,
                                   direction=goal), True
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=study_name, storage=backend, sampler=sampler, pruner=pruner)
        if study.direction.name.lower() != direction:
            raise ValueError(f"direction: study {study_name!r} in {storage} is to {study.direction.name.lower()}, "
                             f"not {direction}") from None
        return study, False


def run_trials(study: optuna.Study, objective: Callable[[optuna.Trial], float], n_trials: int | None,
               shared: bool, created: bool, timeout: float | None = None, progress: bool = False) -> None:
    """Run the study: in this process alone (``optimize``), or as one worker of a shared study
    whose budget of ``n_trials`` is queued once, by its creator (``workers.py``)."""
    if not shared or n_trials is None:
        study.optimize(objective, n_trials=n_trials, timeout=timeout, show_progress_bar=progress,
                       catch=(), gc_after_trial=False)
        return
    if created:
        workers.queue_budget(study, n_trials)
    else:
        workers.wait_for_budget(study, n_trials)
    workers.work(study, objective, timeout)


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
                     "last_reported_step": last if last is not None else math.nan,
                     "run_dir": t.user_attrs.get("run_dir")})
    trials = pd.DataFrame(rows)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        raise NoTrialCompleted(f"tune: no trial of study {study.study_name!r} completed; see the trials' states and "
                               "prune reasons", study)
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
    heartbeat: float | None = workers.HEARTBEAT_SECONDS,
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
        storage, study_name: a storage URL (``sqlite:///runs/tune.db``, ``postgresql://user@host/db``,
            ``journal:///path/study.log``): every process started with the same pair works on one
            study of ``n_trials`` trials in all (queued by the process that creates it; the others
            take queued trials until none is left), and the result covers all their trials.
        heartbeat: seconds between a running trial's heartbeats in an RDB storage; a trial silent
            for 3 heartbeats (its worker was killed) is marked failed and run again by another
            worker (``diagnose/tune/workers.py``). None: no heartbeats, no retries.
    """
    dims = parse_space(space)
    validate.one_of("direction", direction, ("minimize", "maximize"))
    if strategy == "grid" and n_trials is None:
        n_trials = int(np.prod([len(d.values) for d in dims])) if all(d.kind == "categorical" for d in dims) else None
    if n_trials is not None:
        validate.positive_int("n_trials", n_trials)
    if not callable(objective):
        raise TypeError(f"objective: expected a callable params -> float, got {type(objective).__name__}")
    study, created = create_study(dims, strategy, direction, seed, storage, study_name, pruner, heartbeat)
    with_trial = _wants_trial(objective)

    def run(trial: optuna.Trial) -> float:
        params = {d.name: decode(d.suggest(trial)) for d in dims}
        value = objective(params, trial) if with_trial else objective(params)
        return _as_value(value)

    run_trials(study, run, n_trials, storage is not None, created, timeout, progress)
    return result_of(study, direction)
