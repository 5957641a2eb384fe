"""Line charts as inline SVG: crisp at any zoom, their text searchable, each point's value shown on
hover by an SVG ``<title>`` (no script). Dense heatmaps stay PNG (``plots``).

Every string is escaped here, so a chart is safe to insert into the page as it is.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from matplotlib.ticker import LogLocator, MaxNLocator

# matplotlib's tab10, so SVG lines and PNG plots share their colours
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf")
FONT_PX = 12          # tick labels and legend; titles are 13 px
MAX_HOVER_POINTS = 300  # points per series that carry a hover title (the line keeps every point)
# A chart with many series carries fewer hover points per series (the page stays small).
MAX_HOVER_TOTAL = 1200
# The per-layer ratio chart draws at most this many layers (evenly spaced in forward order);
# every layer is in the heatmap above it.
MAX_LAYER_LINES = 12


@dataclass
class Series:
    """One line: its label, points, and style (``dashed``; ``points_only`` for a scatter)."""

    label: str
    x: Sequence[float]
    y: Sequence[float]
    dashed: bool = False
    points_only: bool = False
    step: bool = False  # drawn as a step function (a running best)
    colour: str | None = None


@dataclass
class Chart:
    """A chart: its series, axes, an optional shaded horizontal band and vertical markers."""

    series: list[Series]
    title: str = ""
    xlabel: str = ""
    ylabel: str = ""
    log_y: bool = False
    band: tuple[float, float] | None = None
    band_label: str = ""
    markers: list[tuple[float, str, str]] = field(default_factory=list)  # (x, label, colour)
    log_x: bool = False
    integer_x: bool = False
    width: int = 500
    height: int = 280


def _fmt(value: float) -> str:
    if not math.isfinite(value):
        return str(value)
    if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
        return f"{value:.3g}"
    return f"{value:.4g}"


def _ticks(lo: float, hi: float, log: bool, integer: bool = False) -> list[float]:
    if log:
        values = LogLocator(base=10).tick_values(10 ** lo, 10 ** hi)
        inside = [math.log10(v) for v in values if v > 0 and lo - 1e-9 <= math.log10(v) <= hi + 1e-9]
        return inside or [lo, hi]
    values = MaxNLocator(nbins=5, integer=integer).tick_values(lo, hi)
    return [float(v) for v in values if lo - 1e-9 * max(1.0, abs(hi - lo)) <= v <= hi + 1e-9 * max(1.0, abs(hi - lo))]


def _range(values: list[float]) -> tuple[float, float]:
    lo, hi = min(values), max(values)
    if hi <= lo:
        pad = abs(lo) * 0.05 or 1.0
        return lo - pad, hi + pad
    pad = (hi - lo) * 0.04
    return lo - pad, hi + pad


def render(chart: Chart) -> str:
    """The chart as an ``<svg>`` element string."""
    left, right, top, bottom = 64, 14, 28 if chart.title else 12, 44
    per_row = 3 if max((len(s.label) for s in chart.series), default=0) <= 16 else 2
    per_row = 1 if max((len(s.label) for s in chart.series), default=0) > 34 else per_row
    legend_rows = math.ceil(len(chart.series) / per_row) if len(chart.series) > 1 else 0
    height = chart.height + 18 * legend_rows
    plot_w, plot_h = chart.width - left - right, chart.height - top - bottom

    def fx(v: float) -> float:
        return math.log10(v) if chart.log_x else v

    def fy(v: float) -> float:
        return math.log10(v) if chart.log_y else v

    xs, ys = [], []
    for s in chart.series:
        for x, y in zip(s.x, s.y, strict=False):
            if x is None or y is None:
                continue
            x, y = float(x), float(y)
            if math.isfinite(x) and math.isfinite(y) and (not chart.log_y or y > 0) and (not chart.log_x or x > 0):
                xs.append(fx(x))
                ys.append(fy(y))
    if chart.band is not None:
        ys += [fy(chart.band[0]), fy(chart.band[1])] if chart.log_y else list(chart.band)
    xs += [fx(m[0]) for m in chart.markers if not chart.log_x or m[0] > 0]
    if not xs or not ys:
        return ""
    x0, x1 = _range(xs)
    y0, y1 = _range(ys)

    def px(v: float) -> float:
        return left + (v - x0) / (x1 - x0) * plot_w

    def py(v: float) -> float:
        return top + (1 - (v - y0) / (y1 - y0)) * plot_h

    e = html.escape
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{chart.width}" height="{height}" '
           f'viewBox="0 0 {chart.width} {height}" role="img" aria-label="{e(chart.title or chart.ylabel)}" '
           f'font-family="system-ui, sans-serif" font-size="{FONT_PX}">']
    if chart.title:
        out.append(f'<text x="{left + plot_w / 2:.1f}" y="16" text-anchor="middle" font-size="13" '
                   f'font-weight="600">{e(chart.title)}</text>')
    out.append(f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#fff" stroke="#a0aec0"/>')
    if chart.band is not None:
        b0, b1 = (fy(chart.band[0]), fy(chart.band[1]))
        out.append(f'<rect x="{left}" y="{py(b1):.1f}" width="{plot_w}" height="{py(b0) - py(b1):.1f}" '
                   f'fill="#2ca02c" fill-opacity="0.12"><title>{e(chart.band_label)}</title></rect>')
    for t in _ticks(y0, y1, chart.log_y):
        y = py(t)
        label = _fmt(10 ** t if chart.log_y else t)
        out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e2e8f0"/>'
                   f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{e(label)}</text>')
    for t in _ticks(x0, x1, chart.log_x, chart.integer_x):
        x = px(t)
        label = _fmt(10 ** t if chart.log_x else t)
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{top + plot_h}" stroke="#edf2f7"/>'
                   f'<text x="{x:.1f}" y="{top + plot_h + 16}" text-anchor="middle">{e(label)}</text>')
    if chart.xlabel:
        out.append(f'<text x="{left + plot_w / 2:.1f}" y="{top + plot_h + 34}" text-anchor="middle">'
                   f'{e(chart.xlabel)}</text>')
    if chart.ylabel:
        out.append(f'<text x="14" y="{top + plot_h / 2:.1f}" text-anchor="middle" '
                   f'transform="rotate(-90 14 {top + plot_h / 2:.1f})">{e(chart.ylabel)}</text>')
    for x, label, colour in chart.markers:
        if chart.log_x and x <= 0:
            continue
        X = px(fx(x))
        out.append(f'<line x1="{X:.1f}" x2="{X:.1f}" y1="{top}" y2="{top + plot_h}" stroke="{colour}" '
                   f'stroke-dasharray="5 3" stroke-width="1.5"><title>{e(label)}</title></line>')
    for i, s in enumerate(chart.series):
        colour = s.colour or COLOURS[i % len(COLOURS)]
        points = [(float(x), float(y)) for x, y in zip(s.x, s.y, strict=False)
                  if x is not None and y is not None and math.isfinite(float(x)) and math.isfinite(float(y))
                  and (not chart.log_y or float(y) > 0) and (not chart.log_x or float(x) > 0)]
        if not points:
            continue
        coords = [(px(fx(x)), py(fy(y))) for x, y in points]
        if not s.points_only:
            if s.step:
                path = [coords[0]]
                for (_, ya), (xb, yb) in zip(coords, coords[1:], strict=False):
                    path += [(xb, ya), (xb, yb)]
                coords_line = path
            else:
                coords_line = coords
            dash = ' stroke-dasharray="6 4"' if s.dashed else ""
            out.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.6"{dash} points="'
                       + " ".join(f"{x:.1f},{y:.1f}" for x, y in coords_line) + f'"><title>{e(s.label)}</title>'
                       "</polyline>")
        budget = max(20, min(MAX_HOVER_POINTS, MAX_HOVER_TOTAL // max(1, len(chart.series))))
        keep = (range(len(points)) if len(points) <= budget
                else np.unique(np.linspace(0, len(points) - 1, budget).round().astype(int)))
        radius, opacity = (3.5, 0.9) if s.points_only else (2.6, 0.0 if len(points) > 60 else 0.8)
        for j in keep:
            (x, y), (X, Y) = points[j], coords[j]
            out.append(f'<circle cx="{X:.1f}" cy="{Y:.1f}" r="{radius}" fill="{colour}" fill-opacity="{opacity}">'
                       f'<title>{e(s.label)}: {e(chart.xlabel or "x")} {e(_fmt(x))}, {e(_fmt(y))}</title></circle>')
    if legend_rows:
        for i, s in enumerate(chart.series):
            colour = s.colour or COLOURS[i % len(COLOURS)]
            lx = left + (i % per_row) * (plot_w / per_row)
            ly = chart.height + 4 + 18 * (i // per_row)
            dash = ' stroke-dasharray="6 4"' if s.dashed else ""
            out.append(f'<line x1="{lx:.1f}" x2="{lx + 18:.1f}" y1="{ly:.1f}" y2="{ly:.1f}" stroke="{colour}" '
                       f'stroke-width="2"{dash}/><text x="{lx + 24:.1f}" y="{ly + 4:.1f}">{e(s.label)}</text>')
    out.append("</svg>")
    return "".join(out)


# -- the report's line charts --------------------------------------------------------------------
def training_curves(epochs: pd.DataFrame, steps: pd.Series | None) -> list[str]:
    """Loss and accuracy per epoch (train dashed, validation solid), the learning rate when it was
    scheduled, and the per-step loss with its running median: one chart each."""
    from diagnose.report.plots import downsample
    charts = []
    panels = [p for p in ("loss", "accuracy") if any(c.endswith(p) for c in epochs.columns)] if len(epochs) else []
    for panel in panels:
        series = [Series(column.replace("_", " "), epochs["epoch"].tolist(), epochs[column].tolist(),
                         dashed=column.startswith("train"), colour=COLOURS[0 if column.startswith("train") else 1])
                  for column in (f"train_{panel}", f"val_{panel}") if column in epochs and epochs[column].notna().any()]
        charts.append(render(Chart(series, title=panel, xlabel="epoch", integer_x=True)))
    if len(epochs) and "lr" in epochs and epochs["lr"].nunique() > 1:
        charts.append(render(Chart([Series("learning rate", epochs["epoch"].tolist(), epochs["lr"].tolist(),
                                           colour=COLOURS[2])], title="learning rate", xlabel="epoch",
                                   integer_x=True)))
    if steps is not None and len(steps):
        values, width = downsample(steps.to_frame("loss"))
        finite = values["loss"].replace([np.inf, -np.inf], np.nan).dropna()
        window = max(3, len(values) // 25)
        smooth = values["loss"].rolling(window, min_periods=1, center=True).median()
        log = bool(len(finite) and (finite > 0).all() and finite.max() / finite.min() > 20)
        label = "loss" + (f" (mean of {width} steps)" if width > 1 else "")
        charts.append(render(Chart([Series(label, values.index.tolist(), values["loss"].tolist(), colour="#a0aec0"),
                                    Series("running median", values.index.tolist(), smooth.tolist(),
                                           colour=COLOURS[0])],
                                   title="training loss per step", xlabel="step", log_y=log)))
    return [c for c in charts if c]


def update_ratio(table: pd.DataFrame, band: tuple[float, float], binned_by: int = 1) -> str:
    """Each layer's update / weight ratio over the steps (log scale) against the healthy band."""
    from diagnose.report.plots import downsample
    binned, width = downsample(table)
    width = max(width, binned_by)
    layers = [layer for layer in binned.columns if (binned[layer] > 0).any()]
    if len(layers) > MAX_LAYER_LINES:
        layers = [layers[i] for i in np.unique(np.linspace(0, len(layers) - 1, MAX_LAYER_LINES).round().astype(int))]
    series = [Series(str(layer), binned.index.tolist(), binned[layer].tolist()) for layer in layers]
    return render(Chart(series, xlabel="step" + (f" (mean over bins of {width} recorded steps)" if width > 1 else ""),
                        ylabel="update / weight", log_y=True, band=band,
                        band_label=f"healthy band: {band[0]:g} to {band[1]:g}", width=760, height=300))


