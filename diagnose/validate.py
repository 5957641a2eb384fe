"""Argument checks shared by the public functions: one place for the messages users read.

Every check returns the value it accepted (so it reads inline) or raises an error that names the
argument and says what was expected: ``ValueError("epochs: expected a positive int, got 0")``.
A number of the wrong type raises ``TypeError``, one out of range (NaN included) ``ValueError``;
integer checks raise ``ValueError`` for both, as most callers pass literals; ``bool`` is never
accepted as a number.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from typing import Any, TypeVar

T = TypeVar("T")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def integer(name: str, value: Any, minimum: int | None = None) -> int:
    """An int (not a bool), at least ``minimum`` when given."""
    if not _is_int(value) or (minimum is not None and value < minimum):
        what = ("a positive int" if minimum == 1 else "an int" if minimum is None else f"an int >= {minimum}")
        raise ValueError(f"{name}: expected {what}, got {value!r}")
    return int(value)


def positive_int(name: str, value: Any) -> int:
    """An int >= 1."""
    return integer(name, value, minimum=1)


def number(name: str, value: Any, minimum: float | None = None, *, strict: bool = False) -> float:
    """A finite int or float; ``>= minimum`` (``> minimum`` with ``strict``) when given."""
    if not _is_number(value):
        raise TypeError(f"{name}: expected a finite number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name}: expected a finite number, got {value!r}")
    if minimum is not None and (value <= minimum if strict else value < minimum):
        relation = ">" if strict else ">="
        what = "a positive number" if (minimum, strict) == (0, True) else f"a number {relation} {minimum}"
        raise ValueError(f"{name}: expected {what}, got {value!r}")
    return float(value)


def positive_number(name: str, value: Any) -> float:
    """A finite number > 0."""
    return number(name, value, 0, strict=True)


def fraction(name: str, value: Any, *, closed: bool = False) -> float:
    """A number in (0, 1), or [0, 1) with ``closed`` (a probability like dropout)."""
    ok = _is_number(value) and (0.0 <= value < 1.0 if closed else 0.0 < value < 1.0)
    if not ok:
        raise ValueError(f"{name}: expected a {'probability in [0, 1)' if closed else 'fraction in (0, 1)'}, "
                         f"got {value!r}")
    return float(value)


def did_you_mean(name: Any, options: Collection[Any]) -> str:
    """`` (did you mean 'x'?)`` naming the closest of ``options`` to a misspelt ``name``, or ''."""
    import difflib
    match = difflib.get_close_matches(str(name), [str(o) for o in options], 1)
    return f" (did you mean {match[0]!r}?)" if match else ""


def one_of(name: str, value: T, options: Collection[Any]) -> T:
    """One of ``options`` (names, modes)."""
    if value not in options:
        raise ValueError(f"{name}: expected one of {list(options)}, got {value!r}")
    return value
