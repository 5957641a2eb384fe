"""The run store: one SQLite file per run (per rank later), in WAL mode.

Why SQLite: embedded (in the standard library), durable (a committed transaction survives a
SIGKILL of the writer: WAL keeps the database consistent), readable with one pandas call, and
it lets a reader open a run while it is still being written. Writes happen on a background
thread that owns the connection, so the training thread only enqueues rows.

Tables: ``meta(key, value JSON)``; ``scalars(step, name, value)`` (long: names are the user's);
``layer_stats(step, layer, <one column per statistic>)`` (wide: the columns of shared/API.md §2,
and a new statistic adds a column).
"""

from __future__ import annotations

import json
import logging
import math
import queue
import sqlite3
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

log = logging.getLogger(__name__)

DB_NAME = "run.sqlite"

# The columns of run.layer_stats() (shared/API.md §2), in order. A statistic not recorded for a
# layer reads as NaN.
LAYER_STAT_COLUMNS: tuple[str, ...] = (
    "grad_norm", "weight_norm", "update_ratio", "act_mean", "act_std", "act_zero_frac",
    "dead_frac", "saturated_frac", "nonfinite",
)

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS scalars (step INTEGER NOT NULL, name TEXT NOT NULL, value REAL,
                                    PRIMARY KEY (step, name));
CREATE TABLE IF NOT EXISTS layer_stats (step INTEGER NOT NULL, layer TEXT NOT NULL,
    {", ".join(f'"{c}" REAL' for c in LAYER_STAT_COLUMNS)}, PRIMARY KEY (step, layer));
