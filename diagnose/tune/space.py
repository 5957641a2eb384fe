"""The search-space syntax of shared/API.md §6, checked, and turned into Optuna suggestions.

``name -> list`` (categorical; a grid's values), ``(low, high)`` (uniform float, or int when both
ends are ints), ``dg.log_uniform(low, high)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import optuna


@dataclass(frozen=True)
class LogUniform:
    """A float sampled uniformly in log space between ``low`` and ``high`` (both > 0)."""

    low: float
    high: float


def log_uniform(low: float, high: float) -> LogUniform:
    """A log-uniform range, e.g. for learning rates: ``dg.log_uniform(1e-4, 1e-1)``."""
    if not (isinstance(low, (int, float)) and isinstance(high, (int, float))) or not 0 < low < high:
        raise ValueError(f"log_uniform: expected 0 < low < high, got ({low!r}, {high!r})")
    return LogUniform(float(low), float(high))


@dataclass(frozen=True)
class Dimension:
    name: str
    kind: str  # "categorical" | "int" | "float" | "log"
    values: tuple[Any, ...] = ()
    low: float = 0.0
    high: float = 0.0

    def suggest(self, trial: optuna.Trial) -> Any:
        if self.kind == "categorical":
            return trial.suggest_categorical(self.name, list(self.values))
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high))
        return trial.suggest_float(self.name, self.low, self.high, log=self.kind == "log")


def _categorical_value(name: str, value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(v, (int, float, str, bool)) for v in value):
        # Optuna stores categories as plain values: a list (e.g. hidden layer sizes) becomes a string
        return repr(list(value))
    raise TypeError(f"space['{name}']: categorical values must be numbers, strings, booleans or lists of them, "
                    f"got {type(value).__name__}")


def parse_space(space: Mapping[str, Any]) -> list[Dimension]:
    """Validate ``space`` and return one Dimension per parameter."""
    if not isinstance(space, Mapping) or not space:
        raise ValueError("space: expected a non-empty mapping of parameter name -> values or range")
    dims = []
    for name, spec in space.items():
        if isinstance(spec, LogUniform):
            dims.append(Dimension(name, "log", low=spec.low, high=spec.high))
        elif isinstance(spec, list):
            if not spec:
                raise ValueError(f"space['{name}']: the list of values is empty")
            dims.append(Dimension(name, "categorical", tuple(_categorical_value(name, v) for v in spec)))
        elif isinstance(spec, tuple) and len(spec) == 2 and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in spec):
            low, high = spec
            if not (math.isfinite(low) and math.isfinite(high)) or low >= high:
                raise ValueError(f"space['{name}']: expected low < high, got ({low}, {high})")
            kind = "int" if isinstance(low, int) and isinstance(high, int) else "float"
            dims.append(Dimension(name, kind, low=low, high=high))
        else:
            raise TypeError(f"space['{name}']: expected a list of values, a (low, high) pair or "
                            f"dg.log_uniform(low, high), got {spec!r}")
    return dims


def decode(value: Any) -> Any:
    """A categorical value as the objective should see it (lists were stored as their repr)."""
    if isinstance(value, str) and value.startswith("[") and value.endswith("]"):
        import ast
        try:
            return ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return value
    return value
