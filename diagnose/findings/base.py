"""What every finding rule shares: the Finding record, the run's data as rules read it, and the
registry rules join with ``@rule``."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

import numpy as np
import pandas as pd

from diagnose.registry import Registry

Severity = Literal["info", "warning", "critical"]
SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2}

# A condition is "persistent" when it holds on at least this fraction of the sampled steps it is
# judged on: one noisy batch must not make a diagnosis.
PERSISTENCE = 0.8
# Rules judge the later part of a run: the first steps of training are transient by design
# (fresh initialization, warm-up), so the first 20 % of recorded steps are skipped, and at least
# this many sampled steps must remain: a persistence over fewer is a coincidence.
WARMUP_FRACTION = 0.2
MIN_JUDGED_STEPS_AFTER_WARMUP = 5

# Optimizers that normalize each element's step by its gradient history (or its sign): the
# Adam family (Kingma & Ba, 2015), RMSProp, AdaGrad, Adadelta, Lion.
ADAPTIVE_OPTIMIZERS = frozenset({"Adam", "AdamW", "NAdam", "RAdam", "Adamax", "SparseAdam", "Adagrad", "RMSprop",
                                 "Adadelta", "Adafactor", "Lion", "LAMB", "Lamb"})
# Modules that pass their input on unchanged in scale (they sit between a layer and its
# normalization without breaking the scale invariance).
TRANSPARENT = ("Dropout", "Identity", "Pad", "Flatten", "Unflatten")
# A layer "started at zero" when its first recorded weights have a root-mean-square under 1e-3, an
# order of magnitude below any standard initialization (Xavier/He for 65 536 inputs: 4e-3); until
# it has grown to half the size it reaches, ratios to its own size are not judged.
ZERO_RMS = 1e-3
GROWN = 0.5


@dataclass(frozen=True)
class Finding:
    """One diagnosis: what, how bad, where, when, the numbers behind it, and what to do."""

    kind: str
    severity: Severity
    layer: str | None
    steps: tuple[int, int] | None
    evidence: dict[str, Any]
    message: str
    remedy: str

    @property
    def support(self) -> str | None:
        """How many sampled steps the finding rests on, in words (``"38 of 40 sampled steps"``)."""
        if "supporting_steps" not in self.evidence:
            return None
        return f"{self.evidence['supporting_steps']} of {self.evidence['judged_steps']} sampled steps"

    def as_row(self) -> dict[str, Any]:
        """A flat dict for tables."""
        return {"severity": self.severity, "kind": self.kind, "layer": self.layer,
                "steps": f"{self.steps[0]}-{self.steps[1]}" if self.steps else "", "message": self.message}


@dataclass
class RuleOutcome:
    """What one rule concluded: its findings, or why it could not be evaluated."""

    name: str
    findings: list[Finding] = field(default_factory=list)
    skipped: str | None = None  # the reason the rule was not evaluated


class Skip(Exception):
    """Raised by a rule that lacks the data it needs; the message says what is missing."""


# Long runs: a rule reads at most this many (step, layer) values per statistic (about 1 MB as
# float64, a tenth of a second from SQLite): a run with more recorded steps is judged on evenly
# spaced ones. The rules judge fractions of steps and medians; from 1000 or more evenly spaced
# steps a fraction is within +-3 % of the whole run's (95 %: 2 x sqrt(0.25 / 1000)), while
# NaN/Inf counts and the loss are always read at every step.
JUDGED_ROWS = 120_000
MIN_JUDGED_STEPS = 1000


class _FrameTables:
    """Per-layer tables from an in-memory ``layer_stats`` frame (tests, small runs)."""

    def __init__(self, layer_stats: pd.DataFrame) -> None:
        self.frame = layer_stats[layer_stats["rank"] == 0] if "rank" in layer_stats else layer_stats
        self.layer_order = list(dict.fromkeys(self.frame["layer"])) if not self.frame.empty else []
        self.recorded_steps = int(self.frame["step"].nunique()) if not self.frame.empty else 0
        self.judged_steps = self.recorded_steps
        self.last_step = int(self.frame["step"].max()) if not self.frame.empty else None

    def table(self, column: str) -> pd.DataFrame:
        if column not in self.frame or self.frame.empty:
            return pd.DataFrame()
        table = self.frame.pivot_table(index="step", columns="layer", values=column, aggfunc="last")
        order = [layer for layer in self.layer_order if layer in table.columns]
        return table[order].dropna(how="all")

    def table_at(self, column: str, steps: list[int]) -> pd.DataFrame:
        table = self.table(column)
        return table[table.index.isin(steps)] if not table.empty else table

    def rows_above(self, column: str, above: float) -> pd.DataFrame:
        if column not in self.frame:
            return self.frame.iloc[:0][["step", "layer"]]
        return self.frame[self.frame[column] > above][["step", "layer", column]]


class _StoreTables:
    """Per-layer tables read from a run store on demand: one statistic at a time, at most
    ``JUDGED_ROWS`` values each (evenly spaced steps of a long run)."""

    def __init__(self, run: Any, max_rows: int | None = None) -> None:
        self.run = run
        max_rows = JUDGED_ROWS if max_rows is None else max_rows
        self.layer_order = run.layer_names()
        steps = run.recorded_steps()
        self.recorded_steps = len(steps)
        self.last_step = int(steps[-1]) if len(steps) else None
        limit = max(MIN_JUDGED_STEPS, max_rows // max(1, len(self.layer_order)))
        self.steps = None
        if len(steps) > limit:  # evenly spaced, first and last included
            self.steps = steps[np.unique(np.linspace(0, len(steps) - 1, limit).round().astype(int))]
        self.judged_steps = len(steps) if self.steps is None else len(self.steps)

    def table(self, column: str) -> pd.DataFrame:
        return self.run.layer_table(column, steps=self.steps, order=self.layer_order)

    def table_at(self, column: str, steps: list[int]) -> pd.DataFrame:
        return self.run.layer_table(column, steps=steps, order=self.layer_order)

    def rows_above(self, column: str, above: float) -> pd.DataFrame:
        return self.run.layer_rows(column, above=above)


class RunData:
    """A run's data as the rules read them (rank 0 under DDP), with the common views cached.

    Built from DataFrames (``RunData(layer_stats, scalars, meta, loss)``) or, reading only what
    the rules ask for, from a recorded run (``RunData.from_run(run)``).
    """

    def __init__(self, layer_stats: pd.DataFrame | None, scalars: pd.DataFrame, meta: dict[str, Any],
                 loss: pd.Series | None = None, *, tables: Any = None) -> None:
        self._tables = tables if tables is not None else _FrameTables(layer_stats)
        self.scalars = scalars[scalars["rank"] == 0] if "rank" in scalars else scalars
        self.meta = meta
        self._loss = loss
        self._pivots: dict[str, pd.DataFrame] = {}

    @classmethod
    def from_run(cls, run: Any) -> RunData:
        """The rules' view of a recorded run (a ``dg.Run``): scalars and metadata read once,
        per-layer statistics read one column at a time when a rule asks for them."""
        scalars = run.scalars()
        loss = None
        for name in ("loss", "train_loss"):
            if name in scalars:
                loss = run.scalar(name)
                break
        return cls(None, scalars, run.meta, loss, tables=_StoreTables(run))

    def pivot(self, column: str) -> pd.DataFrame:
        """step x layer table of one statistic, layers in model order, rows with data only."""
        if column not in self._pivots:
            self._pivots[column] = self._tables.table(column)
        return self._pivots[column]

    def rows_above(self, column: str, above: float = 0.0) -> pd.DataFrame:
        """Every (step, layer) row where ``column`` > ``above`` (read at every step, not thinned)."""
        return self._tables.rows_above(column, above)

    def table_at(self, column: str, steps: list[int]) -> pd.DataFrame:
        """step x layer table of one statistic at exactly these steps (those recorded), not thinned."""
        return self._tables.table_at(column, steps)

    @property
    def layer_order(self) -> list[str]:
        """Layer names in model order (the order the watch recorded them)."""
        return self._tables.layer_order

    @property
    def last_step(self) -> int | None:
        """The last step with per-layer statistics (None when there are none)."""
        return self._tables.last_step

    @property
    def recorded_steps(self) -> int:
        """How many steps hold per-layer statistics."""
        return self._tables.recorded_steps

    @property
    def judged_steps(self) -> int:
        """How many of them the per-layer rules read (all, unless the run is long)."""
        return self._tables.judged_steps

    def later(self, table: pd.DataFrame) -> pd.DataFrame:
        """The rows after the warm-up; a Skip when fewer than MIN_JUDGED_STEPS remain (a
        diagnosis needs more than a step or two: the first steps of a fresh model say nothing)."""
        later = table.iloc[int(len(table) * WARMUP_FRACTION):]
        if len(later) < MIN_JUDGED_STEPS_AFTER_WARMUP:
            raise Skip(f"not enough steps: needs >= {MIN_JUDGED_STEPS_AFTER_WARMUP} sampled steps after the "
                       f"warm-up, got {len(later)} (train longer, or record more often with a smaller every=)")
        return later

    # -- what the rules need to know about the optimizer and the layers ------------------------
    @cached_property
    def optimizer(self) -> str | None:
        """The optimizer's class name (``AdamW``), from the metadata."""
        return (self.meta.get("optimizer") or {}).get("class")

    @cached_property
    def adaptive(self) -> bool:
        """Whether the optimizer normalizes each element's step (Adam family, RMSProp, AdaGrad,
        Adadelta, Lion...): then a raw gradient's size says nothing about the step it takes."""
        name = self.optimizer or ""
        return name in ADAPTIVE_OPTIMIZERS or name.startswith(("Adam", "Ada", "RMS", "Lamb", "LAMB", "Lion"))

    @cached_property
    def _types(self) -> dict[str, str]:
        return {e.get("name"): e.get("type") for e in (self.meta.get("model") or {}).get("layers", [])}

    def finite_loss(self, min_points: int) -> pd.Series:
        """The training loss without its NaN/Inf steps (the nonfinite rule reports those); a Skip
        when it was logged at fewer than ``min_points`` steps."""
        if len(self.loss) < min_points:
            raise Skip(f"needs a training loss logged at >= {min_points} steps (run.log(loss=...))")
        return self.loss[np.isfinite(self.loss.to_numpy())]

    def layer_type(self, layer: str) -> str | None:
        """The module class of a layer, from the model summary in the metadata."""
        return self._types.get(layer)

    def is_normalization(self, layer: str) -> bool:
        """A normalization layer (BatchNorm, LayerNorm, GroupNorm, RMSNorm, ...): its own scale and
        shift are optional refinements, not what carries the signal."""
        return "Norm" in (self.layer_type(layer) or "")

    @cached_property
    def scale_invariant(self) -> frozenset[str]:
        """Layers whose output a normalization layer rescales next (conv -> BatchNorm, linear ->
        LayerNorm): scaling their weights changes nothing, so the gradient shrinks as the weights
        grow and only the relative step (the update ratio) means anything. From the order modules
        ran in (recorded by the watch), else the model's definition order."""
        order = self.meta.get("forward_order") or list(self._types)
        found = set()
        for i, name in enumerate(order):
            nxt = next((n for n in order[i + 1:] if not any(t in (self.layer_type(n) or "") for t in TRANSPARENT)),
                       None)
            if nxt is not None and self.is_normalization(nxt) and not self.is_normalization(name):
                found.add(name)
        return frozenset(found)

    def growing_from_zero(self) -> pd.DataFrame:
        """step x layer: True where a layer that started at zero (a zero-initialized head, class
        token or gate: its first root-mean-square weight under ZERO_RMS) has not yet grown to half
        its size; ratios to its own norm are meaningless there (any step is large next to nothing)."""
        weights = self.pivot("weight_norm")
        if weights.empty:
            return weights.astype(bool)
        sizes = {e.get("name"): e.get("params") for e in (self.meta.get("model") or {}).get("layers", [])}
        first = weights.apply(lambda col: col.dropna().iloc[0] if col.notna().any() else np.nan)
        count = pd.Series({layer: float(sizes.get(layer) or 1) for layer in weights.columns})
        started_at_zero = first / np.sqrt(count) < ZERO_RMS
        return (weights < GROWN * weights.max()) & started_at_zero

    @cached_property
    def loss(self) -> pd.Series:
        """The training loss at the steps it was logged (``loss``, else the epochs' ``train_loss``);
        a NaN logged as the loss stays NaN."""
        if self._loss is not None:
            return self._loss
        for name in ("loss", "train_loss"):
            if name in self.scalars and self.scalars[name].notna().any():
                return self.scalars.set_index("step")[name].dropna()
        return pd.Series(dtype=float)

    @property
    def steps(self) -> int:
        last = self._tables.last_step
        return int(self.meta.get("steps") or (last + 1 if last is not None else 0))


