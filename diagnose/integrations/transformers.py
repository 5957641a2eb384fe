"""Hugging Face ``transformers.Trainer``: record its training with ``dg.watch``.

    trainer = transformers.Trainer(model, args, ..., callbacks=[DiagnoseCallback("runs/exp1")])

Steps are counted from the optimizer's ``step()`` (the Trainer's optimizer, unwrapped from
accelerate's wrapper), so gradient accumulation counts optimizer steps. The Trainer's logs become
the run's scalars: ``loss`` (the mean over ``logging_steps`` steps: set ``logging_steps=1`` for a
per-step loss, which the loss-based findings want), ``learning_rate`` as ``lr``, ``grad_norm``,
and evaluation metrics with ``eval_`` renamed ``val_`` (``val_loss``), plus ``epoch``.

Needs ``transformers`` (and ``accelerate``, which its Trainer needs).
"""

from __future__ import annotations

from typing import Any

try:
    import transformers
except ImportError as err:  # pragma: no cover - exercised only without transformers
    raise ImportError("diagnose.integrations.transformers needs transformers: pip install transformers "
                      "accelerate") from err

import torch

from diagnose.monitor.watch import DEFAULT_EVERY, Watch, watch


class DiagnoseCallback(transformers.TrainerCallback):
    """Watches the Trainer's model and optimizer from the start of training to its end.

    Args:
        run_dir: where to write the run.
        every: the watch's cadence for its costlier statistics.
        watch_kwargs: more ``dg.watch`` arguments (``flush_every``, ``overwrite``, ``save_model``, ...).
    """

    def __init__(self, run_dir: str, every: int = DEFAULT_EVERY, **watch_kwargs: Any) -> None:
        self.run_dir = run_dir
        self.every = every
        self.watch_kwargs = watch_kwargs
        self.run: Watch | None = None
        self._count_steps = False  # no torch optimizer found: count steps at on_step_end

    def on_train_begin(self, args: Any, state: Any, control: Any, model: torch.nn.Module | None = None,
                       optimizer: Any = None, **kwargs: Any) -> None:
        if model is None:
            return
        inner = getattr(optimizer, "optimizer", optimizer)  # accelerate's AcceleratedOptimizer wraps it
        inner = inner if isinstance(inner, torch.optim.Optimizer) else None
        self._count_steps = inner is None
        self.run = watch(model, inner, self.run_dir, every=self.every,
                         meta={"source": "transformers", "max_steps": state.max_steps,
                               "num_train_epochs": args.num_train_epochs,
                               "gradient_accumulation_steps": args.gradient_accumulation_steps},
                         **self.watch_kwargs)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.run is not None and self._count_steps:
            self.run.step()

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None,
               **kwargs: Any) -> None:
        if self.run is None or not logs:
            return
        values = {}
        for key, value in logs.items():
            if isinstance(value, bool) or not isinstance(value, (int, float, torch.Tensor)):
                continue
            name = "lr" if key == "learning_rate" else "val_" + key[len("eval_"):] if key.startswith("eval_") else key
            values[name] = value
        # logged after global_step steps: they describe the last completed one
        self.run.log(max(state.global_step - 1, 0), **values)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.run is not None:
            self.run.close(complete=True)
            self.run = None
