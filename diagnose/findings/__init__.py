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
    from diagnose.monitor.store import Run

log = logging.getLogger(__name__)

__all__ = ["RULES", "Finding", "RuleOutcome", "evaluate", "findings"]


def _run_data(run: Run | str | Path) -> RunData:
    from diagnose.monitor.store import Run, load_run
    if not isinstance(run, Run):
        run = load_run(run)
    scalars = run.scalars()
    loss = None
    for name in ("loss", "train_loss"):
        if name in scalars:
            loss = run.scalar(name)
            break
    return RunData(run.layer_stats(), scalars, run.meta, loss)


def evaluate(run: Run | str | Path) -> list[RuleOutcome]:
    """Run every rule; each outcome holds its findings, or why it was not evaluated."""
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
