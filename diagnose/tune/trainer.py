"""``dg.tune_trainer``: tune the Trainer's hyperparameters, with k-fold cross-validation per trial
(the GridSearchCV / RandomizedSearchCV pattern) and pruning of bad trials, including trials whose
training produces non-finite values or exploding gradients."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, ItemsView, Iterator, KeysView, Mapping, ValuesView
from pathlib import Path
from typing import Any, cast

import numpy as np
import optuna
import pandas as pd
import torch
from torch import nn

from diagnose.findings.divergence import CRITICAL_FACTOR
from diagnose.trainer.callbacks import Callback
from diagnose.trainer.cross_validation import cross_validate
from diagnose.trainer.data import DataLike
from diagnose.trainer.losses import resolve_loss
from diagnose.trainer.optimizers import resolve_optimizer
from diagnose.trainer.regularizers import L1, L2
from diagnose.trainer.trainer import Trainer
from diagnose.tune.space import decode, parse_space
from diagnose.tune.study import TuneResult, create_study, result_of, run_trials
from diagnose.tune.workers import HEARTBEAT_SECONDS
from diagnose.validate import did_you_mean

# Parameters the trainer takes itself; every other parameter goes to model_fn only.
TRAINER_PARAMS = ("optimizer", "lr", "batch_size", "l1", "l2", "momentum")
# A trial whose total gradient norm grows 1000x above its first epoch's median is exploding
# (the same factor as the exploding_gradient finding).
EXPLODING_GROWTH = 1e3
GRAD_CHECK_EVERY = 10  # steps between gradient-norm samples (one fused norm each)
RUNAWAY = CRITICAL_FACTOR  # an epoch's train loss this many times the first step's: diverged


class _TrialGuard(Callback):
    """Reports the monitored metric to Optuna each epoch and prunes the trial when the pruner says
    so, or when training goes non-finite, its gradients explode or its loss runs away (10x the
    first step's, the divergence finding's critical level). The reason is kept on the trial."""

    def __init__(self, trial: optuna.Trial, metric: str, prune: bool) -> None:
        self.trial, self.metric, self.prune = trial, metric, prune
        self.norms: list[torch.Tensor] = []
        self.baseline: float | None = None
        self.first_loss: torch.Tensor | float | None = None

    def on_step_end(self, trainer: Trainer, step: int, loss: torch.Tensor) -> None:
        if self.first_loss is None:
            self.first_loss = loss.detach()  # read at the epoch's end: no sync here
        if step % GRAD_CHECK_EVERY == 0:
            grads = [p.grad.detach() for p in trainer.model.parameters() if p.grad is not None]
            if grads:
                self.norms.append(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads))))

    def _stop(self, reason: str) -> None:
        self.trial.set_user_attr("prune_reason", reason)
        raise optuna.TrialPruned(reason)

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: Mapping[str, float]) -> None:
        norms = torch.stack(self.norms).cpu().numpy() if self.norms else np.zeros(0)  # note: one sync per epoch
        self.norms = []
        train_loss = logs.get("train_loss", 0.0)
        if not math.isfinite(train_loss) or not np.isfinite(norms).all():
            self._stop(f"non-finite values in training at epoch {epoch} (loss or gradients)")
        if isinstance(self.first_loss, torch.Tensor):
            self.first_loss = float(self.first_loss)
        if self.first_loss is not None and self.first_loss > 0 and train_loss > RUNAWAY * self.first_loss:
            # the divergence finding's critical level: a loss that ran away from where it started (a
            # blow-up that left dead units behind keeps it finite, and its gradients small again)
            self._stop(f"diverged at epoch {epoch}: train loss {train_loss:.4g}, more than {RUNAWAY:g}x the "
                       f"first step's {self.first_loss:.4g}")
        if len(norms):
            if self.baseline is None:
                self.baseline = float(np.median(norms))
            elif self.baseline > 0 and norms.max() > EXPLODING_GROWTH * self.baseline:
                self._stop(f"exploding gradients at epoch {epoch}: norm {norms.max():.3g}, "
                           f"{norms.max() / self.baseline:.3g}x the first epoch's median")
        value = logs.get(self.metric)
        if value is None:
            return
        self.trial.report(float(value), epoch)
        if self.prune and self.trial.should_prune():
            self._stop(f"{self.metric} {value:.4g} at epoch {epoch} was worse than the median of earlier trials")


class _ReadParams(dict[str, Any]):
    """The trial's parameters as ``model_fn`` sees them, noting which it reads: a parameter that
    is neither the Trainer's nor read by ``model_fn`` is a misspelling or a no-op, and an error."""

    def __init__(self, params: dict[str, Any]) -> None:
        super().__init__(params)
        self.read: set[str] = set()

    def __getitem__(self, key: str) -> Any:
        self.read.add(key)
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        self.read.add(key)
        return super().get(key, default)

    def __contains__(self, key: object) -> bool:
        self.read.add(str(key))
        return super().__contains__(key)

    # ``**params`` and iteration read every one
    def keys(self) -> KeysView[str]:  # type: ignore[override]
        self.read.update(super().keys())
        return super().keys()

    def items(self) -> ItemsView[str, Any]:  # type: ignore[override]
        self.read.update(super().keys())
        return super().items()

    def values(self) -> ValuesView[Any]:  # type: ignore[override]
        self.read.update(super().keys())
        return super().values()

    def __iter__(self) -> Iterator[str]:
        self.read.update(super().keys())
        return super().__iter__()


