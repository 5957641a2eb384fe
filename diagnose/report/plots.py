"""Plots for the report: each a function from plain data to a matplotlib Figure, and the one helper
that embeds a figure as a base64 PNG data URI (the report must work offline)."""

from __future__ import annotations

import base64
import io

import numpy as np
import pandas as pd
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure

# Plots never show more than this many points along the step axis: a long run is binned (mean per
# bin), and the report says so.
MAX_POINTS = 400


# The smallest text in any plot, in points (at 90 dpi, 8 pt is 10 px at the image's natural size).
MIN_FONT_PT = 8.0


def min_font_px(fig: Figure, dpi: int) -> float:
    """The smallest visible text of a figure in pixels at its natural size (stored in the PNG's
    metadata; the browser test scales it by the displayed width)."""
    from matplotlib.text import Text
    sizes = [t.get_fontsize() for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]
    return float(min(sizes)) * dpi / 72 if sizes else float("inf")


def data_uri(fig: Figure, dpi: int = 90, palette: bool = False) -> str:
    """The figure as an inline ``data:image/png;base64,...`` URI (its smallest text size in the
    PNG's metadata as ``min-font-px``). ``palette``: stored with 256 colours (a heatmap's colour map
    has 256 levels anyway), which halves a dense heatmap's size.

    The figure is drawn once: the text sizes are read from that draw and the pixels encoded by
    PIL (``savefig`` after a measuring draw drew every figure twice, a third of a deep model's
    report time)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from PIL import Image, PngImagePlugin
    fig.set_dpi(dpi)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()  # lays out and renders; tick labels exist from here on
    info = PngImagePlugin.PngInfo()
    info.add_text("min-font-px", f"{min_font_px(fig, dpi):.2f}")
    image = Image.frombuffer("RGBA", canvas.get_width_height(), canvas.buffer_rgba(), "raw", "RGBA", 0, 1)
    image = image.convert("RGB")
    if palette:
        image = image.quantize(256, method=Image.Quantize.FASTOCTREE)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=palette, pnginfo=info)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def downsample(frame: pd.DataFrame, max_points: int = MAX_POINTS) -> tuple[pd.DataFrame, int]:
    """Mean over equal bins of rows (indexed by step) when there are more than ``max_points``;
    returns the frame and the bin width (1 when nothing was binned)."""
    if len(frame) <= max_points:
        return frame, 1
    width = int(np.ceil(len(frame) / max_points))
    groups = np.arange(len(frame)) // width
    binned = frame.groupby(groups).mean()
    binned.index = frame.index.to_numpy()[::width][: len(binned)]
    return binned, width




def heatmap(table: pd.DataFrame, title: str, log: bool, binned_by: int = 1, fraction: bool = False) -> Figure:
    """A layer x step heatmap of one statistic (log colour scale for norms and ratios; a fraction
    on its whole range [0, 1], so all-zero data reads as 0, not as a band around it);
    ``binned_by``: recorded steps per column when the table was binned already (by the store).
    The title is the page's heading, not repeated in the image."""
    binned, width = downsample(table)
    width = max(width, binned_by)
    values = binned.T.to_numpy(dtype=float)
    row = 0.35 if len(binned.columns) <= 40 else 0.2  # many layers: rows still fit their 8 pt labels
    fig = Figure(figsize=(8.5, row * len(binned.columns) + 1.3), layout="constrained")
    ax = fig.subplots()
    finite = values[np.isfinite(values)]
    positive = finite[finite > 0]
    norm: Normalize
    if log and len(positive):
        norm = LogNorm(vmin=max(positive.min(), positive.max() * 1e-12), vmax=positive.max())
        values = np.where(values > 0, values, np.nan)
    elif fraction:
        norm = Normalize(vmin=0.0, vmax=1.0)
    else:
        low = float(finite.min()) if len(finite) else 0.0
        high = float(finite.max()) if len(finite) else 1.0
        norm = Normalize(vmin=low, vmax=high if high > low else low + max(abs(low), 1.0))
    steps = binned.index.to_numpy()
    image = ax.imshow(values, aspect="auto", interpolation="nearest", norm=norm, cmap="viridis",
                      extent=(steps[0] - 0.5, steps[-1] + 0.5, len(binned.columns) - 0.5, -0.5))
    ax.set_yticks(range(len(binned.columns)), labels=[str(c) for c in binned.columns], fontsize=8)
    ax.set_xlabel("step" + (f" (mean over bins of {width} recorded steps)" if width > 1 else ""))
    bar = fig.colorbar(image, ax=ax, fraction=0.025)
    bar.set_label(title, fontsize=8)
    return fig


# Karpathy's rule of thumb for the update / weight ratio: around 1e-3 per step; a decade either
# side is the band drawn as healthy.
HEALTHY_UPDATE_RATIO = (1e-4, 1e-2)


