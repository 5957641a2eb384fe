"""What a watch keeps between flushes: typed records of device values, turned into the store's
rows at a flush with one host copy per device.

Each record knows its own layout: ``tensor`` is what must come from the device, ``unpack`` turns
those numbers (now on the host) into rows. A flush is one ``torch.cat`` + ``.cpu()`` per device
for every record since the last flush; the training thread never waits for the disk (the store's
thread writes).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from diagnose.monitor.nonfinite import NonFiniteTracker
from diagnose.monitor.statistics import OutputStatistic, histogram


@dataclass
class Rows:
    """Rows headed for the store: per (step, layer) statistics, scalars, and any first NaN/Inf."""

    layers: dict[tuple[int, str], dict[str, float]] = field(default_factory=dict)
    scalars: list[tuple[int, str, float]] = field(default_factory=list)
    first_nonfinite: list[dict[str, Any]] = field(default_factory=list)
    # (step, layer, kind, first bin, the counts from it, compressed): statistics/histogram.py
    histograms: list[tuple[int, str, str, int, bytes]] = field(default_factory=list)

    def put(self, step: int, layer: str, column: str, value: float) -> None:
        """Set one value; two sources of one column (NaN/Inf counts of outputs and gradients) add up."""
        row = self.layers.setdefault((step, layer), {})
        if column in row and not math.isnan(row[column]):
            row[column] = row[column] + (0.0 if math.isnan(value) else value)
        else:
            row[column] = value

    def put_all(self, step: int, layer: str, columns: Sequence[str], values: Sequence[float]) -> None:
        """Set several values of one row (``put`` for each, in one dictionary update when none
        of them is there yet, the usual case)."""
        row = self.layers.setdefault((step, layer), {})
        if row.keys().isdisjoint(columns):
            row.update(zip(columns, values))
        else:
            for column, value in zip(columns, values):
                self.put(step, layer, column, value)


class Record:
    """Values of one step still on the device, and how they become rows."""

    step: int

    @property
    def tensor(self) -> torch.Tensor:
        """The device values to copy to the host (any shape)."""
        raise NotImplementedError

    def unpack(self, values: np.ndarray, rows: Rows) -> None:
        """Turn the host copy of ``tensor`` into rows."""
        raise NotImplementedError


@dataclass
class ScalarRecord(Record):
    """A logged scalar that is a tensor (``run.log(loss=loss)``)."""

    step: int
    name: str
    value: torch.Tensor

    @property
    def tensor(self) -> torch.Tensor:
        return self.value

    def unpack(self, values: np.ndarray, rows: Rows) -> None:
        rows.scalars.append((self.step, self.name, float(values)))


@dataclass
class ParameterRecord(Record):
    """A parameter statistic of every layer: a (columns, layers) tensor."""

    step: int
    columns: tuple[str, ...]
    layers: Sequence[str]
    missing: frozenset[int]  # layers without a gradient this step: nothing to record
    values: torch.Tensor

    @property
    def tensor(self) -> torch.Tensor:
        return self.values

    def unpack(self, values: np.ndarray, rows: Rows) -> None:
        table = values.reshape(len(self.columns), -1).T.tolist()  # Python floats, a row per layer
        for j, layer in enumerate(self.layers):
            if j not in self.missing:
                rows.put_all(self.step, layer, self.columns, table[j])


@dataclass
class OutputRecord(Record):
    """Every observed module's output statistics of one sampled step: ``values`` holds, at the
    positions ``device_at``, the numbers computed on the device (NaN where the number was known on
    the host); ``template`` holds every number known on the host, NaN elsewhere."""

    step: int
    layout: list[tuple[str, int, OutputStatistic]]  # (module, elements seen, statistic), in order
    template: np.ndarray
    device_at: np.ndarray
    values: torch.Tensor

    @property
    def tensor(self) -> torch.Tensor:
        return self.values

    def unpack(self, values: np.ndarray, rows: Rows) -> None:
        filled = self.template.copy()
        values = values.reshape(-1)
        filled[self.device_at] = np.where(np.isnan(values), filled[self.device_at], values)
        missing = np.isnan(filled).tolist()
        offset = 0
        with np.errstate(all="ignore"):  # exploded activations overflow here: NaN/Inf is the answer
            for layer, count, stat in self.layout:
                start, offset = offset, offset + stat.width
                if count == 0 or all(missing[start:offset]):
                    continue
                rows.put_all(self.step, layer, stat.columns, stat.finalize(filled[start:offset], count))


@dataclass
class HistogramRecord(Record):
    """One kind of histogram ("act", "grad", "weight") of one sampled step: (layers, N_CODES) code
    counts on the device, folded onto the canonical bins and trimmed on the host."""

    step: int
    kind: str
    layers: Sequence[str]
    counts: torch.Tensor

    @property
    def tensor(self) -> torch.Tensor:
        return self.counts

    def unpack(self, values: np.ndarray, rows: Rows) -> None:
        # compressed now: a signed layer's trimmed counts still span ~1000 mostly empty bins (8 KB)
        table = histogram.canonical(values.reshape(len(self.layers), histogram.N_CODES))
        for layer, counts in zip(self.layers, table):
            first, trimmed = histogram.trim(counts)
            if len(trimmed):
                rows.histograms.append((self.step, layer, self.kind, first, histogram.encode(trimmed)))


@dataclass
class CheckRecord(Record):
    """One step's NaN/Inf origin checks: a sum per checked output, in forward order."""

    step: int
    names: tuple[str, ...]
    sums: torch.Tensor
    tracker: NonFiniteTracker

    @property
    def tensor(self) -> torch.Tensor:
        return self.sums

    def unpack(self, values: np.ndarray, rows: Rows) -> None:
        first = self.tracker.resolve_forward(self.step, self.names, values)
        if first is not None:
            rows.first_nonfinite.append(first)


