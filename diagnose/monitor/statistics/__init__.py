"""Statistics the watch records: one module each, built on the templates in ``base`` and
registered in ``STATISTICS``; the store's columns, the report's per-layer plots and the oracle
test (tests/monitor/test_statistics.py) follow from the registry.

A new statistic is one file here: a subclass of ``OutputStatistic`` (``partial``/``finalize``) or
``ParameterStatistic`` (``compute``) with ``name``, ``columns``, ``oracle`` and optional ``plots``,
decorated with ``@register_statistic``, and imported below.
"""

# Importing a statistic's module registers it; the order here is the order of the columns of
# layer_stats() (shared/API.md §2) and of the report's plots.
# isort: off
from diagnose.monitor.statistics import grad_norm, weight_norm, update_ratio  # noqa: F401 - registers them
from diagnose.monitor.statistics import moments, zeros, dead_units, saturation, effective_lr  # noqa: F401 - same
# isort: on
from diagnose.monitor.statistics.base import (
    STATISTICS,
    Observation,
    OutputStatistic,
    ParameterStatistic,
    Plot,
    Statistic,
    StepContext,
    register_statistic,
)
from diagnose.monitor.statistics.dead_units import DeadUnits
from diagnose.monitor.statistics.effective_lr import EffectiveLR
from diagnose.monitor.statistics.grad_norm import GradNorm
from diagnose.monitor.statistics.moments import ActivationMoments
from diagnose.monitor.statistics.saturation import Saturation
from diagnose.monitor.statistics.update_ratio import UpdateRatio
from diagnose.monitor.statistics.weight_norm import WeightNorm
from diagnose.monitor.statistics.zeros import ZeroFraction


def list_statistics() -> list[str]:
    """The registered statistics (``dg.list_statistics()``)."""
    return STATISTICS.names()


def default_output_statistics() -> list[OutputStatistic]:
    """Fresh instances of the registered output statistics the watch records by default."""
    return [cls() for cls in STATISTICS.values() if issubclass(cls, OutputStatistic) and cls.default]


def default_parameter_statistics() -> list[ParameterStatistic]:
    """Fresh instances of the registered parameter statistics the watch records by default."""
    return [cls() for cls in STATISTICS.values() if issubclass(cls, ParameterStatistic) and cls.default]


def statistic_columns() -> list[str]:
    """Every registered statistic's columns, in registration order."""
    return [column for cls in STATISTICS.values() for column in cls.columns]


def statistic_plots() -> list[Plot]:
    """The report's per-layer heatmaps, in the order of the registry."""
    return [plot for cls in STATISTICS.values() for plot in cls.plots]


__all__ = [
    "STATISTICS", "ActivationMoments", "DeadUnits", "EffectiveLR", "GradNorm", "Observation", "OutputStatistic",
    "ParameterStatistic", "Plot", "Saturation", "Statistic", "StepContext", "UpdateRatio", "WeightNorm",
    "ZeroFraction", "default_output_statistics", "default_parameter_statistics", "list_statistics",
    "register_statistic", "statistic_columns", "statistic_plots",
]