def _power_label(exponent: int) -> str:
    """2**exponent in short scientific notation ("1e-3"), "inf" for the infinite bin."""
    if exponent >= 128:
        return "inf"
    mantissa, power = f"{2.0 ** exponent:.0e}".split("e")
    return f"{mantissa}e{int(power)}"


def octave_rows(frame: pd.DataFrame) -> tuple[list[str], np.ndarray]:
    """A ``Run.histograms`` frame merged to one row per power of two and sign, ascending (the
    negative octaves, zero, the positive ones; within a sign every octave between the smallest and
    the largest used, so the axis has no holes): (row labels, rows x steps fractions of each step's
    values, NaN where a step had none)."""
    edges, counts = frame.attrs["edges"], frame.to_numpy(dtype=float)
    lo, hi = edges[:-1], edges[1:]
    used = counts.sum(axis=0) > 0
    zero = (lo < 0) & (hi > 0)
    negative = hi <= 0
    magnitude = np.where(negative, -hi, lo)
    with np.errstate(divide="ignore"):
        octave = np.floor(np.log2(np.where(magnitude > 0, magnitude, 1.0))).astype(int)
    sides: dict[int, list[tuple[int, int]]] = {}  # (sign, octave) per sign, ascending by value
    for sign, mask in ((-1, used & negative), (1, used & ~negative & ~zero)):
        if mask.any():
            span = range(octave[mask].min(), octave[mask].max() + 1)
            sides[sign] = [(sign, e) for e in (reversed(span) if sign < 0 else span)]
    # the zero row: where zeros were counted, or as the divide between the two signs
    middle = [(0, 0)] if (used & zero).any() or len(sides) == 2 else []
    keys = sides.get(-1, []) + middle + sides.get(1, [])
    row_of = {key: i for i, key in enumerate(keys)}
    table = np.zeros((len(keys), counts.shape[0]))
    for j in np.flatnonzero(used):
        key = (0, 0) if zero[j] else (-1 if negative[j] else 1, int(octave[j]))
        table[row_of[key]] += counts[:, j]
    totals = counts.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        table = table / np.where(totals > 0, totals, np.nan)
    labels = ["0" if sign == 0 else ("-" if sign < 0 else "") + _power_label(e) for sign, e in keys]
    return labels, table


def histogram_panels(frames: list[tuple[str, pd.DataFrame]], statistic: str) -> Figure:
    """Small multiples, one per layer: its histograms over time as a step x (sign, power of two)
    heatmap, coloured by the fraction of the layer's values (log scale, 1e-6 .. 1)."""
    cols = min(3, len(frames))
    rows = int(np.ceil(len(frames) / cols))
    height = 2.5 * rows + 0.6
    # a fixed grid: constrained layout measured every tick label a dozen times per draw (a 223-layer
    # report spent 3 s of its 10 s budget there)
    fig = Figure(figsize=(8.5, height))
    fig.subplots_adjust(left=0.08, right=0.86, bottom=0.5 / height, top=1 - 0.3 / height, wspace=0.42,
                        hspace=0.35)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    norm = LogNorm(vmin=1e-6, vmax=1.0)
    image = None
    for ax, (layer, frame) in zip(axes, frames):
        labels, table = octave_rows(frame)
        steps = frame.index.to_numpy(dtype=float)
        if len(steps) > MAX_POINTS:  # sum counts over equal bins of steps (fractions: mean)
            width = int(np.ceil(len(steps) / MAX_POINTS))
            groups = np.arange(len(steps)) // width
            table = np.stack([np.nanmean(table[:, groups == g], axis=1) for g in np.unique(groups)], axis=1)
            steps = steps[::width][: table.shape[1]]
        # column edges halfway between recorded steps, so uneven spacing shows as it is
        mids = (steps[1:] + steps[:-1]) / 2 if len(steps) > 1 else np.array([])
        first = steps[0] - (mids[0] - steps[0] if len(mids) else 0.5)
        last = steps[-1] + (steps[-1] - mids[-1] if len(mids) else 0.5)
        x = np.concatenate([[first], mids, [last]])
        values = np.where(table > 0, table, np.nan)
        image = ax.pcolormesh(x, np.arange(len(labels) + 1) - 0.5, values, norm=norm, cmap="viridis",
                              shading="flat")
        every = max(1, int(np.ceil(len(labels) / 8)))
        origin = labels.index("0") if "0" in labels else 0  # ticks counted from the zero row: none crowds it
        ticks = [t for t in range(origin % every, len(labels), every)]
        ax.set_yticks(ticks, labels=[labels[t] for t in ticks], fontsize=8)
        ax.set_ylim(-0.5, len(labels) - 0.5)
        ax.set_title(layer if len(layer) <= 34 else "..." + layer[-31:], fontsize=8)
        ax.tick_params(axis="x", labelsize=8)
        ax.set_facecolor("#f4f4f4")
    for ax in axes[len(frames):]:
        ax.axis("off")
    fig.supxlabel("step", fontsize=8, y=0.1 / height)
    if image is not None:
        bar = fig.colorbar(image, cax=fig.add_axes((0.89, 0.2, 0.015, 0.6)))
        bar.set_label(f"fraction of the {statistic}", fontsize=8)
        bar.ax.tick_params(labelsize=8)
    return fig


