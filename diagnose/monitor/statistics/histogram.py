"""Per-layer histograms of activations, gradients and weights: fixed bins, counted on the
tensor's device, stored compactly.

Bins: symmetric and log-spaced, from float32's own encoding. A float32 value's top 11 bits are its
sign, its 8-bit exponent and the two leading bits of its mantissa; shifted right by 21 they are a
bin code (0..2047): four bins per power of two (edges 2^e x 1, 1.25, 1.5, 1.75), the same relative
width from 1e-38 to 3e38, so vanishing gradients (1e-12) and exploded activations (1e12) land in
bins as fine as those of typical values. Counting is a shift, an add and a ``bincount`` (on CUDA
an ``index_add_``: its ``bincount`` reads its maximum back to the host): no host sync, no log, and
exact edges. The canonical bins (``EDGES``, 2041 of them, ascending): -inf, the negative magnitudes
from the largest down, **zero** (exact zeros; also float32 subnormals under 2^-128 = 2.9e-38, which
share its code), the positive magnitudes, +inf. NaN is not binned (the ``nonfinite`` column counts
it). Tensors of other dtypes are binned as their float32 value (half and bfloat16 exactly; float64
rounded to float32).

Memory: a tensor is counted in chunks of at most 1/16 of its elements (and no fewer than 2^16 on
the CPU, 2^20 on a GPU, where each chunk costs kernel launches), so the temporary (the codes,
int32) stays under 1/16 of a float32 tensor's size, or 4 MB; a sparse gradient
is counted by its values, its implicit zeros added to the zero bin.

Storage: per (step, layer, kind) only the bins from the first to the last non-empty one, as
zlib-compressed int64 (``encode``/``decode``); ``Run.histograms`` puts them back on these edges.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

KINDS = ("act", "grad", "weight")
KIND_TITLES = {"act": "activations", "grad": "gradients", "weight": "weights"}

SHIFT = 21                     # float32 bits right of the sign, the exponent and two mantissa bits
N_CODES = 1 << (32 - SHIFT)    # 2048 codes: sign x 256 exponents x 4
# A code is the arithmetic shift of the bits seen as int32, plus 1024: negative values (sign bit
# set) get their magnitude code (0..1023), positive ones 1024 + theirs.
_POSITIVE = N_CODES // 2
_INF = 255 << 2                # the magnitude code of inf (exponent 255, mantissa bits 0); above: NaN
N_BINS = 2 * _INF + 1          # -inf .. zero .. +inf
ZERO_BIN = _INF                # the canonical index of the zero bin
_MIN_CHUNK = 1 << 16
# elsewhere than on the CPU each chunk is ~5 kernel launches: no chunk under 4 MB of codes there
_MIN_DEVICE_CHUNK = 1 << 20
_MAX_CHUNK = 1 << 24           # the int32 codes of a chunk: at most 64 MB


def _magnitude_edges() -> np.ndarray:
    """The lower edge of each magnitude code 0..1020 (code 1020 = inf starts at 2^128)."""
    codes = np.arange(_INF + 1)
    exponent, mantissa = codes >> 2, codes & 3
    normal = np.ldexp(1.0 + mantissa / 4.0, exponent - 127)
    subnormal = np.ldexp(mantissa.astype(float), -128)
    return np.where(exponent == 0, subnormal, normal)


_LOWER = _magnitude_edges()
# Ascending bin edges (N_BINS + 1): -inf, -2^128, ..., -2^-128, 2^-128, ..., 2^128, +inf; the zero
# bin spans (-2^-128, 2^-128).
EDGES: np.ndarray = np.concatenate([[-np.inf], -_LOWER[:0:-1], _LOWER[1:], [np.inf]])
# The code whose count each canonical bin takes (the zero bin also takes the code of -0, 0).
_BIN_CODE = np.concatenate([np.arange(_INF, 0, -1), [_POSITIVE], _POSITIVE + np.arange(1, _INF + 1)])


# On CUDA, elements count into this many copies of the histogram by their position (lane j of each
# row of 32 adds j * N_CODES to its code), summed at the end: a popular bin takes 1/32 of the
# atomic adds per address (the values of a layer crowd into a few dozen bins).
LANES = 32
_LANES_FROM = 1 << 18


def _count_chunk(flat: torch.Tensor, total: torch.Tensor) -> None:
    """Add the counts per code of a 1-d chunk to ``total``: (N_CODES,) int64 on the CPU,
    (LANES * N_CODES,) elsewhere."""
    if flat.dtype != torch.float32:
        flat = flat.float()
    codes = (flat.view(torch.int32) >> SHIFT).add_(_POSITIVE)
    if flat.device.type == "cpu":
        total += torch.bincount(codes, minlength=N_CODES)
        return
    # CUDA's bincount reads its largest code back to the host (a sync), and its histc flushes every
    # bin of every block to memory (2048 atomics per 256 elements): one atomic add per element
    # instead, on int64 (exact, and deterministic), spread over the lanes
    body = codes.numel() - codes.numel() % LANES
    if body and total.numel() > N_CODES:
        codes[:body].view(-1, LANES).add_(_lane_offsets(flat.device))
    total.index_add_(0, codes, _ones(flat.device).expand(codes.numel()))


@functools.lru_cache(maxsize=8)
def _ones(device: torch.device) -> torch.Tensor:
    """A one-element int64 1 on ``device``, made once (expanded, it is the index_add_ source)."""
    return torch.ones(1, dtype=torch.long, device=device)


@functools.lru_cache(maxsize=8)
def _lane_offsets(device: torch.device) -> torch.Tensor:
    """0, N_CODES, 2 N_CODES, ... (LANES of them, int32) on ``device``, made once."""
    return torch.arange(LANES, dtype=torch.int32, device=device) * N_CODES


def _pieces(tensor: torch.Tensor, chunk: int) -> list[torch.Tensor]:
    """1-d pieces of ``tensor`` of at most ``chunk`` elements, copying at most one at a time."""
    if tensor.is_contiguous():
        return list(tensor.view(-1).split(chunk))
    if tensor.numel() <= chunk or tensor.ndim == 0:
        return [tensor.reshape(-1)]
    per_row = tensor.numel() // tensor.shape[0]
    if per_row > chunk:  # a row is too big alone: its own rows, one at a time
        return [piece for row in tensor.unbind(0) for piece in _pieces(row, chunk)]
    return [block.reshape(-1) for block in tensor.split(max(1, chunk // per_row))]  # reshape copies a block


def device_counts(tensor: torch.Tensor) -> torch.Tensor:
    """The (N_CODES,) int64 counts of ``tensor``'s values, on its device (no host sync)."""
    if tensor.is_sparse:
        values = tensor.coalesce().values()
        counts = device_counts(values)
        implicit = tensor.numel() - values.numel()  # the entries a sparse gradient leaves out are 0
        if implicit:
            counts[_POSITIVE] += implicit
        return counts
    on_cpu = tensor.device.type == "cpu"
    chunk = min(max(tensor.numel() // 16, _MIN_CHUNK if on_cpu else _MIN_DEVICE_CHUNK), _MAX_CHUNK)
    # lanes only where contention costs more than their two extra kernels
    lanes = 1 if on_cpu or tensor.numel() < _LANES_FROM else LANES
    total = torch.zeros(lanes * N_CODES, dtype=torch.long, device=tensor.device)
    for piece in _pieces(tensor.detach(), chunk):
        _count_chunk(piece, total)
    return total if lanes == 1 else total.view(lanes, N_CODES).sum(dim=0)


def canonical(codes: np.ndarray) -> np.ndarray:
    """Code counts (..., N_CODES) -> counts on ``EDGES`` (..., N_BINS): negatives reversed, both
    zeros in one bin, NaN left out."""
    out = codes[..., _BIN_CODE].astype(np.int64)
    out[..., ZERO_BIN] += codes[..., 0].astype(np.int64)
    return out


def trim(counts: np.ndarray) -> tuple[int, np.ndarray]:
    """The first non-empty bin and the counts from it to the last non-empty one."""
    nonzero = np.flatnonzero(counts)
    if not len(nonzero):
        return ZERO_BIN, np.zeros(0, dtype=np.int64)
    return int(nonzero[0]), counts[nonzero[0]:nonzero[-1] + 1]


def encode(counts: np.ndarray) -> bytes:
    """Trimmed counts as stored: zlib-compressed little-endian int64."""
    return zlib.compress(np.ascontiguousarray(counts, dtype="<i8").tobytes(), 1)


def decode(blob: bytes) -> np.ndarray:
    """The inverse of ``encode``."""
    return np.frombuffer(zlib.decompress(blob), dtype="<i8").astype(np.int64)


def frame(steps: Sequence[int], counts: np.ndarray) -> pd.DataFrame:
    """A step x bin DataFrame from (steps, N_BINS) canonical counts (``Run.histograms``): the bins
    used at some step, an empty stretch between two of them as one column; ``attrs["edges"]``,
    ``attrs["zero_bin"]``."""
    used = np.flatnonzero(counts.any(axis=0))
    if not len(used):
        used = np.array([ZERO_BIN])
    gaps = [[used[j] + 1, used[j + 1]] if used[j + 1] > used[j] + 1 else [used[j + 1]] for j in range(len(used) - 1)]
    starts = np.concatenate([[used[0]], *gaps]).astype(int)
    ends = np.append(starts[1:], used[-1] + 1)
    table = np.add.reduceat(counts[:, used[0]:used[-1] + 1], starts - used[0], axis=1)
    out = pd.DataFrame(table, index=pd.Index(list(steps), name="step"), columns=pd.RangeIndex(len(starts), name="bin"))
    zero = np.flatnonzero((starts == ZERO_BIN) & (ends == ZERO_BIN + 1))
    out.attrs.update(edges=EDGES[np.append(starts, used[-1] + 1)].copy(), zero_bin=int(zero[0]) if len(zero) else None)
    return out


def reference_counts(values: np.ndarray) -> np.ndarray:
    """Counts on ``EDGES`` of float32 ``values`` by NumPy alone (the tests' oracle): magnitudes in
    [lower, upper) per sign, with exact zeros (and subnormals under 2^-128) in the zero bin."""
    values = np.asarray(values, dtype=np.float32).astype(np.float64).ravel()
    values = values[~np.isnan(values)]
    magnitude, negative = np.abs(values), np.signbit(values)
    code = np.searchsorted(_LOWER, magnitude, side="right") - 1  # the magnitude code, 0..1020
    index = np.where(code == 0, ZERO_BIN, np.where(negative, ZERO_BIN - code, ZERO_BIN + code))
    return np.bincount(index, minlength=N_BINS)


class LayerHistograms:
    """One sampled step's histograms: outputs per observed module as they come (forward hooks),
    parameters and gradients per layer at the step's end; each kind one (layers, N_CODES) tensor."""

    def __init__(self) -> None:
        self._outputs: dict[int, torch.Tensor] = {}

    def add_output(self, index: int, tensors: Sequence[torch.Tensor]) -> None:
        """Count one forward call's output tensors for observed module ``index``."""
        for tensor in tensors:
            counts = device_counts(tensor)
            previous = self._outputs.get(index)
            self._outputs[index] = counts if previous is None else previous.add_(counts.to(previous.device))

    def outputs(self, names: Sequence[str]) -> tuple[list[str], torch.Tensor] | None:
        """The step's output counts (modules in ``names`` order by index) and reset; None if none."""
        if not self._outputs:
            return None
        indices = sorted(self._outputs)
        device = self._outputs[indices[0]].device
        stacked = torch.stack([self._outputs[i].to(device) for i in indices])
        self._outputs = {}
        return [names[i] for i in indices], stacked

    @staticmethod
    def per_layer(owned: Sequence[tuple[torch.Tensor, int]], n_layers: int, device: torch.device) -> torch.Tensor:
        """(n_layers, N_CODES) counts of (tensor, owning layer) pairs summed per layer."""
        out = torch.zeros(n_layers, N_CODES, dtype=torch.long, device=device)
        for tensor, layer in owned:
            out[layer] += device_counts(tensor).to(device)
        return out
