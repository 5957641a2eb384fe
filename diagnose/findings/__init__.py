"""Findings: turn a recorded run into diagnoses with evidence and remedies.

Each rule is one small module registered with ``@rule``; ``findings(run)`` runs them all.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from diagnose.findings import (  # noqa: F401 - importing registers the rules
    dead_units,
    divergence,
    exploding_gradient,
    loss_plateau,
    nonfinite,
    overfitting,
    saturation,
    stalled_learning_rate,
    vanishing_gradient,
)
from diagnose.findings.base import RULES, SEVERITY_ORDER, Finding, RuleOutcome, RunData, Skip

if TYPE_CHECKING:
    from diagnose.monitor.run import Run

log = logging.getLogger(__name__)

__all__ = ["RULES", "Finding", "RuleOutcome", "RunData", "evaluate", "findings"]


def _run_data(run: Run | RunData | str | Path) -> RunData:
    from diagnose.monitor.run import Run, load_run
    if isinstance(run, RunData):
        return run
    return RunData.from_run(run if isinstance(run, Run) else load_run(run))


def evaluate(run: Run | RunData | str | Path) -> list[RuleOutcome]:
    """Run every rule; each outcome holds its findings, or why it was not evaluated (a run, its
    directory, or a ``RunData`` already read)."""
    data = _run_data(run)
    outcomes = []
    for name, fn in RULES.items():
        try:
            outcomes.append(RuleOutcome(name, fn(data)))
        except Skip as skip:
            outcomes.append(RuleOutcome(name, skipped=str(skip)))
    return outcomes


def findings(run: Run | str | Path) -> list[Finding]:
    """The run's findings, most severe first (a run object or a run directory)."""
    found = [f for outcome in evaluate(run) for f in outcome.findings]
    return sorted(found, key=lambda f: (SEVERITY_ORDER[f.severity], f.steps[0] if f.steps else 0))
