"""Statistics the watch records: one module each, built on the templates in ``base``."""

from diagnose.monitor.statistics.base import OutputStatistic, ParameterStatistic, StepContext
from diagnose.monitor.statistics.dead_units import DeadUnits
from diagnose.monitor.statistics.effective_lr import EffectiveLR
from diagnose.monitor.statistics.grad_norm import GradNorm
from diagnose.monitor.statistics.moments import ActivationMoments
from diagnose.monitor.statistics.saturation import Saturation
from diagnose.monitor.statistics.update_ratio import UpdateRatio
from diagnose.monitor.statistics.weight_norm import WeightNorm
from diagnose.monitor.statistics.zeros import ZeroFraction


def default_output_statistics() -> list[OutputStatistic]:
    """Fresh instances of the built-in output statistics."""
    return [ActivationMoments(), ZeroFraction(), DeadUnits(), Saturation()]


def default_parameter_statistics() -> list[ParameterStatistic]:
    """Fresh instances of the built-in parameter statistics."""
    return [GradNorm(), WeightNorm(), UpdateRatio(), EffectiveLR()]


__all__ = [
    "ActivationMoments", "DeadUnits", "EffectiveLR", "GradNorm",
    "OutputStatistic", "ParameterStatistic", "Saturation", "StepContext", "UpdateRatio", "WeightNorm",
    "ZeroFraction", "default_output_statistics", "default_parameter_statistics",
]