def _call_model_fn(model_fn: Callable[..., nn.Module], params: dict[str, Any]) -> nn.Module:
    takes_params = len(inspect.signature(model_fn).parameters) > 0
    seen = _ReadParams(params)
    model = model_fn(seen) if takes_params else model_fn()
    if not isinstance(model, nn.Module):
        raise TypeError(f"model_fn: must return an nn.Module, got {type(model).__name__}")
    unused = [name for name in params if name not in TRAINER_PARAMS and name not in seen.read]
    if unused:
        read = sorted(seen.read & set(params))
        hints = [f"{name!r}{did_you_mean(name, [*TRAINER_PARAMS, *read])}" for name in unused]
        raise ValueError(f"space: {', '.join(hints)} {'is' if len(unused) == 1 else 'are'} neither a Trainer "
                         f"parameter ({', '.join(TRAINER_PARAMS)}) nor read by model_fn"
                         + ("" if takes_params else " (it takes no parameters)")
                         + ": tuning it would change nothing")
    return model


def _trainer_kwargs(params: dict[str, Any], fixed: dict[str, Any],
                    batch_size: int | None) -> tuple[dict[str, Any], int | None]:
    kwargs = dict(fixed)
    name = params.get("optimizer", kwargs.pop("optimizer", "adam"))
    kwargs["optimizer"] = name
    if "lr" in params:
        kwargs["lr"] = params["lr"]
    if "momentum" in params:
        kwargs["optimizer_kwargs"] = {**kwargs.get("optimizer_kwargs", {}), "momentum": params["momentum"]}
    regularizers = list(kwargs.pop("regularizers", ()))
    if params.get("l2"):
        regularizers.append(L2(params["l2"]))
    if params.get("l1"):
        regularizers.append(L1(params["l1"]))
    kwargs["regularizers"] = regularizers
    batch_size = params.get("batch_size", batch_size) if resolve_optimizer(name).batch_mode == "mini" else None
    return kwargs, batch_size