class Buffer:
    """Records and host values waiting for the next flush."""

    def __init__(self) -> None:
        self._records: list[Record] = []
        self._scalars: list[tuple[int, str, float]] = []
        self._counts: list[tuple[int, str, float]] = []
        self.histogram_bytes = 0  # held by histogram records until the flush
        self._host = Rows()        # histograms of CPU tensors, already compressed

    def add(self, record: Record) -> None:
        if isinstance(record, HistogramRecord):
            if record.counts.device.type == "cpu":
                # on the CPU there is no copy to wait for: folded and compressed now, they keep a few
                # hundred bytes per layer instead of 16 KB until the flush
                record.unpack(record.counts.numpy(), self._host)
                return
            self.histogram_bytes += record.counts.numel() * record.counts.element_size()
        self._records.append(record)

    def log(self, step: int, values: dict[str, Any]) -> None:
        """Logged scalars: tensors stay on their device until the flush, numbers (bools too: True
        is 1.0) are kept as floats. A value of another kind is a TypeError naming it."""
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                if value.numel() != 1:
                    raise TypeError(f"{name}: expected a scalar, got a tensor of shape {tuple(value.shape)}")
                if value.requires_grad:
                    value = value.detach()
                self.add(ScalarRecord(step, name, value if value.ndim == 0 else value.reshape(())))
            elif isinstance(value, (int, float, np.number)):
                self._scalars.append((step, name, float(value)))
            else:
                raise TypeError(f"{name}: expected a number or a one-element tensor, got {type(value).__name__}")

    def add_count(self, step: int, layer: str, count: float) -> None:
        """An exact NaN/Inf count, already on the host."""
        self._counts.append((step, layer, count))

    def drain(self) -> Rows:
        """Everything buffered, as rows; copies the device values to the host once per device."""
        records, self._records = self._records, []
        self.histogram_bytes = 0
        rows = Rows(scalars=self._scalars, histograms=self._host.histograms)
        self._host = Rows()
        self._scalars = []
        # histogram counts apart: int64 straight to the host (no float64 copy of the largest part)
        counts = [r for r in records if isinstance(r, HistogramRecord)]
        others = [r for r in records if not isinstance(r, HistogramRecord)]
        for record, values in zip(others, to_host([r.tensor for r in others])):  # note: the host sync
            record.unpack(values, rows)
        for record, values in zip(counts, to_host([r.tensor for r in counts], widen=False)):
            record.unpack(values, rows)
        for step, layer, count in self._counts:
            rows.put(step, layer, "nonfinite", count)
        self._counts = []
        return rows


def to_host(tensors: Sequence[torch.Tensor], widen: bool = True) -> list[np.ndarray]:
    """Copy tensors to NumPy (float64; ``widen=False``: their own dtype) with one transfer per device
    and dtype (a float32 cat of int64 values would round them, so each dtype is concatenated apart,
    then widened once)."""
    groups: dict[tuple[torch.device, torch.dtype], list[int]] = {}
    for i, t in enumerate(tensors):
        groups.setdefault((t.device, t.dtype), []).append(i)
    out: list[np.ndarray] = [np.empty(0)] * len(tensors)
    for indices in groups.values():
        # widened on the host: no float64 copy on the device
        host = torch.cat([tensors[i].reshape(-1) for i in indices]).cpu()  # host sync
        flat = (host.double() if widen else host).numpy()
        offset = 0
        for i in indices:
            n = tensors[i].numel()
            out[i] = flat[offset:offset + n].reshape(tensors[i].shape)
            offset += n
    return out
