"""``Registry``: named entries (optimizers, losses, statistics, finding rules, explain methods,
tuning strategies), each a frozen dataclass of metadata or a class, added by the module that
defines it. Tests parametrize over a registry, so a new entry is tested the moment it exists;
``dg.list_...()`` functions read the names from it.

A registry may name the package whose import fills it (``populate=``): the entries are then
loaded on first use, so ``import diagnose`` does not import what only they need (Captum, SHAP).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Entries by name, in the order they were registered."""

    def __init__(self, kind: str, populate: str | None = None) -> None:
        self.kind = kind  # names the argument in errors: "optimizer: unknown name ..."
        self._populate = populate
        self._entries: dict[str, T] = {}

    def _load(self) -> dict[str, T]:
        if self._populate is not None:
            module, self._populate = self._populate, None
            importlib.import_module(module)
        return self._entries

    def add(self, name: str, entry: T) -> T:
        """Register ``entry`` under ``name``; a name is registered once."""
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = entry
        return entry

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of :meth:`add`."""
        def decorate(entry: T) -> T:
            return self.add(name, entry)
        return decorate

    def get(self, name: str) -> T:
        """The entry named ``name``, or a ValueError listing the valid names."""
        entries = self._load()
        if name not in entries:
            raise ValueError(f"{self.kind}: unknown name {name!r}; expected one of {list(entries)}")
        return entries[name]

    def names(self) -> list[str]:
        """The registered names, in registration order."""
        return list(self._load())

    def items(self) -> list[tuple[str, T]]:
        return list(self._load().items())

    def values(self) -> list[T]:
        return list(self._load().values())

    def __contains__(self, name: object) -> bool:
        return name in self._load()

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._load())

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"
