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

Severity = Literal["info", "warning", "critical"]
SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2}

# A condition is "persistent" when it holds on at least this fraction of the sampled steps it is
# judged on: one noisy batch must not make a diagnosis.
PERSISTENCE = 0.8
# Rules judge the later part of a run: the first steps of training are transient by design
# (fresh initialization, warm-up), so the first 20 % of recorded steps are skipped.
WARMUP_FRACTION = 0.2


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


class RunData:
    """A run's tables as the rules read them (rank 0 under DDP), with the common views cached."""

    def __init__(self, layer_stats: pd.DataFrame, scalars: pd.DataFrame, meta: dict[str, Any],
                 loss: pd.Series | None = None) -> None:
        self.layer_stats = layer_stats[layer_stats["rank"] == 0] if "rank" in layer_stats else layer_stats
        self.scalars = scalars[scalars["rank"] == 0] if "rank" in scalars else scalars
        self.meta = meta
        self._loss = loss

    def pivot(self, column: str) -> pd.DataFrame:
        """step x layer table of one statistic, layers in model order, rows with data only."""
        if column not in self.layer_stats or self.layer_stats.empty:
            return pd.DataFrame()
        table = self.layer_stats.pivot_table(index="step", columns="layer", values=column, aggfunc="last")
        order = [layer for layer in self.layer_order if layer in table.columns]
        return table[order].dropna(how="all")

    @cached_property
    def layer_order(self) -> list[str]:
        """Layer names in model order (the order the watch recorded them)."""
        return list(dict.fromkeys(self.layer_stats["layer"])) if not self.layer_stats.empty else []

    def later(self, table: pd.DataFrame) -> pd.DataFrame:
        """The rows after the warm-up (all rows if there are too few to drop any)."""
        if len(table) < 5:
            return table
        return table.iloc[int(len(table) * WARMUP_FRACTION):]

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

    def layer_type(self, layer: str) -> str | None:
        """The module class of a layer, from the model summary in the metadata."""
        for entry in (self.meta.get("model") or {}).get("layers", []):
            if entry.get("name") == layer:
                return entry.get("type")
        return None

    @property
    def steps(self) -> int:
        return int(self.meta.get("steps") or (self.layer_stats["step"].max() + 1 if not self.layer_stats.empty else 0))


def persistent(mask: pd.DataFrame | pd.Series) -> pd.Series | bool:
    """Whether a condition holds on at least PERSISTENCE of the rows (per column for a frame)."""
    if isinstance(mask, pd.DataFrame):
        return mask.mean() >= PERSISTENCE if len(mask) else pd.Series(False, index=mask.columns)
    return bool(len(mask) and mask.mean() >= PERSISTENCE)


def smooth(series: pd.Series, window: int | None = None) -> pd.Series:
    """A rolling median: robust to the noise of mini-batch losses."""
    window = window or max(3, len(series) // 20)
    return series.rolling(window, min_periods=1, center=True).median()


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
RULES: dict[str, Rule] = {}


def rule(name: str) -> Callable[[Rule], Rule]:
    """Register a finding rule under ``name`` (tests parametrize over ``RULES``)."""
    def register(fn: Rule) -> Rule:
        if name in RULES:
            raise ValueError(f"finding rule {name!r} is already registered")
        RULES[name] = fn
        return fn
    return register


def fraction_findings(run: RunData, column: str, kind: str, warning: float, critical: float, what: str,
                      remedy: str, skip: str) -> list[Finding]:
    """One finding per layer whose ``column`` (a fraction) stays >= ``warning`` persistently;
    ``what`` completes "<x>% of <layer> ..." in the message."""
    table = run.later(run.pivot(column))
    if table.empty:
        raise Skip(skip)
    findings = []
    for layer in table.columns:
        values = table[layer].dropna()
        if not persistent(values >= warning):
            continue
        median = float(values.median())
        findings.append(Finding(
            kind=kind, severity="critical" if median >= critical else "warning", layer=layer,
            steps=step_range(values.index),
            evidence={f"median_{column}": median, f"max_{column}": float(values.max()), "threshold": warning},
            message=f"{fmt(100 * median)}% of {what.format(layer=layer)} (median over steps "
                    f"{int(values.index[0])}-{int(values.index[-1])}).",
            remedy=remedy))
    return findings
