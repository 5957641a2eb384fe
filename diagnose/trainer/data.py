"""Turn what users pass as data ((X, y) arrays or tensors, a Dataset, a DataLoader) into batches.

Tensor pairs are batched by slicing a permutation (no per-item collation: `sgd` takes one
example per step, and a DataLoader would spend most of that step collating).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sized
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

Batch = tuple[torch.Tensor, torch.Tensor]
DataLike = tuple[Any, Any] | Dataset | DataLoader


def as_tensor(value: Any, name: str) -> torch.Tensor:
    """A tensor from a tensor, NumPy array, pandas object or nested list (no copy for tensors)."""
    if isinstance(value, torch.Tensor):
        return value
    if hasattr(value, "to_numpy"):  # pandas DataFrame / Series
        value = value.to_numpy()
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name}: expected an array or tensor, got {type(value).__name__}") from err
    if array.dtype == object:
        raise TypeError(f"{name}: expected a numeric array, got an array of Python objects")
    array = np.ascontiguousarray(array)
    if not array.flags.writeable:  # torch tensors must own writable memory
        array = array.copy()
    return torch.from_numpy(array)


class TensorBatches:
    """Batches of an (X, y) tensor pair; reshuffled on every iteration when ``shuffle``."""

    def __init__(self, X: torch.Tensor, y: torch.Tensor, batch_size: int, shuffle: bool,
                 generator: torch.Generator | None = None) -> None:
        self.X, self.y = X, y
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.generator = generator

    def __len__(self) -> int:
        return math.ceil(len(self.X) / self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        n = len(self.X)
        if self.shuffle:
            order = torch.randperm(n, generator=self.generator)
            for start in range(0, n, self.batch_size):
                idx = order[start:start + self.batch_size]
                yield self.X[idx], self.y[idx]
        else:
            for start in range(0, n, self.batch_size):
                yield self.X[start:start + self.batch_size], self.y[start:start + self.batch_size]


def num_examples(data: Any) -> int | None:
    """Number of examples in ``data``, or None for an unsized loader."""
    if isinstance(data, TensorBatches):
        return len(data.X)
    if isinstance(data, DataLoader):
        return len(data.dataset) if isinstance(data.dataset, Sized) else None
    return len(data) if isinstance(data, Sized) else None


def check_pair(data: Any, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate an ``(X, y)`` pair: two array-likes with the same, non-zero number of rows."""
    if len(data) != 2:
        raise TypeError(f"{name}: expected an (X, y) pair, got a sequence of {len(data)} items")
    X, y = as_tensor(data[0], f"{name}[0] (X)"), as_tensor(data[1], f"{name}[1] (y)")
    if X.ndim == 0 or y.ndim == 0:
        raise ValueError(f"{name}: X and y must have a row dimension, got shapes {tuple(X.shape)} and {tuple(y.shape)}")
    if len(X) != len(y):
        raise ValueError(f"{name}: X has {len(X)} rows but y has {len(y)}; they must match")
    if len(X) == 0:
        raise ValueError(f"{name}: is empty (0 rows); expected at least one example")
    return X, y


def make_batches(data: DataLike, name: str, batch_size: int, shuffle: bool,
                 generator: torch.Generator | None = None) -> Iterable[Batch]:
    """An iterable of (x, y) batches over ``data``; a DataLoader is used as it is."""
    if isinstance(data, DataLoader):
        if num_examples(data) == 0:
            raise ValueError(f"{name}: the DataLoader's dataset is empty; expected at least one example")
        return data
    if isinstance(data, Dataset):
        if num_examples(data) == 0:
            raise ValueError(f"{name}: the Dataset is empty; expected at least one example")
        return DataLoader(data, batch_size=batch_size, shuffle=shuffle, generator=generator)
    if isinstance(data, (tuple, list)):
        X, y = check_pair(data, name)
        return TensorBatches(X, y, batch_size, shuffle, generator)
    raise TypeError(
        f"{name}: expected an (X, y) pair of arrays/tensors, a torch Dataset or a DataLoader, "
        f"got {type(data).__name__}"
    )


def split_batch(batch: Any, name: str) -> Batch:
    """The (inputs, targets) of one batch a loader yielded."""
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        return batch[0], batch[1]
    if isinstance(batch, dict) and {"x", "y"} <= set(batch):
        return batch["x"], batch["y"]
    raise TypeError(f"{name}: each batch must be an (inputs, targets) pair, got {type(batch).__name__}")