"""


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _to_sql(value: Any) -> float | None:
    value = float(value)
    return value if not math.isnan(value) else None


class RunWriter:
    """Writes a run directory from a background thread.

    ``write_*`` calls only enqueue; ``flush()`` waits until everything enqueued is committed;
    ``close(complete=True)`` marks the run complete and stops the thread.
    """

    def __init__(self, run_dir: str | Path, meta: Mapping[str, Any] | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.run_dir / DB_NAME
        if self.path.exists():
            raise FileExistsError(
                f"run_dir: {self.run_dir} already holds a run; choose a new directory "
                "(the recorded data is never overwritten)"
            )
        self._queue: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._error: BaseException | None = None
        self._layer_columns = set(LAYER_STAT_COLUMNS)
        # Create the schema on this thread, so a bad path fails here, not in the writer thread.
        conn = self._connect()
        conn.close()
        self._thread = threading.Thread(target=self._run, name="diagnose-run-writer", daemon=True)
        self._thread.start()
        self.set_meta(complete=False, **(meta or {}))

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode: a committed transaction survives a process crash (SIGKILL); only
        # an OS crash or power loss may lose the last commits (sqlite.org/pragma.html#pragma_synchronous).
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.executescript(_SCHEMA)
        conn.commit()
        return conn

    # -- producer side (training thread) ------------------------------------------------------
    def write_scalars(self, rows: Iterable[tuple[int, str, float]]) -> None:
        """Enqueue ``(step, name, value)`` rows."""
        self._put("scalars", list(rows))

    def write_layer_stats(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Enqueue rows with ``step``, ``layer`` and any statistic columns; merged per (step, layer)."""
        self._put("layers", list(rows))

    def set_meta(self, **items: Any) -> None:
        """Enqueue metadata (JSON-serializable values)."""
        self._put("meta", {k: json.dumps(v, default=str) for k, v in items.items()})

    def flush(self) -> None:
        """Block until everything written so far is committed."""
        done = threading.Event()
        self._put("flush", done)
        done.wait()
        self._raise_if_failed()

    def close(self, complete: bool = True) -> None:
        """Record ``complete``, commit, and stop the writer thread. Safe to call twice."""
        if not self._thread.is_alive():
            return
        self.set_meta(complete=complete)
        self._queue.put(("close", None))
        self._thread.join()
        self._raise_if_failed()

    def _put(self, kind: str, payload: Any) -> None:
        self._raise_if_failed()
        if not self._thread.is_alive() and kind != "close":
            raise RuntimeError(f"the run writer for {self.run_dir} is closed")
        self._queue.put((kind, payload))

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise RuntimeError(f"writing the run store {self.path} failed: {self._error}") from self._error

    # -- consumer side (writer thread) --------------------------------------------------------
    def _run(self) -> None:
        conn = self._connect()
        try:
            while True:
                kind, payload = self._queue.get()
                if kind == "close":
                    return
                if kind == "flush":
                    payload.set()
                    continue
                if self._error is not None:
                    continue  # keep draining so flush() callers are released
                try:
                    with conn:  # one transaction per item
                        self._apply(conn, kind, payload)
                except sqlite3.Error as err:
                    log.error("diagnose: run store write failed (%s); later writes are skipped", err)
                    self._error = err
        finally:
            conn.close()
            # Release any flush() still waiting after a close.
            while not self._queue.empty():
                kind, payload = self._queue.get_nowait()
                if kind == "flush":
                    payload.set()

    def _apply(self, conn: sqlite3.Connection, kind: str, payload: Any) -> None:
        if kind == "meta":
            conn.executemany("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", payload.items())
        elif kind == "scalars":
            conn.executemany(
                "INSERT OR REPLACE INTO scalars(step, name, value) VALUES (?, ?, ?)",
                [(int(s), str(n), _to_sql(v)) for s, n, v in payload],
            )
        elif kind == "layers":
            self._write_layers(conn, payload)

    def _write_layers(self, conn: sqlite3.Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        by_columns: dict[tuple[str, ...], list[tuple[Any, ...]]] = {}
        for row in rows:
            cols = tuple(k for k in row if k not in ("step", "layer"))
            by_columns.setdefault(cols, []).append(
                (int(row["step"]), str(row["layer"]), *(_to_sql(row[c]) for c in cols)))
        for cols, values in by_columns.items():
            for c in cols:
                if c not in self._layer_columns:
                    conn.execute(f"ALTER TABLE layer_stats ADD COLUMN {_quote(c)} REAL")
                    self._layer_columns.add(c)
            names = ", ".join(_quote(c) for c in cols)
            marks = ", ".join("?" for _ in cols)
            # Statistics of one (step, layer) may arrive in separate writes: merge, keeping what
            # is already there where the new row has no value.
            merge = ", ".join(f"{_quote(c)} = COALESCE(excluded.{_quote(c)}, {_quote(c)})" for c in cols)
            sql = (f"INSERT INTO layer_stats(step, layer{', ' if cols else ''}{names}) "
                   f"VALUES (?, ?{', ' if cols else ''}{marks}) ON CONFLICT(step, layer) DO "
                   + (f"UPDATE SET {merge}" if cols else "NOTHING"))
            conn.executemany(sql, values)


class Run:
    """A recorded run, read back from its directory (complete or killed mid-way)."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / DB_NAME
        if not self.path.is_file():
            raise FileNotFoundError(f"run_dir: no recorded run in {self.run_dir} (expected {DB_NAME})")

    def _query(self, sql: str) -> pd.DataFrame:
        # A plain (not read-only) connection: opening a WAL database whose writer was killed
        # needs to recover its -wal/-shm files, which a read-only connection cannot do.
        conn = sqlite3.connect(self.path)
        try:
            return pd.read_sql_query(sql, conn)
        finally:
            conn.close()

    @property
    def meta(self) -> dict[str, Any]:
        """Run metadata: model summary, optimizer and hyperparameters, versions, start/end, complete."""
        frame = self._query("SELECT key, value FROM meta")
        return {k: json.loads(v) for k, v in zip(frame["key"], frame["value"])}

    def scalars(self) -> pd.DataFrame:
        """One row per logged step: ``step`` and one column per logged name."""
        long = self._query("SELECT step, name, value FROM scalars ORDER BY step, rowid")
        if long.empty:
            return pd.DataFrame({"step": pd.Series(dtype="int64")})
        order = list(dict.fromkeys(long["name"]))
        wide = long.pivot(index="step", columns="name", values="value")[order]
        wide.columns.name = None
        return wide.reset_index()

    def layer_stats(self) -> pd.DataFrame:
        """One row per (step, layer); the columns of shared/API.md §2 (NaN where not recorded)."""
        frame = self._query("SELECT * FROM layer_stats ORDER BY step, rowid")
        for c in LAYER_STAT_COLUMNS:
            frame[c] = frame[c].astype("float64")
        return frame

    def __repr__(self) -> str:
        return f"Run({str(self.run_dir)!r})"


def load_run(run_dir: str | Path) -> Run:
    """Open a recorded run directory for reading."""
    return Run(run_dir)