def lr_range(curve: dict) -> str:
    """The learning-rate range test: smoothed loss against the rate, suggested and configured rates."""
    markers = []
    if curve.get("suggested"):
        markers.append((float(curve["suggested"]), f"suggested {curve['suggested']:.2g}", COLOURS[2]))
    configured = curve.get("configured")
    if configured and math.isfinite(configured):
        markers.append((float(configured), f"yours {configured:.2g}", COLOURS[3]))
    return render(Chart([Series("smoothed loss", curve["rates"], curve["losses"])], xlabel="learning rate",
                        ylabel="loss", log_x=True, markers=markers))


def trial_history(trials: pd.DataFrame, direction: str) -> str:
    """Each trial's value and the best so far; pruned trials at the value they were pruned on."""
    done = trials[trials["state"] == "COMPLETE"]
    pruned = trials[trials["state"] == "PRUNED"]
    best = done["value"].cummax() if direction == "maximize" else done["value"].cummin()
    series = [Series("complete", done["number"].tolist(), done["value"].tolist(), points_only=True),
              Series("best so far", done["number"].tolist(), best.tolist(), step=True, colour=COLOURS[1])]
    if len(pruned) and "last_reported" in pruned:
        reported = pruned[pruned["last_reported"].notna()]
        if len(reported):
            series.append(Series("pruned (its last reported value)", reported["number"].tolist(),
                                 reported["last_reported"].tolist(), points_only=True, colour=COLOURS[3]))
    return render(Chart(series, title="trial history", xlabel="trial", ylabel="value", integer_x=True))
