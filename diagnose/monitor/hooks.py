"""Every hook handle of a watch in one place: added in named groups, removed together, safely twice
(fastai's ``Hook.remove``), also when the training loop raised (Captum's register-in-try,
remove-in-finally)."""

from __future__ import annotations

from types import TracebackType

from torch.utils.hooks import RemovableHandle


class Hooks:
    """Hook handles by group (e.g. ``"session"`` for the whole watch, ``"sampled"`` for the
    hooks attached on sampled steps only). A context manager: leaving it removes every hook."""

    def __init__(self) -> None:
        self._groups: dict[str, list[RemovableHandle]] = {}

    def add(self, group: str, handle: RemovableHandle) -> None:
        """Keep ``handle`` in ``group``."""
        self._groups.setdefault(group, []).append(handle)

    def attached(self, group: str) -> bool:
        """Whether ``group`` holds hooks now."""
        return bool(self._groups.get(group))

    def remove(self, group: str | None = None) -> None:
        """Remove the hooks of ``group`` (every group when None). Safe to call twice."""
        for name in [group] if group is not None else list(self._groups):
            for handle in self._groups.pop(name, []):
                handle.remove()

    def __len__(self) -> int:
        return sum(len(handles) for handles in self._groups.values())

    def __enter__(self) -> Hooks:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.remove()
