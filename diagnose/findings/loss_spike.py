"""loss_spike: the training loss jumps far above its recent level for a few steps, then recovers.

Common in transformer training: PaLM (Chowdhery et al., 2022) restarted from checkpoints around
such spikes; Wortsman et al. (2023) tie them to growing attention logits and to Adam's second
moment lagging a sudden gradient. A spike is a step whose loss exceeds its recent level (the
median of the BASELINE steps before it, short so a falling loss is not lagged) by SPIKE_SIGMAS of
its own step-to-step noise (a robust standard deviation of the last WINDOW differences: differences
ignore the trend, and small batches are noisy) and by SPIKE_FACTOR relatively; it recovered when
the loss is back within RECOVERED_SIGMAS within WINDOW steps (a rise that stays is divergence,
judged elsewhere). A spike is the model's, not one batch's: the step after it is still above
RECOVERED_SIGMAS (a single hard or mislabeled batch lifts one step's loss and leaves the next one
normal). The layers named are
those whose update ratio jumped (>= JUMP x their usual) at the steps around it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from diagnose.findings.base import Finding, RunData, fmt, rule

WINDOW = 20
BASELINE = 5
SPIKE_SIGMAS = 6.0
SPIKE_FACTOR = 1.1
RECOVERED_SIGMAS = 3.0
JUMP = 3.0
MIN_POINTS = 2 * WINDOW
# steps before and after a spike whose updates may have caused it or come from it
AROUND = 2

REMEDY = ("Lower the peak learning rate or lengthen its warm-up, clip gradients (grad_clip=1.0), raise "
          "Adam's epsilon or lower beta2 (0.95), and check the batches at those steps for corrupt data.")


@rule("loss_spike")
def loss_spike(run: RunData) -> list[Finding]:
    loss = run.finite_loss(MIN_POINTS)
    if len(loss) < MIN_POINTS:
        return []  # the loss went non-finite: the nonfinite finding says where
    values = loss.to_numpy(dtype=float)
    series = pd.Series(values)
    baseline = series.rolling(BASELINE).median().shift(1)
    # the noise of one step: differences of consecutive losses have twice its variance
    step_noise = 1.4826 * series.diff().abs().rolling(WINDOW).median().shift(1) / np.sqrt(2)
    spread = np.maximum(step_noise.to_numpy(), 1e-3 * np.abs(baseline.to_numpy()))  # a perfectly flat loss
    base = baseline.to_numpy()
    spiking = (values > base + SPIKE_SIGMAS * spread) & (values > SPIKE_FACTOR * base)
    events = []
    position = 0
    while position < len(values):
        if not spiking[position]:
            position += 1
            continue
        end = position
        while end + 1 < len(values) and spiking[end + 1]:
            end += 1
        after = values[end + 1:end + 1 + WINDOW]
        high = base[position] + RECOVERED_SIGMAS * spread[position]
        lasted = end > position or (position + 1 < len(values) and values[position + 1] > high)
        if lasted and len(after) and (after < high).any():
            events.append((position, end))
        position = end + 1
    if not events:
        return []
    steps = loss.index.to_numpy()
    spikes = [Spike(int(steps[start]), int(steps[end]), float(values[start:end + 1].max()), float(base[start]),
                    float(spread[start]), _jumped(run, int(steps[start]))) for start, end in events]
    first = spikes[0]
    top = next(iter(first.layers), None)
    where = (f"; the update ratio of {top} jumped {fmt(first.layers[top])}x its usual there" if top is not None
             else "; no update ratio was recorded at those steps (record with a smaller every=)")
    return [Finding(
        kind="loss_spike", severity="warning", layer=top, steps=(first.step, spikes[-1].last_step),
        evidence={"spikes": [asdict(s) for s in spikes], "spike_sigmas": SPIKE_SIGMAS, "window": WINDOW},
        message=(f"The training loss spiked {len(spikes)} time(s) and recovered: at step {first.step} it reached "
                 f"{fmt(first.loss)}, {fmt(first.loss / first.baseline)}x its recent median {fmt(first.baseline)} "
                 f"({fmt((first.loss - first.baseline) / first.noise)} times its noise){where}."),
        remedy=REMEDY)]


@dataclass(frozen=True)
class Spike:
    step: int                  # the first step above the threshold
    last_step: int
    loss: float                # the highest loss of the spike
    baseline: float            # the median of the WINDOW steps before it
    noise: float               # their robust standard deviation
    layers: dict[str, float]   # layer -> how many times its usual update ratio it took there


def _jumped(run: RunData, step: int) -> dict[str, float]:
    """Layers whose update ratio around ``step`` is >= JUMP x their median, largest jump first."""
    updates = run.pivot("update_ratio")
    if updates.empty:
        return {}
    near = run.table_at("update_ratio", list(range(step - AROUND, step + AROUND + 1)))
    if near.empty:
        return {}
    usual = updates.median()
    jumps = (near.max() / usual.reindex(near.columns)).replace([np.inf, -np.inf], np.nan).dropna()
    jumps = jumps[jumps >= JUMP].sort_values(ascending=False)
    return {str(layer): float(v) for layer, v in jumps.items()}
