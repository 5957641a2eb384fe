"""``dg.watch``: record every layer's health around an existing training loop.

How it stays cheap: forward hooks on leaf modules (and modules that own parameters) compute
statistics with torch ops on the tensor's own device, on sampled steps only (``every``); an
optimizer step post-hook closes each step, computes the per-layer parameter statistics with
fused multi-tensor ops and appends small device tensors to a buffer. Nothing syncs with the host
per step: the buffer is copied to the host once per flush, and written to disk by the run
store's thread.

How it stays neutral: hooks return nothing, work on detached tensors under ``no_grad``, never
touch the RNG, modes or ``requires_grad``; every handle is removed on exit, also on error. A
statistic that raises is recorded in ``meta["errors"]``, logged once, and skipped from then on.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence
from torch.utils.hooks import RemovableHandle

from diagnose.monitor import artifacts, sgd_update
from diagnose.monitor.layers import LayerParams, layer_name
from diagnose.monitor.meta import model_summary, now, optimizer_summary, versions
from diagnose.monitor.nonfinite import INPUT_NAME, NonFiniteTracker
from diagnose.monitor.statistics import (
    OutputStatistic,
    ParameterStatistic,
    StepContext,
    default_output_statistics,
    default_parameter_statistics,
)
from diagnose.monitor.store import RunWriter, make_unique_dir

log = logging.getLogger(__name__)

# Default cadence of the costlier statistics. Chosen with benchmarks/overhead.py so that the
# default costs at most ~5 % of a plain CPU training step (see the README for the figures).
DEFAULT_EVERY = 50

# Modules that cannot turn finite inputs into NaN/Inf: never the origin of a non-finite value,
# so the per-step origin check skips them (they only propagate what they were given).
_PROPAGATE_ONLY: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.LeakyReLU, nn.ReLU6, nn.Hardtanh, nn.Tanh, nn.Sigmoid, nn.Hardsigmoid, nn.Softsign,
    nn.modules.dropout._DropoutNd, nn.Identity, nn.Flatten, nn.Unflatten, nn.MaxPool1d, nn.MaxPool2d,
    nn.MaxPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
)


def output_tensors(output: Any, depth: int = 0) -> list[torch.Tensor]:
    """The floating-point tensors inside a module output (tuples, lists, dicts, PackedSequence)."""
    if isinstance(output, torch.Tensor):
        return [output] if output.is_floating_point() else []
    if isinstance(output, PackedSequence):
        return output_tensors(output.data, depth + 1)
    if depth > 3:
        return []
    if isinstance(output, (tuple, list)):
        return [t for item in output for t in output_tensors(item, depth + 1)]
    if isinstance(output, dict):
        return [t for item in output.values() for t in output_tensors(item, depth + 1)]
    return []


class _Observed:
    """A hooked module: its name, its statistics, and whether it is checked every step."""

    def __init__(self, index: int, name: str, module: nn.Module, stats: list[tuple[int, OutputStatistic]]) -> None:
        self.index, self.name, self.module, self.stats = index, name, module, stats
        self.check_every_step = not isinstance(module, _PROPAGATE_ONLY)


class Watch:
    """``dg.watch``: record per-layer training diagnostics of ``model`` around an existing training loop.

    Use as a context manager: leaving the block flushes, removes every hook and closes the store
    (``meta["complete"]`` is False if the block raised).

    Args:
        model: the ``nn.Module`` being trained.
        optimizer: its optimizer; steps are counted from ``optimizer.step()``. Without one, call
            ``run.step()`` at the end of each step.
        run_dir: where to write the run (default: a new ``runs/run-<time>``). One process writes a
            run at a time: a second writer gets an error naming the live one.
        every: cadence of the statistics (gradient and weight norms, update ratios, activations,
            dead units, saturation, effective learning rates); only the NaN/Inf origin check runs
            every step.
        flush_every / flush_seconds: copy to the host and write at least this often; a killed
            process loses at most that much.
        resume: append to the run already in ``run_dir``, continuing its step count.
        overwrite: replace the run already in ``run_dir``: deletes only the files the run is made
            of, and refuses (naming them) when the folder holds anything else.
        output_statistics / parameter_statistics: replace the built-in statistics.
        track_nonfinite: find the first step and module where a NaN/Inf appeared.
        meta: extra metadata to store with the run.
        save_model: save the model's weights (and how to rebuild it) with the run on exit, so
            ``diagnose report``/``diagnose explain`` can explain it from the run directory.
        sample: inputs, or an ``(X, y)`` pair, to keep with the run (up to 1000 rows).
        feature_names / class_names: names saved with the sample.
    """


    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        run_dir: str | Path | None = None,
        *,
        every: int = DEFAULT_EVERY,
        flush_every: int = 100,
        flush_seconds: float = 5.0,
        resume: bool = False,
        overwrite: bool = False,
        output_statistics: Sequence[OutputStatistic] | None = None,
        parameter_statistics: Sequence[ParameterStatistic] | None = None,
        track_nonfinite: bool = True,
        meta: dict[str, Any] | None = None,
        save_model: bool = False,
        sample: Any = None,
        feature_names: Sequence[str] | None = None,
        class_names: Sequence[str] | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
        if optimizer is not None:
            if not isinstance(optimizer, torch.optim.Optimizer):
                raise TypeError(f"optimizer: expected a torch.optim.Optimizer or None, got {type(optimizer).__name__}")
            own = {id(p) for p in model.parameters()}
            if any(id(p) not in own for g in optimizer.param_groups for p in g["params"]):
                raise ValueError("optimizer: it holds parameters that are not the model's; "
                                 "pass the optimizer built over model.parameters()")
        for name, value in (("every", every), ("flush_every", flush_every)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected a positive int, got {value!r}")
        if not (isinstance(flush_seconds, (int, float)) and flush_seconds > 0):
            raise ValueError(f"flush_seconds: expected a positive number, got {flush_seconds!r}")
        self.model, self.optimizer = model, optimizer
        self.save_model, self.sample = save_model, sample
        self.feature_names, self.class_names = feature_names, class_names
        self.every, self.flush_every, self.flush_seconds = every, flush_every, flush_seconds
        self.layers = LayerParams(model)
        self.output_statistics = list(default_output_statistics() if output_statistics is None else output_statistics)
        self.parameter_statistics = list(default_parameter_statistics() if parameter_statistics is None
                                         else parameter_statistics)
        self._observed = self._select_modules(model)
        self._needs_snapshot = any(s.needs_snapshot for s in self.parameter_statistics)
        self.nonfinite = NonFiniteTracker() if track_nonfinite else None

        rank, world = _distributed_rank()
        if run_dir is None:
            default = Path("runs") / time.strftime("run-%Y%m%d-%H%M%S")
            # A fresh directory per watch (run-<time>-1, -2, ... when two start in the same second);
            # under torch.distributed every rank must find the same one, so the name is the time.
            run_dir = make_unique_dir(default) if rank is None else default
        run_dir = Path(run_dir)
        self.run_dir = run_dir
        self.writer = RunWriter(run_dir, {
            "source": "watch", "start_time": now(), "model": model_summary(model),
            "optimizer": optimizer_summary(optimizer), "versions": versions(), "every": every,
            "flush_every": flush_every, "rank": rank, "world_size": world,
            "layers": self.layers.names, "observed_modules": [o.name for o in self._observed],
            **(meta or {}),
        }, resume=resume, overwrite=overwrite, rank=rank)
        self.start_step = self.writer.start_step
        self._set_step(self.start_step)
        self._errors: dict[str, str] = {}
        self._handles: list[RemovableHandle] = []         # for the whole session
        self._sample_handles: list[RemovableHandle] = []  # attached for sampled steps only
        self._closed = False
        # per-step state
        self._partials: dict[tuple[int, int], list[tuple[int, Sequence[torch.Tensor]]]] = {}
        self._counts: dict[int, int] = {}
        self._calls: dict[int, int] = {}
        self._snapshot: list[torch.Tensor] | None = None
        self._weights_before: torch.Tensor | None = None
        self._snapshot_step: int | None = None
        # buffered until the next flush
        self._pending: list[tuple[int, str, Any, torch.Tensor]] = []
        self._host_scalars: list[tuple[int, str, float]] = []
        self._host_rows: list[tuple[int, str, float]] = []  # (step, layer, nonfinite count)
        self._steps_since_flush = 0
        self._last_flush = time.monotonic()
        try:
            self._attach()
            self._prepare_step()
        except BaseException:
            self._detach()
            self.writer.close(complete=False)
            raise

    # -- set-up -------------------------------------------------------------------------------
    def _select_modules(self, model: nn.Module) -> list[_Observed]:
        observed = []
        for name, module in model.named_modules():
            is_leaf = next(iter(module.children()), None) is None
            owns = next(iter(module.parameters(recurse=False)), None) is not None
            if not (is_leaf or owns):
                continue
            stats = [(i, s) for i, s in enumerate(self.output_statistics) if s.applies_to(module)]
            observed.append(_Observed(len(observed), layer_name(name), module, stats))
        return observed

    def _checked_every_step(self, obs: _Observed) -> bool:
        return self.nonfinite is not None and obs.check_every_step

    def _attach(self) -> None:
        # Hooks that run every step: the input check (and the per-forward call counter), the
        # modules that can originate a NaN/Inf, and the step boundary. The other modules are
        # hooked only during sampled steps, so between samples they cost nothing.
        self._handles.append(self.model.register_forward_pre_hook(self._on_forward_start))
        for obs in self._observed:
            if self._checked_every_step(obs):
                self._handles.append(obs.module.register_forward_hook(self._make_hook(obs)))
        if self.optimizer is not None:
            self._handles.append(self.optimizer.register_step_pre_hook(self._on_optimizer_pre_step))
            self._handles.append(self.optimizer.register_step_post_hook(self._on_optimizer_step))

    def _attach_sampled(self) -> None:
        for obs in self._observed:
            if not self._checked_every_step(obs):
                self._sample_handles.append(obs.module.register_forward_hook(self._make_hook(obs)))

    def _detach_sampled(self) -> None:
        for handle in self._sample_handles:
            handle.remove()
        self._sample_handles.clear()

    def _detach(self) -> None:
        self._detach_sampled()
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _make_hook(self, obs: _Observed):  # noqa: ANN202 - a torch forward hook
        checks = self.nonfinite if self._checked_every_step(obs) else None

        def hook(module: nn.Module, args: Any, output: Any) -> None:
            # The hot path between samples: only the NaN/Inf check, one reduction, inlined.
            if (checks is not None and not self._sampled and type(output) is torch.Tensor
                    and output.is_floating_point() and (module.training or torch.is_grad_enabled())):
                checks.check(obs.name, [output.detach()])
                return
            self._on_forward(obs, output)
        return hook

    # -- hooks --------------------------------------------------------------------------------
    @property
    def sampled(self) -> bool:
        """Whether the step in progress records the costlier statistics."""
        return self._sampled

    def _set_step(self, step: int) -> None:
        self._step = step
        self._sampled = (step - self.start_step) % self.every == 0

    def _recording(self, module: nn.Module) -> bool:
        # Training forwards only: evaluation passes (eval mode under no_grad) are not the step's.
        return torch.is_grad_enabled() or module.training

    def _on_forward_start(self, module: nn.Module, args: Any) -> None:
        if not self._recording(module):
            return
        if self._calls:
            self._calls.clear()
        if self.nonfinite is not None:
            first = args[0] if args else None
            inputs = [first] if type(first) is torch.Tensor and first.is_floating_point() else output_tensors(args)
            if inputs:
                self.nonfinite.check(INPUT_NAME, [inputs[0].detach()])

    def _on_forward(self, obs: _Observed, output: Any) -> None:
        sampled = self._sampled
        if not self._recording(obs.module) or not (sampled or self._checked_every_step(obs)):
            return
        tensors = output_tensors(output)
        if not tensors:
            return
        with torch.no_grad():
            tensors = [t.detach() for t in tensors]
            total = None
            if self._checked_every_step(obs):
                total = self.nonfinite.check(obs.name, tensors)
            if not sampled:
                return
            call = self._calls.get(obs.index, 0)
            self._calls[obs.index] = call + 1
            if self.nonfinite is not None:
                total = self.nonfinite.total(tensors) if total is None else total
                self.nonfinite.keep_for_count(obs.index, tensors, total)
            self._counts[obs.index] = self._counts.get(obs.index, 0) + sum(t.numel() for t in tensors)
            for k, stat in obs.stats:
                if stat.single_tensor_only and not isinstance(output, torch.Tensor):
                    continue
                key = f"{type(stat).__name__}@{obs.name}"
                if key in self._errors:
                    continue
                try:
                    parts = [stat.partial(t, obs.module) for t in tensors]
                    part = parts[0] if len(parts) == 1 else [sum(p[i] for p in parts) for i in range(stat.width)]
                except Exception as err:  # a broken statistic must not stop training
                    self._fail(key, err)
                    continue
                self._partials.setdefault((obs.index, k), []).append((call, part))

    def _on_optimizer_pre_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        # With SGD's closed-form update no copy was taken: measure the weights before they move.
        if self.sampled and self._needs_snapshot and sgd_update.supports(optimizer) and self.layers.params:
            with torch.no_grad():
                self._weights_before = self.layers.norms([p.detach() for p in self.layers.params])

    def _on_optimizer_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        self._end_step()

    def _fail(self, key: str, err: Exception) -> None:
        self._errors[key] = f"{type(err).__name__}: {err}"
        log.warning("diagnose.watch: statistic %s failed (%s); it is skipped from now on", key, err)

    # -- steps --------------------------------------------------------------------------------
    def step(self) -> None:
        """Mark the end of a training step, for loops that did not pass an optimizer to ``watch``."""
        if self.optimizer is not None:
            raise RuntimeError("step(): steps are counted from optimizer.step() when an optimizer is "
                               "watched; call run.step() only with dg.watch(model, optimizer=None)")
        self._end_step()

    def _prepare_step(self) -> None:
        """Before a step: hook every module if it is sampled, and keep the parameters if its
        statistics need them (the update is measured against this copy)."""
        if not self.sampled:
            return
        if not self._sample_handles:
            self._attach_sampled()
        if self._needs_snapshot and self.layers.params and not sgd_update.supports(self.optimizer):
            params = [p.detach() for p in self.layers.params]
            if self._snapshot is None:  # allocated once: one copy of the parameters
                self._snapshot = [torch.empty_like(p) for p in params]
            with torch.no_grad():
                torch._foreach_copy_(self._snapshot, params)
            self._snapshot_step = self._step

    def _end_step(self) -> None:
        if self._closed:
            raise RuntimeError("this watch is closed; its hooks should have been removed")
        step, sampled = self._step, self.sampled
        with torch.no_grad():
            ctx = None
            if sampled:
                if (step + 1 - self.start_step) % self.every != 0:  # the next step is not sampled
                    self._detach_sampled()
                grads, owner = self.layers.grads()
                ctx = StepContext(self.layers, self.optimizer, grads, owner,
                                  self._snapshot if self._snapshot_step == step else None)
                if self._weights_before is not None:
                    ctx.provide(weights_before=self._weights_before,
                                update=sgd_update.sgd_update_norms(self.optimizer, self.layers))
                    self._weights_before = None
                for stat in self.parameter_statistics:
                    self._compute_parameter_statistic(step, stat, ctx)
            if self.nonfinite is not None:
                checks = self.nonfinite.end_step()
                if checks is not None:  # checked on the host at the next flush
                    self._pending.append((step, "check", checks[0], checks[1]))
                if sampled:
                    outputs, grads_per_layer = self.nonfinite.counts(ctx)
                    self._host_counts(step, outputs, grads_per_layer)
            if sampled and self._observed:
                template, values = self._reduce_outputs()
                self._pending.append((step, "act", (dict(self._counts), template), values))
        self._partials.clear()
        self._counts.clear()
        self._snapshot_step = None
        self._set_step(step + 1)
        self._steps_since_flush += 1
        self._prepare_step()
        if self._steps_since_flush >= self.flush_every or time.monotonic() - self._last_flush >= self.flush_seconds:
            self.flush()

    def _compute_parameter_statistic(self, step: int, stat: ParameterStatistic, ctx: StepContext) -> None:
        key = type(stat).__name__
        if key in self._errors:
            return
        try:
            values = stat.compute(ctx)
        except Exception as err:  # a broken statistic must not stop training
            self._fail(key, err)
            return
        missing = self.layers.missing if stat.uses_grads else frozenset()
        self._pending.append((step, "param", (stat.columns, missing), values))

    def _host_counts(self, step: int, outputs: dict[int, float], grads: np.ndarray | None) -> None:
        """Buffer the exact NaN/Inf counts of a sampled step (already on the host)."""
        for obs in self._observed:
            if obs.index in outputs:
                self._host_rows.append((step, obs.name, outputs[obs.index]))
        if grads is not None:
            for j, name in enumerate(self.layers.names):
                if j not in self.layers.missing:
                    self._host_rows.append((step, name, float(grads[j])))

    def _reduce_outputs(self) -> tuple[list[float | None], torch.Tensor]:
        """Every (module, statistic) value of this step: host floats in a template (None where
        the value is on the device) and the device values stacked into one tensor."""
        template: list[float | None] = []
        on_device: list[torch.Tensor] = []
        for obs in self._observed:
            for k, stat in obs.stats:
                partials = self._partials.get((obs.index, k))
                values: Sequence[torch.Tensor | float] | None = None
                if partials:
                    try:
                        values = stat.combine(partials)
                    except Exception as err:
                        self._fail(f"{type(stat).__name__}@{obs.name}", err)
                if values is None or len(values) != stat.width:
                    values = [math.nan] * stat.width
                for v in values:
                    if isinstance(v, torch.Tensor):
                        template.append(None)
                        on_device.append(v.reshape(()).to(self.layers.device))
                    else:
                        template.append(float(v))
        stacked = torch.stack(on_device).float() if on_device else torch.zeros(0, device=self.layers.device)
        return template, stacked

    # -- scalars ------------------------------------------------------------------------------
    def log(self, step: int | None = None, **values: torch.Tensor | float) -> None:
        """Record scalars (loss, metrics, learning rate). Tensors stay on their device until the
        next flush, so logging costs no host sync.

        ``step`` defaults to the last completed optimizer step (the one a loss logged right after
        ``optimizer.step()`` belongs to), or the first step if none has completed.
        """
        if step is None:
            step = max(self._step - 1, self.start_step)
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                if value.numel() != 1:
                    raise TypeError(f"{name}: expected a scalar, got a tensor of shape {tuple(value.shape)}")
                self._pending.append((step, "scalar", name, value.detach().reshape(())))
            elif isinstance(value, (int, float, np.number)) and not isinstance(value, bool):
                self._host_scalars.append((step, name, float(value)))
            elif isinstance(value, bool):
                self._host_scalars.append((step, name, float(value)))
            else:
                raise TypeError(f"{name}: expected a number or a one-element tensor, got {type(value).__name__}")

    def set_meta(self, **items: Any) -> None:
        """Store extra metadata with the run (JSON-serializable values)."""
        self.writer.set_meta(**items)

    # -- flushing -----------------------------------------------------------------------------
    def flush(self) -> None:
        """Copy the buffered statistics to the host (one transfer per device) and hand them to the
        store's writer thread."""
        pending, self._pending = self._pending, []
        host_scalars, self._host_scalars = self._host_scalars, []
        host_rows, self._host_rows = self._host_rows, []
        self._steps_since_flush = 0
        self._last_flush = time.monotonic()
        arrays = _to_host([t for _, _, _, t in pending])  # note: the host sync, once per flush
        rows: dict[tuple[int, str], dict[str, float]] = {}
        scalars = list(host_scalars)
        for (step, kind, info, _), values in zip(pending, arrays):
            if kind == "scalar":
                scalars.append((step, info, float(values)))
            elif kind == "param":
                columns, missing = info
                self._param_rows(rows, step, columns, missing, values.reshape(len(columns), -1))
            elif kind == "act":
                counts, template = info
                filled = np.array([values[i] if v is None else v for i, v in
                                   zip(np.cumsum([v is None for v in template]) - 1, template)], dtype=float)
                self._output_rows(rows, step, counts, filled)
            elif kind == "check" and self.nonfinite is not None:
                self._found(self.nonfinite.resolve_forward(step, info, values))
        for step, layer, count in host_rows:
            _put(rows.setdefault((step, layer), {}), "nonfinite", count)
        if self.nonfinite is not None:
            self._check_gradients(rows)
        if scalars:
            self.writer.write_scalars(scalars)
        if rows:
            self.writer.write_layer_stats({"step": s, "layer": layer, **cols} for (s, layer), cols in rows.items())

    def _param_rows(self, rows: dict, step: int, columns: tuple[str, ...], missing: frozenset[int],
                    values: np.ndarray) -> None:
        for j, layer in enumerate(self.layers.names):
            if j in missing:  # no gradient this step (frozen or unused): nothing to record
                continue
            row = rows.setdefault((step, layer), {})
            for i, column in enumerate(columns):
                _put(row, column, float(values[i, j]))

    def _output_rows(self, rows: dict, step: int, counts: dict[int, int], values: np.ndarray) -> None:
        offset = 0
        for obs in self._observed:
            count = counts.get(obs.index, 0)
            for _, stat in obs.stats:
                chunk = values[offset:offset + stat.width]
                offset += stat.width
                if count == 0 or np.isnan(chunk).all():
                    continue
                with np.errstate(all="ignore"):  # exploded activations overflow here: NaN/Inf is the answer
                    finalized = stat.finalize(chunk, count)
                for column, value in zip(stat.columns, finalized):
                    _put(rows.setdefault((step, obs.name), {}), column, value)

    def _check_gradients(self, rows: dict[tuple[int, str], dict[str, float]]) -> None:
        # A non-finite gradient whose forward pass was finite came from the backward pass: name the
        # layer furthest along the model (backward ran from there towards the input).
        position = {name: i for i, name in enumerate(self.layers.names)}
        bad = [(step, position[layer]) for (step, layer), cols in rows.items()
               if layer in position and "grad_norm" in cols and not math.isfinite(cols["grad_norm"])]
        if bad:
            step = min(s for s, _ in bad)
            deepest = max(i for s, i in bad if s == step)
            self._found(self.nonfinite.offer(step, self.layers.names[deepest], "gradient"))

    def _found(self, first: dict[str, Any] | None) -> None:
        if first is None:
            return
        self.writer.set_meta(first_nonfinite=first)
        log.warning("diagnose.watch: first non-finite value at step %d, in the %s of %s",
                    first["step"], first["where"], first["layer"])

    # -- closing ------------------------------------------------------------------------------
    @property
    def steps(self) -> int:
        """Optimizer steps recorded so far in this session."""
        return self._step - self.start_step

    def close(self, complete: bool = True, reason: str | None = None) -> None:
        """Flush, remove every hook and close the store. Safe to call twice.

        ``complete=False`` marks the run incomplete, with ``reason`` (what stopped it) when given.
        """
        if self._closed:
            return
        self._closed = True
        if not complete:
            self.writer.set_meta(incomplete_reason=reason or "the training stopped before the end (the run was "
                                                             "closed with complete=False)")
        try:
            self._detach()
            if self.nonfinite is not None:  # a forward pass after the last step
                checks = self.nonfinite.end_step()
                if checks is not None:
                    self._pending.append((self._step, "check", checks[0], checks[1]))
            self.flush()
            self.writer.set_meta(end_time=now(), steps=self._step, errors=self._errors,
                                 first_nonfinite=self.nonfinite.first if self.nonfinite else None)
            self._save_artifacts()
        finally:
            self.writer.close(complete=complete)

    def _save_artifacts(self) -> None:
        """Save the model and sample; a disk that fails here costs those files, never the training."""
        files: list[str] = []
        for what, save in (("model", self._save_model if self.save_model else None),
                           ("sample", self._save_sample if self.sample is not None else None)):
            if save is None:
                continue
            try:
                files += save()
            except (OSError, RuntimeError) as err:  # torch.save reports a full disk as RuntimeError
                self._errors[f"save_{what}"] = f"{type(err).__name__}: {err}".splitlines()[0]
                log.warning("diagnose.watch: could not save the %s with the run in %s (%s)", what, self.run_dir, err)
        if self.save_model or self.sample is not None:
            self.writer.set_meta(saved_model=artifacts.MODEL_WEIGHTS in files,
                                 saved_sample=artifacts.SAMPLE_DATA in files, files=files, errors=self._errors)

    def _save_model(self) -> list[str]:
        return artifacts.save_model(self.run_dir, self.model)

    def _save_sample(self) -> list[str]:
        X, y = self.sample if isinstance(self.sample, (tuple, list)) else (self.sample, None)
        return artifacts.save_sample(self.run_dir, X, y, self.feature_names, self.class_names)

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.close(complete=exc_type is None,
                   reason=f"the training raised {exc_type.__name__}: {exc}".splitlines()[0] if exc_type else None)

    def __repr__(self) -> str:
        return f"Watch(run_dir={str(self.run_dir)!r}, step={self._step}, every={self.every})"


def _put(row: dict[str, float], column: str, value: float) -> None:
    # Two statistics may feed one column (nonfinite: outputs + gradients): add them.
    if column in row and not math.isnan(row[column]):
        row[column] = row[column] + (0.0 if math.isnan(value) else value)
    else:
        row[column] = value


def _to_host(tensors: Iterable[torch.Tensor]) -> list[np.ndarray]:
    """Copy tensors to NumPy with one transfer per device."""
    tensors = list(tensors)
    by_device: dict[torch.device, list[int]] = {}
    for i, t in enumerate(tensors):
        by_device.setdefault(t.device, []).append(i)
    out: list[np.ndarray | None] = [None] * len(tensors)
    for indices in by_device.values():
        flat = torch.cat([tensors[i].reshape(-1).double() for i in indices]).cpu().numpy()
        offset = 0
        for i in indices:
            n = tensors[i].numel()
            out[i] = flat[offset:offset + n].reshape(tensors[i].shape)
            offset += n
    return out  # type: ignore[return-value]


def _distributed_rank() -> tuple[int | None, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return None, 1


# ``dg.watch(model, optimizer, run_dir=...)`` constructs the context manager (shared/API.md §1).
watch = Watch