def tune_trainer(
    model_fn: Callable[..., nn.Module],
    train: DataLike,
    val: DataLike | None,
    space: Mapping[str, Any],
    strategy: str = "random",
    n_trials: int | None = 20,
    epochs: int = 10,
    batch_size: int | None = None,
    metric: str = "val_loss",
    direction: str | None = None,
    folds: int | None = None,
    prune: bool = True,
    seed: int = 0,
    storage: str | None = None,
    study_name: str | None = None,
    progress: bool = False,
    heartbeat: float | None = HEARTBEAT_SECONDS,
    run_dir: str | Path | None = None,
    **trainer_kwargs: Any,
) -> TuneResult:
    """Tune the Trainer: each trial builds ``model_fn(params)`` and trains it with the trial's
    ``optimizer``, ``lr``, ``batch_size``, ``l1``, ``l2``, ``momentum`` (other parameters, such as
    hidden units or dropout, are for ``model_fn``).

    Args:
        val: validation data (required unless ``folds`` is set).
        batch_size: for mini-batch optimizers, unless the space has ``batch_size``.
        metric: ``val_loss`` (minimized) or ``val_accuracy`` (maximized) by default direction.
        folds: k-fold cross-validation per trial on ``train`` (the mean held-out metric is the
            trial's value); without it, the metric on ``val`` after training.
        prune: stop trials whose intermediate metric is worse than the median of earlier trials
            at the same epoch (Optuna's MedianPruner). Trials whose training goes non-finite or
            whose gradients explode are always stopped; ``trials["prune_reason"]`` says why.
        storage, study_name, heartbeat: several processes on one study (see ``dg.tune``).
        run_dir: record each trial's diagnostics in ``run_dir/trial-<number>`` (with folds, one
            sub-directory per fold inside it); ``result.run_dirs`` and the report's tuning section
            link them; ``dg.compare(result.best_run_dirs(3))`` puts the best trials' runs side by side.
        trainer_kwargs: fixed ``dg.Trainer`` arguments (loss, regularizers, early_stopping, ...).

    A space parameter that is neither the Trainer's nor read by ``model_fn`` (a misspelling such
    as ``hiden``) is an error at the first trial, before any training.
    """
    dims = parse_space(space)
    _, loss_spec = resolve_loss(trainer_kwargs.get("loss", "cross_entropy"))
    metrics = ["val_loss"] + (["val_accuracy"] if loss_spec is not None and loss_spec.classification else [])
    if metric not in metrics:
        raise ValueError(f"metric: expected one of {metrics} (what the Trainer measures on the validation data "
                         f"with this loss), got {metric!r}{did_you_mean(metric, metrics)}")
    if "run_dir" in trainer_kwargs:
        raise TypeError("run_dir: pass it to tune_trainer itself (each trial records into its own sub-directory)")
    if val is None and folds is None:
        raise ValueError("val: validation data is required (or set folds=k for cross-validation)")
    if folds is not None and not (isinstance(train, (tuple, list)) and len(train) == 2):
        raise TypeError(f"train: folds=k cross-validates an (X, y) pair of arrays or tensors, got "
                        f"{type(train).__name__}; pass the pair, or val= without folds")
    direction = direction or ("maximize" if "accuracy" in metric else "minimize")
    pruner = optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1) if prune and folds is None else None
    study, created = create_study(dims, strategy, direction, seed, storage, study_name, pruner, heartbeat)
    histories: dict[int, pd.DataFrame] = {}
    trainer_kwargs.setdefault("progress", False)
    trial_metric = metric.removeprefix("val_")

    def objective(trial: optuna.Trial) -> float:
        params = {d.name: decode(d.suggest(trial)) for d in dims}
        kwargs, fit_batch = _trainer_kwargs(params, trainer_kwargs, batch_size)
        if run_dir is not None:  # the trial's diagnostics, readable by every worker and the report
            kwargs["run_dir"] = str((Path(run_dir) / f"trial-{trial.number:04d}").resolve())
            trial.set_user_attr("run_dir", kwargs["run_dir"])
        torch.manual_seed(seed + trial.number)
        if folds is not None:
            pair = cast(tuple[Any, Any], train)  # checked above
            cv = cross_validate(lambda: _call_model_fn(model_fn, params), pair, k=folds, epochs=epochs,
                                batch_size=fit_batch, seed=seed + trial.number, **kwargs)
            histories[trial.number] = cv.histories[0]
            return float(cv.mean[metric])
        guard = _TrialGuard(trial, metric, prune)
        trainer = Trainer(_call_model_fn(model_fn, params), seed=seed + trial.number,
                          callbacks=[*kwargs.pop("callbacks", ()), guard], **kwargs)
        histories[trial.number] = trainer.fit(train, val, epochs=epochs, batch_size=fit_batch)
        value = trainer.evaluate(cast(DataLike, val))[trial_metric]  # checked above: folds is None here
        if not math.isfinite(value):
            guard._stop("non-finite validation metric after training")
        return float(value)

    run_trials(study, objective, n_trials, storage is not None, created, progress=progress)
    return result_of(study, direction, histories)
