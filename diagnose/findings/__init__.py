"""Findings: turn a recorded run into diagnoses with evidence and remedies.

Each rule is one small module registered with ``@rule``; ``evaluate(run)`` runs them all and is
the one place findings are ordered (most severe first, then by step).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from diagnose.findings import (  # noqa: F401 - importing a rule's module registers it
    dead_units,
    divergence,
    exploding_gradient,
    loss_plateau,
    loss_spike,
    no_steps,
    nonfinite,
    overfitting,
    saturation,
    stalled_learning_rate,
    vanishing_gradient,
)
from diagnose.findings.base import RULES, SEVERITY_ORDER, Finding, RuleOutcome, RunData, Skip

if TYPE_CHECKING:
    from diagnose.monitor.run import Run

__all__ = ["RULES", "Evaluation", "Finding", "RuleOutcome", "RunData", "evaluate", "findings", "list_rules"]


@dataclass(frozen=True)
class Evaluation:
    """Every rule's outcome on one run."""

    outcomes: list[RuleOutcome]

    @cached_property
    def findings(self) -> list[Finding]:
        """Every finding, most severe first, then by first step."""
        found = [f for outcome in self.outcomes for f in outcome.findings]
        return sorted(found, key=lambda f: (SEVERITY_ORDER[f.severity], f.steps[0] if f.steps else 0))

    @property
    def skipped(self) -> list[tuple[str, str]]:
        """(rule, why it was not evaluated) for the rules that lacked data."""
        return [(o.name, o.skipped) for o in self.outcomes if o.skipped]

    @property
    def verdict(self) -> str:
        """``failing`` (a critical finding), ``needs attention`` (a warning) or ``healthy``."""
        severities = {f.severity for f in self.findings}
        return "failing" if "critical" in severities else "needs attention" if "warning" in severities else "healthy"


def list_rules() -> list[str]:
    """The registered finding rules."""
    return RULES.names()


def _run_data(run: Run | RunData | str | Path) -> RunData:
    from diagnose.monitor.run import Run, load_run
    if isinstance(run, RunData):
        return run
    return RunData.from_run(run if isinstance(run, Run) else load_run(run))


def evaluate(run: Run | RunData | str | Path) -> Evaluation:
    """Run every rule on a run, its directory, or a ``RunData`` already read; each outcome holds
    its findings, or why it was not evaluated."""
    data = _run_data(run)
    outcomes = []
    for name, fn in RULES.items():
        try:
            outcomes.append(RuleOutcome(name, fn(data)))
        except Skip as skip:
            outcomes.append(RuleOutcome(name, skipped=str(skip)))
    return Evaluation(outcomes)


def findings(run: Run | str | Path) -> list[Finding]:
    """The run's findings, most severe first (a run object or a run directory)."""
    return evaluate(run).findings