def support(mask: pd.Series) -> dict[str, int]:
    """Evidence of how many sampled steps a finding rests on: those where its condition held,
    of those judged."""
    return {"supporting_steps": int(mask.sum()), "judged_steps": len(mask)}


def persistent(mask: pd.Series) -> bool:
    """Whether a condition holds on at least PERSISTENCE of the rows, and there are at least
    MIN_JUDGED_STEPS_AFTER_WARMUP of them (a persistence over fewer is a coincidence)."""
    return bool(len(mask) >= MIN_JUDGED_STEPS_AFTER_WARMUP and mask.mean() >= PERSISTENCE)


def persistent_columns(mask: pd.DataFrame) -> pd.Series:
    """Per column of a step x layer table: whether the condition holds on at least PERSISTENCE
    of its rows."""
    return mask.mean() >= PERSISTENCE if len(mask) else pd.Series(False, index=mask.columns)


def smooth(series: pd.Series, window: int | None = None) -> pd.Series:
    """A rolling median: robust to the noise of mini-batch losses."""
    window = window or max(3, len(series) // 20)
    return series.rolling(window, min_periods=1, center=True).median()


def noise(loss: pd.Series) -> float:
    """The loss's own per-step noise (what mini-batches of this size make it jump by): 1.4826 x the
    median absolute deviation from its rolling median, a standard deviation robust to the trend and
    to spikes."""
    return float(1.4826 * (loss - smooth(loss)).abs().median())


def initial_level(loss: pd.Series) -> float:
    """Where the loss started: the median of its first 10 % (at least 3 points), so that one
    outlying first batch does not set the reference."""
    return float(loss.iloc[: max(3, len(loss) // 10)].median())


def fmt(value: float) -> str:
    """A number for a message: 3 significant digits, scientific when far from 1."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.3g}"


def step_range(index: pd.Index | np.ndarray) -> tuple[int, int] | None:
    """(first, last) step of a non-empty index."""
    return (int(index[0]), int(index[-1])) if len(index) else None


Rule = Callable[[RunData], list[Finding]]
# Filled by importing diagnose.findings (one module per rule).
RULES: Registry[Rule] = Registry("finding rule")


def rule(name: str) -> Callable[[Rule], Rule]:
    """Register a finding rule under ``name`` (tests parametrize over ``RULES``)."""
    return RULES.register(name)


def fraction_findings(run: RunData, column: str, kind: str, warning: float, critical: float, what: str,
                      remedy: str, skip: str) -> list[Finding]:
    """One finding per layer whose ``column`` (a fraction) stays above ``warning`` persistently
    (critical from a median of ``critical``); ``what`` completes "<x>% of <layer> ..." in the message."""
    table = run.pivot(column)
    if table.empty:
        raise Skip(skip)
    table = run.later(table)
    findings = []
    for layer in table.columns:
        values = table[layer].dropna()
        if not persistent(values > warning):
            continue
        median = float(values.median())
        findings.append(Finding(
            kind=kind, severity="critical" if median >= critical else "warning", layer=layer,
            steps=step_range(values.index),
            evidence={f"median_{column}": median, f"max_{column}": float(values.max()), "threshold": warning,
                      **support(values > warning)},
            message=f"{fmt(100 * median)}% of {what.format(layer=layer)} (median over steps "
                    f"{int(values.index[0])}-{int(values.index[-1])}).",
            remedy=remedy))
    return findings
