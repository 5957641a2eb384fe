"""``dg.watch``: record every layer's health around an existing training loop.

What runs when, and what it costs (``schedule.py`` decides; ``every`` sets the sampling):

=============  ===========================================  ========================================
when           what                                         cost
=============  ===========================================  ========================================
every step     NaN/Inf origin check: the input and each     one reduction per checked output, no
               output that can originate a NaN/Inf summed   host sync
               on the device
every step     the step count (optimizer step hook);        none
               ``run.log`` keeps tensors on the device
sampled steps  output statistics (moments, zeros, dead      ~4 reductions per observed output;
               units, saturation), in forward hooks         hooks on the other modules only then
               attached for that step only
sampled steps  parameter statistics (gradient, weight and   a pass over the gradients and one over
               update norms, effective lr)                  the copy (fused ``_foreach`` ops; BLAS
                                                            dots on the CPU). Memory: optimizers other
                                                            than plain/momentum SGD keep ONE COPY
                                                            OF THE PARAMETERS for the whole run
                                                            (``parameters.py``) to measure the
                                                            update
sampled steps  histograms of every observed output, every     a shift, an add and a count per element
(every 200     layer's gradient and weights (``histogram.py``: (~1.2 ns each on a CPU core); temporaries
steps)         fixed log-spaced bins), counted on the device    under 1/16 of the tensor counted
sampled steps  exact NaN/Inf counts                         one host sync (a single bool)
a flush        the buffered values copied to the host and   one copy per device; the disk is the
               handed to the store's thread                 store's thread's
=============  ===========================================  ========================================

A flush comes every ``flush_every`` steps or ``flush_seconds``, whichever is first.

How it stays neutral: hooks return nothing, work on detached tensors, never touch the RNG, modes
or ``requires_grad``; every handle is removed on exit, also on error (``hooks.py``). Nothing the
watch does can raise into the training loop: a statistic that raises is recorded in
``meta["errors"]``, logged once and skipped from then on; any other failure inside a hook, the step
hook, the buffer or a flush is recorded and logged once the same way (``meta["missing_statistics"]``
says which columns it cost); the store never raises (``store.py``). Forward passes that
activation checkpointing replays during the backward pass are not counted twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from diagnose import validate
from diagnose.monitor import artifacts
from diagnose.monitor.buffer import Buffer, CheckRecord, HistogramRecord
from diagnose.monitor.hooks import Hooks
from diagnose.monitor.layers import LayerParams
from diagnose.monitor.meta import distributed_rank, model_summary, now, optimizer_summary, versions
from diagnose.monitor.nonfinite import INPUT_NAME, NonFiniteTracker
from diagnose.monitor.outputs import Observed, OutputStatistics, observed_modules, output_tensors
from diagnose.monitor.parameters import ParameterStatistics
from diagnose.monitor.schedule import Schedule, StepPlan
from diagnose.monitor.statistics import (
    OutputStatistic,
    ParameterStatistic,
    default_output_statistics,
    default_parameter_statistics,
)
from diagnose.monitor.statistics.histogram import KINDS, LayerHistograms
from diagnose.monitor.store import RunWriter, new_run_dir

log = logging.getLogger(__name__)

# Default cadence of the costlier statistics. Chosen with benchmarks/overhead.py so that the
# default costs at most ~5 % of a plain CPU training step (see the README for the figures).
DEFAULT_EVERY = 50
HISTOGRAMS = "Histograms"  # the key of a histogram failure in meta["errors"]
# Default steps between histograms. Counting costs a scatter per element (~1.2 ns on a CPU core,
# 20x a norm's pass): on a CPU MLP one step's histograms cost about one training step
# (benchmarks/overhead.py), so every 200 steps they add at most ~0.5 %.
HISTOGRAM_EVERY = 200
# Histogram counts wait on the device for the flush (16 KB per layer and kind); past this many bytes
# the watch flushes at the end of the step (histogram_every=1 on a deep model would hold hundreds
# of MB for flush_every steps otherwise).
HISTOGRAM_FLUSH_BYTES = 4 << 20


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
        overhead: instead of ``every``, a budget (0.03: 3 % of the training step): the watch times
            its own work as it runs and sets the cadence after each sampled step to stay under it
            (``schedule.py``); the cadence in force is logged as ``watch_every`` at each sampled
            step, and the overhead measured is in ``meta["overhead"]`` (always, budget or not).
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
        feature_scaler: the standardisation of the sample's features (a fitted StandardScaler or a
            (mean, scale) pair), saved so that reports show raw values.
        observe_noops: also record modules that return their input (``nn.Identity``,
            ``Dropout(p=0)``), left out by default.
        histograms: record per-layer histograms of activations, gradients and weights
            (``run.histograms(kind, layer)``; fixed symmetric log-spaced bins plus zero).
        histogram_every: steps between histograms, taken at the first sampled step at or after
            each (default 200, or every sampled step when ``every`` is larger).
    """

    def __init__(
        self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None, run_dir: str | Path | None = None, *,
        every: int = DEFAULT_EVERY, overhead: float | None = None, flush_every: int = 100,
        flush_seconds: float = 5.0, resume: bool = False,
        overwrite: bool = False, output_statistics: Sequence[OutputStatistic] | None = None,
        parameter_statistics: Sequence[ParameterStatistic] | None = None, track_nonfinite: bool = True,
        meta: dict[str, Any] | None = None, save_model: bool = False, sample: Any = None,
        feature_names: Sequence[str] | None = None, class_names: Sequence[str] | None = None,
        observe_noops: bool = False, feature_scaler: Any = None, histograms: bool = True,
        histogram_every: int | None = None,
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
        self.every = validate.positive_int("every", every)
        if overhead is not None:
            validate.fraction("overhead", overhead)
        validate.positive_int("flush_every", flush_every)
        if not isinstance(histograms, bool):
            raise TypeError(f"histograms: expected True or False, got {histograms!r}")
        if histogram_every is not None:
            validate.positive_int("histogram_every", histogram_every)
        validate.positive_number("flush_seconds", flush_seconds)
        self.model, self.optimizer = model, optimizer
        self.save_model, self.sample = save_model, sample
        self.feature_names, self.class_names = feature_names, class_names
        self.feature_scaler = artifacts.scaler_arrays(feature_scaler)  # checked now, not at the first save
        self.layers = LayerParams(model)
        self.output_statistics = list(default_output_statistics() if output_statistics is None else output_statistics)
        self.parameter_statistics = list(default_parameter_statistics() if parameter_statistics is None
                                         else parameter_statistics)
        self._observed = observed_modules(model, self.output_statistics, noops=observe_noops)
        self.nonfinite = NonFiniteTracker() if track_nonfinite else None
        self._errors: dict[str, str] = {}
        self._outputs = OutputStatistics(self._observed, self._fail, self._errors.__contains__)
        self._parameters = ParameterStatistics(self.layers, optimizer, self.parameter_statistics, self._fail,
                                               self._errors.__contains__)
        self._histograms = LayerHistograms() if histograms else None
        self.histogram_every = histogram_every if histogram_every is not None else HISTOGRAM_EVERY
        self._last_histogram: int | None = None
        self._histogram_now = False  # the step in progress records histograms

        rank, world = distributed_rank()
        self.run_dir = Path(run_dir) if run_dir is not None else new_run_dir(rank)
        self.writer = RunWriter(self.run_dir, {
            "source": "watch", "start_time": now(), "model": model_summary(model),
            "optimizer": optimizer_summary(optimizer), "versions": versions(),
            "every": every if overhead is None else None, "overhead_budget": overhead,
            "flush_every": flush_every, "rank": rank, "world_size": world,
            "layers": self.layers.names, "observed_modules": [o.name for o in self._observed],
            "histograms": {"every": self.histogram_every, "kinds": list(KINDS)} if histograms else None,
            **(meta or {}),
        }, resume=resume, overwrite=overwrite, rank=rank)
        self.start_step = self.writer.start_step
        self.schedule = Schedule(self.start_step, every, flush_every, flush_seconds, budget=overhead)
        self._own = 0.0                     # seconds spent in the watch since the last step ended
        self._last_end: float | None = None
        self.buffer = Buffer()
        self.hooks = Hooks()
        self._closed = False
        self._forward_passes = 0
        self._forward_since_step = False  # a training forward pass of the step in progress ran
        self._budget_warned = False
        try:
            self._attach()
            self._begin_step(self.start_step)
        except BaseException:
            self.hooks.remove()
            self.writer.close(complete=False)
            raise

    # -- hooks --------------------------------------------------------------------------------
    def _attach(self) -> None:
        # Every step: the input check (and the forward-pass boundary), the outputs that can
        # originate a NaN/Inf, and the step boundary. The other modules are hooked during sampled
        # steps only, so between samples they cost nothing.
        self.hooks.add("session", self.model.register_forward_pre_hook(
            self._guarded("the forward pre-hook", self._on_forward_start)))
        for obs in self._observed:
            if self._checked(obs):
                self.hooks.add("session", obs.module.register_forward_hook(self._hook(obs)))
        if self.optimizer is not None:
            self.hooks.add("session", self.optimizer.register_step_pre_hook(
                self._guarded("the optimizer pre-step hook", self._on_optimizer_pre_step)))
            self.hooks.add("session", self.optimizer.register_step_post_hook(lambda *_: self._end_step()))

    def _guarded(self, site: str, fn: Callable[..., None]) -> Callable[..., None]:
        """``fn`` as a hook: its time counts as the watch's own (the overhead budget reads it), and
        nothing it raises reaches the training loop (recorded once per ``site``)."""
        def hook(*args: Any) -> None:
            start = time.perf_counter()
            try:
                fn(*args)
            except Exception as err:  # noqa: BLE001 - nothing may raise into the training loop
                self._internal(site, err)
            finally:
                self._own += time.perf_counter() - start
        return hook

    def _checked(self, obs: Observed) -> bool:
        """Whether ``obs``'s output is checked for NaN/Inf at every step."""
        return self.nonfinite is not None and obs.can_originate

    def _hook(self, obs: Observed) -> Callable[..., None]:
        checked, name, nonfinite = self._checked(obs), obs.name, self.nonfinite

        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if not (module.training or torch.is_grad_enabled()) or _in_backward():
                return  # an evaluation pass, or checkpointing replaying a forward: not the step's
            if not self._plan.sampled:  # the every-step path: the NaN/Inf check only, kept short
                if checked and nonfinite is not None:
                    if type(output) is torch.Tensor:
                        if output.is_floating_point():
                            nonfinite.check_one(name, output.detach())
                    elif tensors := output_tensors(output):
                        nonfinite.check(name, [t.detach() for t in tensors])
                return
            self._sampled_output(obs, output, checked)
        return self._guarded("a forward hook", hook)

    def _sampled_output(self, obs: Observed, output: Any, checked: bool) -> None:
        """A module's output on a sampled step: its statistics' partials, its NaN/Inf check, and
        the output kept until the step ends, to count its NaN/Inf if there are any."""
        if type(output) is torch.Tensor:
            tensors = [output.detach()] if output.is_floating_point() else []
        else:
            tensors = [t.detach() for t in output_tensors(output)]
        if not tensors:
            return
        with torch.no_grad():
            total = self._outputs.add(obs, output, tensors)  # the statistics' sum, if they took it
            if self._histogram_now and self._histograms is not None and HISTOGRAMS not in self._errors:
                try:
                    self._histograms.add_output(obs.index, tensors)
                except Exception as err:  # noqa: BLE001 - a broken statistic must not stop training
                    self._fail(HISTOGRAMS, err)
            if self.nonfinite is not None:
                if total is None:
                    total = self.nonfinite.total(tensors)
                if checked:
                    self.nonfinite.check(obs.name, tensors, total)
                self.nonfinite.keep_for_count(obs.index, tensors, total)

    def _on_forward_start(self, module: nn.Module, args: Any) -> None:
        if not (module.training or torch.is_grad_enabled()) or _in_backward():
            return
        self._forward_passes += 1
        self._forward_since_step = True
        self._outputs.new_forward()
        if self.nonfinite is not None:
            first = args[0] if args else None
            inputs = [first] if type(first) is torch.Tensor and first.is_floating_point() else output_tensors(args)
            if inputs:
                self.nonfinite.check(INPUT_NAME, [inputs[0].detach()])

    def _on_optimizer_pre_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        if self._plan.sampled:
            self._parameters.before_update(self._step)

    def _fail(self, key: str, err: Exception) -> None:
        self._errors[key] = f"{type(err).__name__}: {err}"
        log.warning("diagnose.watch: statistic %s failed (%s); it is skipped from now on", key, err)

    def _internal(self, site: str, err: Exception) -> None:
        """A failure of the watch itself, outside a statistic: recorded and logged once per place,
        never raised into the training loop."""
        key = f"watch: {site}"
        if key not in self._errors:
            self._fail(key, err)

    # -- steps --------------------------------------------------------------------------------
    @property
    def sampled(self) -> bool:
        """Whether the step in progress records the costlier statistics."""
        return self._plan.sampled

    def step(self) -> None:
        """Mark the end of a training step, for loops that did not pass an optimizer to ``watch``."""
        if self.optimizer is not None:
            raise RuntimeError("step(): steps are counted from optimizer.step() when an optimizer is "
                               "watched; call run.step() only with dg.watch(model, optimizer=None)")
        self._end_step()

    def _begin_step(self, step: int) -> None:
        """Before a step: its plan; on a sampled step every module hooked (and, without an
        optimizer, the parameters copied: the update is measured against the copy)."""
        self._step, self._plan = step, self.schedule.plan(step)
        self._forward_since_step = False
        self._histogram_now = self._plan.sampled and self._histograms is not None and (
            self._last_histogram is None or step - self._last_histogram >= self.histogram_every)
        if not self._plan.sampled:
            return
        try:
            if not self.hooks.attached("sampled"):
                for obs in self._observed:
                    if not self._checked(obs):
                        self.hooks.add("sampled", obs.module.register_forward_hook(self._hook(obs)))
            self._parameters.begin_step(step)
        except Exception as err:  # noqa: BLE001 - nothing may raise into the training loop
            self._internal("the start of a step", err)

    def _end_step(self) -> None:
        if self._closed:
            raise RuntimeError("this watch is closed; its hooks should have been removed")
        start = time.perf_counter()
        step, plan = self._step, self._plan
        try:
            self._record_step(step, plan)
        except Exception as err:  # noqa: BLE001 - nothing may raise into the training loop
            self._internal("the optimizer step hook", err)
        now = time.perf_counter()
        seconds = now - self._last_end if self._last_end is not None else 0.0
        flush = self.schedule.step_done(step, plan.sampled, self._own + now - start, seconds)
        if plan.sampled and self.schedule.budget is not None:
            self.buffer.log(step, {"watch_every": self.schedule.every})  # the cadence until the next sample
            self._check_budget()
        self._last_end = now
        self._begin_step(step + 1)
        if flush or self.buffer.histogram_bytes > HISTOGRAM_FLUSH_BYTES:
            self.flush()
        self._own = time.perf_counter() - now  # the next step's share: its hooks attached, the flush

    def _check_budget(self) -> None:
        """Say once when the every-step work alone is over the budget: sampling as rarely as
        allowed cannot meet it then, and only a larger budget or no NaN/Inf checks can."""
        share, budget = self.schedule.every_step_share, self.schedule.budget
        if self._budget_warned or share is None or budget is None or share <= budget:
            return
        self._budget_warned = True
        message = (f"the every-step NaN/Inf checks and step hooks alone cost {share:.1%} of this model's training "
                   f"step, over the budget of {budget:.1%}: statistics are sampled every {self.schedule.every} steps; "
                   f"pass a larger overhead= or track_nonfinite=False to meet it")
        log.warning("diagnose.watch: %s", message)
        self.writer.set_meta(overhead_warning=message)

    @property
    def measured_overhead(self) -> float | None:
        """The watch's own time over the rest of the training steps' time, so far (CPU work; on
        a GPU, the time its kernels take asynchronously is not in it)."""
        return self.schedule.measured_overhead

    def _record_step(self, step: int, plan: StepPlan) -> None:
        self._end_checks(step)  # every step: the NaN/Inf checks' sums (of detached tensors)
        if not plan.sampled:
            return
        with torch.no_grad():
            if not plan.next_sampled:
                self.hooks.remove("sampled")
            ctx, records = self._parameters.end_step(step)
            for record in records:
                self.buffer.add(record)
            if self.nonfinite is not None:
                for layer, count in self.nonfinite.counted(ctx, self._observed, self.layers):
                    self.buffer.add_count(step, layer, count)
            if self._observed:
                self.buffer.add(self._outputs.end_step(step, self.layers.device))
                order = self._outputs.forward_order()
                if order is not None:
                    self.writer.set_meta(forward_order=order)
            if self._histogram_now:
                self._record_histograms(step)

    def _record_histograms(self, step: int) -> None:
        """The step's histograms: the outputs counted in the forward hooks, the gradients and the
        weights now (after the update), per layer; on the device until the flush."""
        histograms = self._histograms
        if histograms is None:
            return
        self._last_histogram = step
        try:
            if HISTOGRAMS in self._errors:
                return
            outputs = histograms.outputs([o.name for o in self._observed])
            if outputs is not None:
                self.buffer.add(HistogramRecord(step, "act", *outputs))
            layers = self.layers
            if not layers.params:
                return
            owned = list(zip(layers.params, layers.owner_ids))
            grads = [(p.grad, owner) for p, owner in owned if p.grad is not None and p.grad.is_floating_point()]
            if grads:  # the layers without a gradient this step (layers.missing) get no row
                keep = [i for i in range(len(layers)) if i not in layers.missing]
                counts = histograms.per_layer(grads, len(layers), layers.device)
                self.buffer.add(HistogramRecord(step, "grad", [layers.names[i] for i in keep],
                                                counts if len(keep) == len(layers) else counts[keep]))
            weights = [(p, owner) for p, owner in owned if p.is_floating_point()]
            self.buffer.add(HistogramRecord(step, "weight", layers.names,
                                            histograms.per_layer(weights, len(layers), layers.device)))
        except Exception as err:  # noqa: BLE001 - a broken statistic must not stop training
            self._fail(HISTOGRAMS, err)

    def _end_checks(self, step: int) -> None:
        if self.nonfinite is None:
            return
        checks = self.nonfinite.end_step()
        if checks is not None:  # checked on the host at the next flush
            self.buffer.add(CheckRecord(step, checks[0], checks[1], self.nonfinite))

    # -- scalars ------------------------------------------------------------------------------
    def log(self, step: int | None = None, **values: torch.Tensor | float) -> None:
        """Record scalars (loss, metrics, learning rate). Tensors stay on their device until the
        next flush, so logging costs no host sync.

        ``step`` defaults to the step the value belongs to: the step in progress once its forward
        pass ran (a loss logged between micro-batches of gradient accumulation), else the last
        completed step (a loss logged right after ``optimizer.step()``).
        """
        start = time.perf_counter()
        if step is None:
            step = self._step if self._forward_since_step else max(self._step - 1, self.start_step)
        try:
            self.buffer.log(step, values)
        finally:
            self._own += time.perf_counter() - start

    def set_meta(self, **items: Any) -> None:
        """Store extra metadata with the run (JSON-serializable values)."""
        self.writer.set_meta(**items)

    # -- flushing -----------------------------------------------------------------------------
    def flush(self) -> None:
        """Copy the buffered statistics to the host (one transfer per device) and hand them to the
        store's writer thread. Never raises: a failure costs those rows, recorded in the run."""
        try:
            self._flush()
        except Exception as err:  # noqa: BLE001 - nothing may raise into the training loop
            self._internal("a flush", err)

    def _flush(self) -> None:
        self.schedule.flushed()
        rows = self.buffer.drain()
        for first in rows.first_nonfinite:
            self._found(first)
        if self.nonfinite is not None:  # a gradient that went non-finite in a finite forward pass
            self._found(self.nonfinite.gradient_origin(rows.layers, self.layers.names))
        if rows.scalars:
            self.writer.write_scalars(rows.scalars)
        if rows.layers:
            self.writer.write_layer_rows(rows.layers)
        if rows.histograms:
            self.writer.write_histograms(rows.histograms)

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
            self.hooks.remove()
            try:
                self._end_checks(self._step)  # a forward pass after the last step
            except Exception as err:  # noqa: BLE001 - the run is still closed and written
                self._internal("the last checks", err)
            self.flush()
            counted = self._step - self.start_step
            if counted == 0 and self._forward_passes:
                log.warning("diagnose.watch: %d forward passes but no step was counted in %s: pass the optimizer to "
                            "dg.watch, or call run.step() after each step", self._forward_passes, self.run_dir)
            self.writer.set_meta(overhead={"measured": self.measured_overhead, "budget": self.schedule.budget,
                                           "every_at_end": self.schedule.every,
                                           "every_step_share": self.schedule.every_step_share})
            self.writer.set_meta(end_time=now(), steps=self._step, steps_counted=counted,
                                 forward_passes=self._forward_passes, errors=self._errors,
                                 missing_statistics=self._missing_statistics(),
                                 first_nonfinite=self.nonfinite.first if self.nonfinite else None)
            self._save_artifacts()
        finally:
            self.writer.close(complete=complete)

    def _missing_statistics(self) -> list[str]:
        """The columns a failure cost, partly or wholly: those of statistics that raised; the
        output statistics' when a forward hook failed; every column when another part did."""
        statistics = [*self.output_statistics, *self.parameter_statistics]
        sites = {key[len("watch: "):] for key in self._errors if key.startswith("watch: ")}
        failed = {key.split("@")[0] for key in self._errors if not key.startswith("watch: ")}
        histograms = {"histograms"} if self._histograms is not None else set()
        if sites - {"a forward hook", "the forward pre-hook"}:
            return sorted({c for s in statistics for c in s.columns} | {"nonfinite"} | histograms)
        if sites:
            failed |= {type(s).__name__ for s in self.output_statistics} | {HISTOGRAMS}
        return sorted({c for s in statistics if type(s).__name__ in failed for c in s.columns}
                      | (histograms if HISTOGRAMS in failed else set()))

    def _save_artifacts(self) -> None:
        if self.save_model or self.sample is not None:
            files, errors = artifacts.save_with_run(self.run_dir, self.model if self.save_model else None,
                                                    self.sample, self.feature_names, self.class_names,
                                                    self.feature_scaler)
            self._errors.update(errors)
            self.writer.set_meta(saved_model=artifacts.MODEL_WEIGHTS in files,
                                 saved_sample=artifacts.SAMPLE_DATA in files, files=files, errors=self._errors)

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.close(complete=exc_type is None,
                   reason=f"the training raised {exc_type.__name__}: {exc}".splitlines()[0] if exc_type else None)

    def __repr__(self) -> str:
        return f"Watch(run_dir={str(self.run_dir)!r}, step={self._step}, every={self.every})"


def _in_backward() -> bool:
    """Whether autograd is running a backward pass now: a forward seen then is activation
    checkpointing recomputing what it did not keep (reentrant or not), already counted."""
    return torch._C._current_autograd_node() is not None


# ``dg.watch(model, optimizer, run_dir=...)`` constructs the context manager (shared/API.md §1).
watch = Watch
