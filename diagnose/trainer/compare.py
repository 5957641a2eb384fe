"""Compare optimizers: the same model, data and seed under each, as curves and a figure."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd
import torch
from matplotlib.figure import Figure
from torch import nn

from diagnose.trainer.callbacks import Callback
from diagnose.trainer.data import DataLike
from diagnose.trainer.optimizers import resolve_optimizer
from diagnose.trainer.trainer import Trainer

OptimizerChoice = str | tuple[str, Mapping[str, Any]]


class Comparison(NamedTuple):
    """``curves``: one row per (optimizer, epoch); ``figure``: the loss (and accuracy) curves.
    With ``run_dir=``, ``run_dirs`` holds each optimizer's recorded run (by label) and ``page`` the
    comparison page ``dg.compare_optimizers`` wrote from them (unpacking still gives two items)."""

    curves: pd.DataFrame
    figure: Figure


class RecordedComparison(Comparison):
    """A Comparison whose runs were recorded: ``run_dirs`` (label -> directory) and ``page``."""

    run_dirs: dict[str, str]
    page: Any


def _label(choice: OptimizerChoice) -> tuple[str, str, dict[str, Any]]:
    if isinstance(choice, str):
        return choice, choice, {}
    if isinstance(choice, tuple) and len(choice) == 2 and isinstance(choice[0], str) and isinstance(choice[1], Mapping):
        name, kwargs = choice
        args = ", ".join(f"{k}={v}" for k, v in kwargs.items())
        return (f"{name}({args})" if args else name), name, dict(kwargs)
    raise TypeError(f"optimizers: each entry must be a name or a (name, kwargs) pair, got {choice!r}")


def compare_optimizers(
    model_fn: Callable[[], nn.Module],
    train: DataLike,
    val: DataLike | None = None,
    optimizers: Sequence[OptimizerChoice] = ("sgd", "momentum", "nag", "adagrad", "rmsprop", "adadelta", "adam"),
    epochs: int = 10,
    batch_size: int | None = None,
    seed: int = 0,
    run_dir: str | Path | None = None,
    **trainer_kwargs: Any,
) -> Comparison:
    """Train ``model_fn()`` once per optimizer, from identical initial weights, data order and seed.

    Args:
        model_fn: builds the model; called after ``torch.manual_seed(seed)``, so every optimizer
            starts from the same weights.
        optimizers: names (``"adam"``) or ``(name, kwargs)`` pairs (``("momentum", {"lr": 0.05})``).
        batch_size: for mini-batch optimizers (``gd`` and ``sgd`` fix their own batching).
        run_dir: record each optimizer's run in a sub-directory named by its label (diagnostics
            included), so the runs can be compared on one page (``dg.compare``).
        trainer_kwargs: passed to every ``dg.Trainer`` (loss, regularizers, ...).

    Returns:
        ``(curves, figure)``: curves has ``optimizer``, ``epoch``, the trainer's metrics,
        cumulative ``steps`` and ``seconds``.
    """
    if not optimizers:
        raise ValueError("optimizers: expected at least one optimizer name")
    choices = [_label(c) for c in optimizers]
    labels = [c[0] for c in choices]
    if len(set(labels)) != len(labels):
        raise ValueError(f"optimizers: duplicate entries {labels}")
    trainer_kwargs.setdefault("progress", False)
    if "run_dir" in trainer_kwargs:
        raise TypeError("run_dir: pass it to compare_optimizers itself; each optimizer gets a sub-directory")
    frames = []
    run_dirs: dict[str, str] = {}
    for label, name, kwargs in choices:
        spec = resolve_optimizer(name)
        torch.manual_seed(seed)
        model = model_fn()
        lr = kwargs.pop("lr", None)
        if run_dir is not None:
            run_dirs[label] = str(Path(run_dir) / "".join(c if c.isalnum() or c in "-_." else "_" for c in label))
        trainer = Trainer(model, name, lr=lr, optimizer_kwargs=kwargs, seed=seed, run_dir=run_dirs.get(label),
                          **trainer_kwargs)
        clock = _EpochClock()
        trainer.callbacks.append(clock)
        clock.start = time.perf_counter()
        history = trainer.fit(train, val, epochs=epochs,
                              batch_size=batch_size if spec.batch_mode == "mini" else None)
        history.insert(0, "optimizer", label)
        history["steps"] = clock.steps
        history["seconds"] = clock.seconds
        frames.append(history)
    curves = pd.concat(frames, ignore_index=True)
    if run_dir is None:
        return Comparison(curves, plot_curves(curves))
    result = RecordedComparison(curves, plot_curves(curves))
    result.run_dirs, result.page = run_dirs, None
    return result


class _EpochClock(Callback):
    """Cumulative optimizer steps and wall-clock seconds at the end of each epoch."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.steps: list[int] = []
        self.seconds: list[float] = []

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: Mapping[str, float]) -> None:
        self.steps.append(trainer.step)
        self.seconds.append(time.perf_counter() - self.start)


def plot_curves(curves: pd.DataFrame) -> Figure:
    """Loss per epoch (train dashed, validation solid) per optimizer, and accuracy if logged."""
    panels = ["loss"] + (["accuracy"] if "train_accuracy" in curves else [])
    fig = Figure(figsize=(5.5 * len(panels), 4), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, metric in zip(axes, panels):
        for i, (label, group) in enumerate(curves.groupby("optimizer", sort=False)):
            color = f"C{i % 10}"
            ax.plot(group["epoch"], group[f"train_{metric}"], "--", color=color, alpha=0.7)
            if f"val_{metric}" in group:
                ax.plot(group["epoch"], group[f"val_{metric}"], "-", color=color, label=label)
            else:
                ax.plot([], [], "-", color=color, label=label)
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        if metric == "loss":
            ax.set_yscale("log")
        ax.set_title(f"{metric} (dashed: train, solid: validation)", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    return fig
