"""The built-in Trainer: any nn.Module, every textbook optimizer and regularizer, diagnostics recorded.

Data flows through one closure per optimizer step: it runs forward/backward over the step's
batches (one batch; or, for full-batch ``gd``, every batch of the epoch with its gradient
accumulated), then clips. Optimizers that re-evaluate the loss (L-BFGS) get the closure itself.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from diagnose import validate
from diagnose.monitor.meta import optimizer_summary
from diagnose.monitor.watch import DEFAULT_EVERY, Watch, watch
from diagnose.trainer.callbacks import Callback
from diagnose.trainer.data import Batch, DataLike, as_tensor, make_batches, num_examples, split_batch
from diagnose.trainer.early_stopping import EarlyStopping
from diagnose.trainer.losses import LossFn, resolve_loss
from diagnose.trainer.optimizers import OptimizerSpec, build_optimizer, resolve_optimizer
from diagnose.trainer.regularizers import Regularizer

log = logging.getLogger(__name__)

SchedulerLike = torch.optim.lr_scheduler.LRScheduler | torch.optim.lr_scheduler.ReduceLROnPlateau


@dataclass
class StepResult:
    """One optimizer step: the objective minimized (data loss + penalties), the data loss summed
    over the step's examples, correct predictions, examples, and the gradient norm before
    clipping (when clipping by norm). Tensors stay on the device."""

    objective: torch.Tensor
    loss_sum: torch.Tensor
    correct: torch.Tensor
    count: int = 0
    grad_norm_before_clip: torch.Tensor | None = None


class Trainer:
    """Trains ``model`` and records per-epoch metrics and per-step diagnostics.

    Args:
        model: any ``nn.Module`` mapping a batch of inputs to outputs (logits for classification).
        optimizer: a name from ``dg.list_optimizers()`` (``gd``, ``sgd``, ``minibatch_sgd``,
            ``momentum``, ``nag``, ``adagrad``, ``rmsprop``, ``adadelta``, ``adam``), a
            ``torch.optim`` class name (``"AdamW"``), or an optimizer instance over ``model``'s
            parameters.
        lr: learning rate; None keeps the optimizer's default.
        optimizer_kwargs: further optimizer hyperparameters (e.g. ``{"momentum": 0.95}``).
        loss: ``cross_entropy``, ``nll``, ``bce`` (with logits), ``mse``, ``l1``, ``huber``, or a
            callable ``(outputs, targets) -> scalar`` with mean reduction.
        regularizers: ``dg.L1``, ``dg.L2``, ``dg.Entropy``, ``dg.GaussianNoise``, or any
            ``dg.Regularizer``.
        augment: data augmentation, ``x -> x``, applied to training batches only.
        early_stopping: a ``dg.EarlyStopping``.
        grad_clip: clip threshold; by total norm (``clip_mode="norm"``) or per element
            (``clip_mode="value"``).
        scheduler: a ``torch.optim.lr_scheduler`` instance (when you pass an optimizer
            instance) or a callable ``optimizer -> scheduler``; stepped per epoch (or per step
            with ``scheduler_interval="step"``). ReduceLROnPlateau gets the early-stopping
            monitor, else ``val_loss`` or ``train_loss``.
        callbacks: ``dg.Callback`` objects.
        run_dir: where the diagnostics are recorded with ``dg.watch`` (``dg.load_run(run_dir)``);
            None records nothing.
        overwrite: replace a run already in ``run_dir`` (only the run's own files are deleted;
            a folder holding anything else is refused).
        run_meta: extra metadata stored with the run (JSON-serializable values).
        diagnostics_every: the watch's cadence for its costlier statistics (``every``).
        histogram_every: steps between the watch's per-layer histograms (None: its default, 200).
        save_model: save the trained model and a sample of the validation (else training) data
            with the run, so ``diagnose report``/``explain`` work from ``run_dir`` alone.
        feature_names, class_names: saved with the sample, shown in reports.
        feature_scaler: how the features were standardised (a fitted StandardScaler, or a
            (mean, scale) pair), saved with the sample: reports show raw values.
        device: move the model there; None uses the device of the model's parameters.
        seed: seeds torch's RNG and the shuffling at the start of ``fit``.
        progress: show a tqdm progress bar over epochs.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: str | torch.optim.Optimizer = "adam",
        *,
        lr: float | None = None,
        optimizer_kwargs: Mapping[str, Any] | None = None,
        loss: str | LossFn = "cross_entropy",
        regularizers: Sequence[Regularizer] = (),
        augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
        early_stopping: EarlyStopping | None = None,
        grad_clip: float | None = None,
        clip_mode: Literal["norm", "value"] = "norm",
        scheduler: SchedulerLike | Callable[[torch.optim.Optimizer], SchedulerLike] | None = None,
        scheduler_interval: Literal["epoch", "step"] = "epoch",
        callbacks: Sequence[Callback] = (),
        run_dir: str | None = None,
        overwrite: bool = False,
        run_meta: Mapping[str, Any] | None = None,
        diagnostics_every: int = DEFAULT_EVERY,
        histogram_every: int | None = None,
        save_model: bool = False,
        feature_names: Sequence[str] | None = None,
        class_names: Sequence[str] | None = None,
        feature_scaler: Any = None,
        device: str | torch.device | None = None,
        seed: int | None = None,
        progress: bool = True,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
        if device is not None:
            model.to(device)
        self.model = model
        self.loss_fn, self.loss_spec = resolve_loss(loss)
        self.optimizer, self.optimizer_spec = self._make_optimizer(optimizer, lr, optimizer_kwargs)
        self.regularizers = list(regularizers)
        for i, reg in enumerate(self.regularizers):
            if not isinstance(reg, Regularizer):
                raise TypeError(f"regularizers[{i}]: expected a dg.Regularizer (L1, L2, Entropy, "
                                f"GaussianNoise), got {type(reg).__name__}")
        if augment is not None and not callable(augment):
            raise TypeError(f"augment: expected a callable x -> x, got {type(augment).__name__}")
        self.augment = augment
        if early_stopping is not None and not isinstance(early_stopping, EarlyStopping):
            raise TypeError(f"early_stopping: expected a dg.EarlyStopping, got {type(early_stopping).__name__}")
        self.early_stopping = early_stopping
        if grad_clip is not None:
            validate.positive_number("grad_clip", grad_clip)
        validate.one_of("clip_mode", clip_mode, ("norm", "value"))
        self.grad_clip, self.clip_mode = grad_clip, clip_mode
        validate.one_of("scheduler_interval", scheduler_interval, ("epoch", "step"))
        self.scheduler = self._make_scheduler(scheduler)
        self.scheduler_interval = scheduler_interval
        self.callbacks = list(callbacks)
        self.run_dir = run_dir
        self.overwrite = overwrite
        self.run_meta = dict(run_meta or {})
        self.diagnostics_every = diagnostics_every
        self.histogram_every = histogram_every
        self.save_model = save_model
        self.feature_names, self.class_names = feature_names, class_names
        self.feature_scaler = feature_scaler
        self.seed = seed
        self.progress = progress
        self.step = 0  # optimizer steps taken so far, over all calls to fit
        self.should_stop = False  # a callback sets it to end the fit after the current epoch
        self.watch: Watch | None = None  # the run being recorded during fit (run_dir given), for callbacks
        self.stopped_epoch: int | None = None
        self._fit_callbacks: list[Callback] = list(self.callbacks)
        self.history = pd.DataFrame()

    # -- construction helpers -----------------------------------------------------------------
    def _make_optimizer(self, optimizer: Any, lr: float | None,
                        kwargs: Mapping[str, Any] | None) -> tuple[torch.optim.Optimizer, OptimizerSpec | None]:
        if isinstance(optimizer, torch.optim.Optimizer):
            if lr is not None or kwargs:
                raise ValueError("lr/optimizer_kwargs: set them on the optimizer instance you pass, not here")
            own = {id(p) for p in self.model.parameters()}
            if any(id(p) not in own for g in optimizer.param_groups for p in g["params"]):
                raise ValueError("optimizer: the instance holds parameters that are not the model's")
            return optimizer, None
        if isinstance(optimizer, type) and issubclass(optimizer, torch.optim.Optimizer):
            optimizer = optimizer.__name__
        spec = resolve_optimizer(optimizer)
        params = [p for p in self.model.parameters() if p.requires_grad]
        if not params:
            raise ValueError("model: has no trainable parameters (every requires_grad is False)")
        return build_optimizer(spec, params, lr=lr, **dict(kwargs or {})), spec

    def _make_scheduler(self, scheduler: Any) -> SchedulerLike | None:
        if scheduler is None:
            return None
        if not isinstance(scheduler, (torch.optim.lr_scheduler.LRScheduler,
                                      torch.optim.lr_scheduler.ReduceLROnPlateau)):
            if not callable(scheduler):
                raise TypeError("scheduler: expected an lr_scheduler or a callable optimizer -> lr_scheduler")
            scheduler = scheduler(self.optimizer)
        if getattr(scheduler, "optimizer", None) is not self.optimizer:
            raise ValueError("scheduler: it must schedule the trainer's optimizer (pass a callable "
                             "optimizer -> scheduler when the optimizer is given by name)")
        return scheduler

    @property
    def batch_mode(self) -> str:
        """``full`` (gd), ``single`` (sgd) or ``mini``."""
        return self.optimizer_spec.batch_mode if self.optimizer_spec else "mini"

    @property
    def classification(self) -> bool:
        return bool(self.loss_spec and self.loss_spec.classification)

    @property
    def device(self) -> torch.device:
        return next(iter(self.model.parameters())).device

    def metric_names(self, with_validation: bool) -> list[str]:
        """The names ``fit`` logs each epoch (what ``EarlyStopping(monitor=...)`` may watch)."""
        names = ["train_loss"] + (["train_accuracy"] if self.classification else [])
        if with_validation:
            names += ["val_loss"] + (["val_accuracy"] if self.classification else [])
        return names + ["lr"]

    # -- batches ------------------------------------------------------------------------------
    def _inputs(self, x: torch.Tensor) -> torch.Tensor:
        # Inputs go to the model's device; floating inputs take its dtype (float64 models work).
        param = next(iter(self.model.parameters()))
        x = x.to(param.device, non_blocking=True)
        return x.to(param.dtype) if torch.is_floating_point(x) else x

    def _prepare(self, x: torch.Tensor, y: torch.Tensor) -> Batch:
        param = next(iter(self.model.parameters()))
        x = self._inputs(x)
        y = y.to(param.device, non_blocking=True)
        if self.loss_spec and self.loss_spec.classification and not self.loss_spec.binary:
            if y.ndim == 1:
                y = y.long()
        elif torch.is_floating_point(y) or self.loss_spec is not None:
            y = y.to(param.dtype)
        return x, y

    def _loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.loss_spec and not (self.loss_spec.classification and not self.loss_spec.binary):
            if out.ndim == y.ndim + 1 and out.shape[-1] == 1:
                y = y.reshape(out.shape)  # (N,) targets for (N, 1) outputs
        return self.loss_fn(out, y)

    def _correct(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.loss_spec and self.loss_spec.binary:
            return ((out.reshape(y.shape) > 0) == (y > 0.5)).sum()
        if y.ndim == out.ndim:  # class probabilities as targets
            y = y.argmax(-1)
        return (out.argmax(-1) == y).sum()

    def _batch_sizes(self, train_data: DataLike, batch_size: int | None) -> int:
        mode = self.batch_mode
        if batch_size is not None:
            validate.positive_int("batch_size", batch_size)
        if mode == "single":
            if batch_size not in (None, 1):
                raise ValueError(f"batch_size: optimizer 'sgd' takes one example per step, got batch_size="
                                 f"{batch_size}; leave it unset or use optimizer='minibatch_sgd'")
            is_loader = isinstance(train_data, torch.utils.data.DataLoader)
            loader_bs = getattr(train_data, "batch_size", 1) if is_loader else 1
            if loader_bs != 1:
                raise ValueError("train_data: optimizer 'sgd' takes one example per step, but the DataLoader's "
                                 f"batch_size is {loader_bs}")
            return 1
        if mode == "full":
            # One step per epoch on the whole set's gradient; batch_size only bounds the memory of
            # each forward pass (gradients are accumulated over the chunks).
            n = len(train_data[0]) if isinstance(train_data, (tuple, list)) else num_examples(train_data)
            return batch_size or n or 32
        return batch_size or 32

    # -- training -----------------------------------------------------------------------------
    def fit(
        self,
        train_data: DataLike,
        val_data: DataLike | None = None,
        epochs: int = 10,
        batch_size: int | None = None,
        shuffle: bool = True,
    ) -> pd.DataFrame:
        """Train for up to ``epochs`` epochs; return one row per epoch (``epoch``, ``train_loss``,
        ``val_loss``, accuracies for classification, ``lr``).

        ``batch_size`` defaults to 32 for mini-batch optimizers; ``sgd`` always takes one example a
        step and ``gd`` one step per epoch (there ``batch_size`` only bounds each forward pass).
        """
        validate.positive_int("epochs", epochs)
        bs = self._batch_sizes(train_data, batch_size)
        generator = None
        if self.seed is not None:
            torch.manual_seed(self.seed)
            generator = torch.Generator().manual_seed(self.seed)
        full = self.batch_mode == "full"
        train_batches = make_batches(train_data, "train_data", bs, shuffle and not full, generator)
        val_batches = (make_batches(val_data, "val_data", max(bs, 256), False)
                       if val_data is not None else None)
        names = self.metric_names(val_batches is not None)
        if self.early_stopping is not None and self.early_stopping.monitor not in names:
            hint = " (no val_data was given)" if self.early_stopping.monitor.startswith("val_") else ""
            raise ValueError(f"early_stopping: monitor {self.early_stopping.monitor!r} is never logged"
                             f"{hint}; logged names are {names}")
        # Early stopping is a callback like the others, last (Lightning's order): it sees the
        # epoch after every user callback, and restores the best weights when the fit ends.
        callbacks = self._fit_callbacks = [*self.callbacks, *([self.early_stopping] if self.early_stopping else [])]
        n_train = num_examples(train_batches)

        run = self.watch = None
        if self.run_dir is not None:
            sample = None
            if self.save_model:
                source = val_data if val_data is not None else train_data
                sample = source if isinstance(source, (tuple, list)) else None
            run = watch(self.model, self.optimizer, self.run_dir, every=self.diagnostics_every,
                        histogram_every=self.histogram_every,
                        meta={**self._run_meta(epochs, bs, n_train), **self.run_meta},
                        overwrite=self.overwrite, save_model=self.save_model,
                        sample=sample, feature_names=self.feature_names, class_names=self.class_names,
                        feature_scaler=self.feature_scaler)
            self.watch = run
        rows: list[dict[str, float]] = []
        self.stopped_epoch = None
        self.should_stop = False
        completed, failure = False, None
        try:
            for cb in callbacks:
                cb.on_fit_start(self)
            bar = tqdm(range(epochs), desc="epochs", unit="epoch", disable=not self.progress, leave=False)
            for epoch in bar:
                logs = self._train_epoch(train_batches, full, run)
                if val_batches is not None:
                    logs.update({f"val_{k}": v for k, v in self._evaluate_batches(val_batches).items()})
                logs["lr"] = float(self.optimizer.param_groups[0]["lr"])
                row = {"epoch": epoch, **{k: logs[k] for k in names}}
                rows.append(row)
                if run is not None:
                    run.log(**row)
                bar.set_postfix({k: f"{v:.4g}" for k, v in row.items() if k.endswith(("loss", "accuracy"))})
                if self.scheduler is not None and self.scheduler_interval == "epoch":
                    self._step_scheduler(logs)
                for cb in callbacks:
                    cb.on_epoch_end(self, epoch, logs)
                if self.should_stop:
                    self.stopped_epoch = epoch
                    log.info("stopping at epoch %d, as a callback asked", epoch)
                    break
            bar.close()
            for cb in callbacks:
                cb.on_fit_end(self)
            completed = True
        except BaseException as err:
            failure = f"the training raised {type(err).__name__}: {err}".splitlines()[0]
            raise
        finally:
            if run is not None:
                try:
                    es = self.early_stopping
                    restored = (es is not None and completed and es.restore_best_weights
                                and es.best_weights is not None)
                    run.set_meta(epochs_run=len(rows), stopped_epoch=self.stopped_epoch,
                                 best_epoch=es.best_epoch if es else None,
                                 restored_epoch=es.best_epoch if restored and es is not None else None)
                finally:
                    run.close(complete=completed, reason=None if completed else failure)
                    self.watch = None
        self.history = pd.DataFrame(rows)
        return self.history

    def _train_epoch(self, batches: Iterable[Any], full: bool, run: Watch | None) -> dict[str, float]:
        self.model.train()
        device = self.device
        loss_sum = torch.zeros((), device=device, dtype=torch.float64)
        correct = torch.zeros((), device=device, dtype=torch.long)
        seen = 0
        groups: Iterable[Any] = [batches] if full else ([b] for b in batches)
        weight = None
        if full:  # the mean over the whole set is the sum of chunk means weighted by size / N
            weight = num_examples(batches) or sum(len(split_batch(b, "train_data")[0]) for b in batches)
        for group in groups:
            result = self.train_step(group, weight)
            if result.count == 0:
                continue
            loss_sum += result.loss_sum
            correct += result.correct
            seen += result.count
            step_loss = result.loss_sum / result.count
            if run is not None:
                run.log(loss=step_loss)
                if result.grad_norm_before_clip is not None:
                    run.log(grad_norm_before_clip=result.grad_norm_before_clip)
            for cb in self._fit_callbacks:
                cb.on_step_end(self, self.step, step_loss)
            self.step += 1
            if self.scheduler is not None and self.scheduler_interval == "step":
                self._step_scheduler({"train_loss": float(step_loss)})
        if seen == 0:
            raise ValueError("train_data: yielded no examples in an epoch")
        logs = {"train_loss": float(loss_sum) / seen}  # note: host sync, once per epoch
        if self.classification:
            logs["train_accuracy"] = float(correct) / seen
        return logs

    def train_step(self, batches: Sequence[Any], full_size: int | None = None) -> StepResult:
        """One optimizer step over ``batches`` (one batch; for full-batch ``gd`` every batch of the
        epoch, each weighted by its share of ``full_size`` examples so the gradient is the whole
        set's mean). Optimizers that re-evaluate the loss (L-BFGS) get the forward/backward pass
        as their closure."""
        result: StepResult | None = None

        def closure() -> torch.Tensor:
            nonlocal result
            result = self._forward_backward(batches, full_size)
            return result.objective

        if isinstance(self.optimizer, torch.optim.LBFGS):
            self.optimizer.step(closure)
        else:
            closure()
            self.optimizer.step()
        assert result is not None  # the closure ran at least once
        return result

    def _forward_backward(self, batches: Sequence[Any], full_size: int | None) -> StepResult:
        """Zero the gradients, run forward and backward over ``batches`` (gradients accumulate),
        then clip."""
        device = self.device
        self.optimizer.zero_grad(set_to_none=True)
        result = StepResult(torch.zeros((), device=device), torch.zeros((), device=device, dtype=torch.float64),
                            torch.zeros((), device=device, dtype=torch.long))
        for batch in batches:
            x, y = self._prepare(*split_batch(batch, "train_data"))
            if self.augment is not None:
                x = self.augment(x)
            for reg in self.regularizers:
                x = reg.transform(x)
            out = self.model(x)
            data_loss = self._loss(out, y)
            objective = data_loss
            for reg in self.regularizers:
                term = reg.penalty(self.model, out)
                if term is not None:
                    objective = objective + term
            n = len(x)
            weight = n / full_size if full_size else 1.0  # mean over the whole set for gd
            (objective * weight).backward()
            result.objective = result.objective + objective.detach() * weight
            result.loss_sum = result.loss_sum + data_loss.detach().double() * n
            if self.classification:
                result.correct = result.correct + self._correct(out.detach(), y)
            result.count += n
        if self.grad_clip is not None:
            params = [p for g in self.optimizer.param_groups for p in g["params"]]
            if self.clip_mode == "norm":
                # the total norm before clipping: the watch records the clipped gradients
                result.grad_norm_before_clip = torch.nn.utils.clip_grad_norm_(params, self.grad_clip)
            else:
                torch.nn.utils.clip_grad_value_(params, self.grad_clip)
        return result

    def _step_scheduler(self, logs: Mapping[str, float]) -> None:
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            key = (self.early_stopping.monitor if self.early_stopping and self.early_stopping.monitor in logs
                   else "val_loss" if "val_loss" in logs else "train_loss")
            self.scheduler.step(logs[key])
        elif self.scheduler is not None:
            self.scheduler.step()

    # -- evaluation ---------------------------------------------------------------------------
    def _evaluate_batches(self, batches: Iterable[Any]) -> dict[str, float]:
        was_training = self.model.training
        self.model.eval()
        device = self.device
        loss_sum = torch.zeros((), device=device, dtype=torch.float64)
        correct = torch.zeros((), device=device, dtype=torch.long)
        seen = 0
        try:
            with torch.no_grad():
                for batch in batches:
                    x, y = self._prepare(*split_batch(batch, "data"))
                    out = self.model(x)
                    loss_sum += self._loss(out, y).double() * len(x)
                    if self.classification:
                        correct += self._correct(out, y)
                    seen += len(x)
        finally:
            self.model.train(was_training)
        if seen == 0:
            raise ValueError("data: yielded no examples")
        result = {"loss": float(loss_sum) / seen}
        if self.classification:
            result["accuracy"] = float(correct) / seen
        return result

    def evaluate(self, data: DataLike, batch_size: int = 256) -> dict[str, float]:
        """Mean loss (and accuracy for classification) of the model on ``data``, in eval mode."""
        return self._evaluate_batches(make_batches(data, "data", batch_size, False))

    def predict(self, X: Any, batch_size: int = 256) -> torch.Tensor:
        """Model outputs for ``X`` (array or tensor) in eval mode, without gradients."""
        X = as_tensor(X, "X")
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                outs = [self.model(self._inputs(X[i:i + batch_size])) for i in range(0, len(X), batch_size)]
        finally:
            self.model.train(was_training)
        return torch.cat(outs)

    # -- metadata -----------------------------------------------------------------------------
    def _run_meta(self, epochs: int, batch_size: int, n_train: int | None) -> dict[str, Any]:
        name = self.optimizer_spec.name if self.optimizer_spec else type(self.optimizer).__name__
        return {
            "source": "trainer",
            "optimizer": {**(optimizer_summary(self.optimizer) or {}), "name": name, "batch_mode": self.batch_mode},
            "loss": self.loss_fn.__class__.__name__,
            "regularizers": [repr(r) for r in self.regularizers],
            "early_stopping": repr(self.early_stopping) if self.early_stopping else None,
            "grad_clip": {"threshold": self.grad_clip, "mode": self.clip_mode} if self.grad_clip else None,
            "scheduler": type(self.scheduler).__name__ if self.scheduler else None,
            "epochs": epochs, "batch_size": batch_size, "n_train": n_train, "seed": self.seed,
        }
