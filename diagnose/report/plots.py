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
    has 256 levels anyway), which halves a dense heatmap's size."""
    buffer = io.BytesIO()
    fig.draw_without_rendering()  # lays out the texts (tick labels exist only after a draw)
    font = f"{min_font_px(fig, dpi):.2f}"
    fig.savefig(buffer, format="png", dpi=dpi, metadata={"min-font-px": font})
    if palette:
        from PIL import Image, PngImagePlugin
        image = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
        image = image.quantize(256, method=Image.Quantize.FASTOCTREE)
        info = PngImagePlugin.PngInfo()
        info.add_text("min-font-px", font)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", optimize=True, pnginfo=info)
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