def importance_bars(frame: pd.DataFrame, methods: list[str], top: int = 15) -> Figure:
    """Global importance (mean |attribution|, normalized per method) side by side."""
    head = frame.head(top).iloc[::-1]
    fig = Figure(figsize=(7.5, 0.3 * len(head) + 1.2), layout="constrained")
    ax = fig.subplots()
    height = 0.8 / len(methods)
    for i, method in enumerate(methods):
        scale = frame[method].max() or 1.0
        ax.barh(np.arange(len(head)) + i * height, head[method] / scale, height=height, label=method)
    ax.set_yticks(np.arange(len(head)) + 0.4 - height / 2, labels=[str(f) for f in head["feature"]], fontsize=8)
    ax.set_xlabel("mean |attribution| (relative to each method's largest)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="x")
    return fig


def beeswarm(values: np.ndarray, data: np.ndarray, names: list[str], top: int = 12) -> Figure:
    """A SHAP-style summary: one dot per row and feature, x = attribution, colour = feature value."""
    order = np.argsort(-np.abs(values).mean(axis=0))[:top][::-1]
    fig = Figure(figsize=(7.5, 0.32 * len(order) + 1.2), layout="constrained")
    ax = fig.subplots()
    rng = np.random.default_rng(0)
    for row, j in enumerate(order):
        col = data[:, j]
        span = np.ptp(col) or 1.0
        colours = (col - col.min()) / span
        jitter = rng.uniform(-0.3, 0.3, len(col))
        points = ax.scatter(values[:, j], row + jitter, c=colours, cmap="coolwarm", s=6, vmin=0, vmax=1)
    ax.axvline(0, color="0.5", linewidth=0.8)
    ax.set_yticks(range(len(order)), labels=[str(names[j]) for j in order], fontsize=8)
    ax.set_xlabel("attribution (impact on the explained output)")
    fig.colorbar(points, ax=ax, fraction=0.03, label="feature value (low -> high)")
    return fig


def contributions(frame: pd.DataFrame, top: int = 10) -> Figure:
    """One prediction's largest contributions, signed."""
    head = frame.head(top).iloc[::-1]
    fig = Figure(figsize=(6.0, 0.3 * len(head) + 1.0), layout="constrained")
    ax = fig.subplots()
    ax.barh(range(len(head)), head["attribution"], color=["C3" if v > 0 else "C0" for v in head["attribution"]])
    labels = [f"{f} = {v:.3g}" for f, v in zip(head["feature"], head["value"])]
    ax.set_yticks(range(len(head)), labels=labels, fontsize=8)
    ax.axvline(0, color="0.5", linewidth=0.8)
    ax.set_xlabel("contribution")
    return fig


def image_maps(images: np.ndarray, maps: np.ndarray, titles: list[str]) -> Figure:
    """Input images with their attribution maps (summed over channels) below them."""
    n = len(images)
    fig = Figure(figsize=(1.6 * n, 3.4), layout="constrained")
    axes = fig.subplots(2, n, squeeze=False)
    for i in range(n):
        axes[0, i].imshow(images[i].mean(axis=0), cmap="gray")
        attribution = maps[i].sum(axis=0)
        bound = np.abs(attribution).max() or 1.0
        axes[1, i].imshow(attribution, cmap="bwr", vmin=-bound, vmax=bound)
        axes[0, i].set_title(titles[i], fontsize=8)
        for ax in axes[:, i]:
            ax.axis("off")
    return fig


def sparkline(values: list[float], width: int = 90, height: int = 18) -> str:
    """An inline SVG polyline of a short series (log-free; NaNs skipped); '' if fewer than 2 points."""
    points = [(i, v) for i, v in enumerate(values) if v is not None and np.isfinite(v)]
    if len(points) < 2:
        return ""
    xs, ys = np.array([p[0] for p in points], float), np.array([p[1] for p in points], float)
    xs = (xs - xs.min()) / max(np.ptp(xs), 1e-12) * (width - 2) + 1
    ys = height - 1 - (ys - ys.min()) / max(np.ptp(ys), 1e-12) * (height - 2)
    path = " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs, ys))
    return (f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img">'
            f'<polyline fill="none" stroke="#2b6cb0" stroke-width="1.2" points="{path}"/></svg>')




def importances(values: dict[str, float]) -> Figure:
    """Parameter importances (Optuna's fANOVA)."""
    names = list(values)[::-1]
    fig = Figure(figsize=(5.0, 0.35 * len(names) + 1.0), layout="constrained")
    ax = fig.subplots()
    ax.barh(names, [values[n] for n in names], color="C2")
    ax.set_xlabel("importance")
    return fig


