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

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

DB_NAME = "run.sqlite"


def db_name(rank: int | None) -> str:
    """The store file of one process: ``run.sqlite``, or ``run.rank<R>.sqlite`` under torch.distributed."""
    return DB_NAME if rank is None else f"run.rank{rank}.sqlite"


def _store_files(run_dir: Path) -> list[Path]:
    return sorted(p for p in run_dir.glob("run*.sqlite") if p.name == DB_NAME or p.name.startswith("run.rank"))


def _rank_of(path: Path) -> int:
    return int(path.name[len("run.rank"):-len(".sqlite")]) if path.name != DB_NAME else 0

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


def _quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _to_sql(value: Any) -> float | None:
    value = float(value)
    return value if not math.isnan(value) else None


class RunWriter:
    """Writes a run directory from a background thread.

    ``write_*`` calls only enqueue; ``flush()`` waits until everything enqueued is committed;
    ``close(complete=True)`` marks the run complete and stops the thread.
    """

    def __init__(self, run_dir: str | Path, meta: Mapping[str, Any] | None = None, *,
                 resume: bool = False, overwrite: bool = False, rank: int | None = None) -> None:
        if resume and overwrite:
            raise ValueError("resume/overwrite: choose one (resume appends, overwrite replaces)")
        self.run_dir = Path(run_dir)
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise OSError(err.errno, f"run_dir: cannot create {self.run_dir} ({err.strerror or err})") from err
        self.path = self.run_dir / db_name(rank)
        if self.path.exists() and not resume:
            if not overwrite:
                raise FileExistsError(
                    f"run_dir: {self.run_dir} already holds a run; choose a new directory, or pass "
                    "resume=True to continue it or overwrite=True to replace it"
                )
            for suffix in ("", "-wal", "-shm"):
                Path(str(self.path) + suffix).unlink(missing_ok=True)
        self._queue: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._error: BaseException | None = None
        # Create the schema on this thread, so a bad path fails here, not in the writer thread.
        try:
            conn = self._connect()
        except sqlite3.Error as err:
            raise OSError(f"run_dir: cannot write the run store {self.path} ({err})") from err
        self._layer_columns = {row[1] for row in conn.execute("PRAGMA table_info(layer_stats)")}
        last = conn.execute("SELECT MAX(s) FROM (SELECT MAX(step) AS s FROM scalars "
                            "UNION ALL SELECT MAX(step) FROM layer_stats)").fetchone()[0]
        conn.close()
        self.start_step = 0 if last is None else int(last) + 1  # where a resumed run continues
        self._thread = threading.Thread(target=self._run, name="diagnose-run-writer", daemon=True)
        self._thread.start()
        self.set_meta(complete=False, **(meta or {}))
        if resume and self.start_step:
            self.set_meta(resumed_at_step=self.start_step)

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
    """A recorded run, read back from its directory (complete, in progress, or killed mid-way).

    Under torch.distributed each rank writes its own file; the tables then hold every rank's rows
    with a ``rank`` column (0 for a single process).
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.paths = _store_files(self.run_dir) if self.run_dir.is_dir() else []
        if not self.paths:
            raise FileNotFoundError(f"run_dir: no recorded run in {self.run_dir} (expected {DB_NAME})")

    def _query(self, sql: str) -> pd.DataFrame:
        frames = []
        for path in self.paths:
            # A plain (not read-only) connection: opening a WAL database whose writer was killed
            # needs to recover its -wal/-shm files, which a read-only connection cannot do.
            conn = sqlite3.connect(path)
            try:
                frame = pd.read_sql_query(sql, conn)
            finally:
                conn.close()
            frame["rank"] = _rank_of(path)
            frames.append(frame)
        return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)

    @property
    def meta(self) -> dict[str, Any]:
        """Run metadata: model summary, optimizer and hyperparameters, versions, start/end, complete.

        For several ranks: rank 0's, with ``complete`` true only if every rank completed, and
        ``ranks`` holding each rank's own metadata.
        """
        frame = self._query("SELECT key, value FROM meta")
        per_rank = {int(r): {k: json.loads(v) for k, v in zip(g["key"], g["value"])}
                    for r, g in frame.groupby("rank")}
        first = per_rank[min(per_rank)]
        if len(per_rank) == 1:
            return first
        return {**first, "complete": all(m.get("complete") for m in per_rank.values()), "ranks": per_rank}

    def scalars(self) -> pd.DataFrame:
        """One row per logged step (per rank): ``step``, one column per logged name, ``rank``."""
        long = self._query("SELECT step, name, value FROM scalars ORDER BY step, rowid")
        if long.empty:
            return pd.DataFrame({"step": pd.Series(dtype="int64"), "rank": pd.Series(dtype="int64")})
        order = list(dict.fromkeys(long["name"]))
        # (step, name) is unique within a rank's file, so a plain pivot; NaN values stay NaN
        wide = long.pivot(index=["rank", "step"], columns="name", values="value").reindex(columns=order)
        wide.columns.name = None
        wide = wide.reset_index()[["step", *order, "rank"]]
        return wide.sort_values(["step", "rank"], kind="stable").reset_index(drop=True)

    def scalar(self, name: str, rank: int = 0) -> pd.Series:
        """One logged scalar by step, over the steps it was logged at. A NaN it was logged with stays
        NaN here (``scalars()`` cannot tell it from "not logged at this step")."""
        frame = self._query(f"SELECT step, value FROM scalars WHERE name = {_quote_literal(name)} ORDER BY step")
        frame = frame[frame["rank"] == rank]
        return pd.Series(frame["value"].to_numpy(dtype=float), index=frame["step"].to_numpy(), name=name)

    def layer_stats(self) -> pd.DataFrame:
        """One row per (step, layer[, rank]); the columns of shared/API.md §2 (NaN where not recorded)."""
        frame = self._query("SELECT * FROM layer_stats ORDER BY step, rowid")
        for c in LAYER_STAT_COLUMNS:
            if c not in frame:
                frame[c] = np.nan
            frame[c] = frame[c].astype("float64")
        rest = [c for c in frame.columns if c not in ("step", "layer", "rank", *LAYER_STAT_COLUMNS)]
        frame = frame[["step", "layer", *LAYER_STAT_COLUMNS, *rest, "rank"]]
        return frame.sort_values(["step", "rank"], kind="stable").reset_index(drop=True)

    def findings(self) -> list:
        """Training-health diagnoses of this run (``dg.findings``), most severe first."""
        from diagnose.findings import findings
        return findings(self)

    def export(self, directory: str | Path, format: str = "parquet") -> list[Path]:
        """Write ``layer_stats``, ``scalars`` (Parquet or CSV) and ``meta.json`` into ``directory``."""
        if format not in ("parquet", "csv"):
            raise ValueError(f"format: expected 'parquet' or 'csv', got {format!r}")
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        paths = []
        for name, frame in (("layer_stats", self.layer_stats()), ("scalars", self.scalars())):
            path = out / f"{name}.{format}"
            if format == "csv":
                frame.to_csv(path, index=False)
            else:
                try:
                    frame.to_parquet(path, index=False)
                except ImportError as err:
                    raise ImportError("format='parquet' needs pyarrow (pip install pyarrow); "
                                      "or use format='csv'") from err
            paths.append(path)
        meta_path = out / "meta.json"
        meta_path.write_text(json.dumps(self.meta, indent=2, default=str))
        return [*paths, meta_path]

    def to_tensorboard(self, logdir: str | Path) -> Path:
        """Write the scalars and per-layer statistics as TensorBoard events (needs ``tensorboard``)."""
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:
            raise ImportError("to_tensorboard needs the tensorboard package (pip install tensorboard)") from err
        logdir = Path(logdir)
        writer = SummaryWriter(log_dir=str(logdir))
        try:
            scalars = self.scalars()
            for name in scalars.columns.drop(["step", "rank"]):
                for step, value, rank in scalars[["step", name, "rank"]].dropna().itertuples(index=False):
                    writer.add_scalar(name if rank == 0 else f"rank{rank}/{name}", value, int(step))
            stats = self.layer_stats()
            for column in [c for c in stats.columns if c not in ("step", "layer", "rank")]:
                for (layer, rank), group in stats[["step", "layer", "rank", column]].dropna().groupby(["layer", "rank"]):
                    tag = f"{column}/{layer}" if rank == 0 else f"rank{rank}/{column}/{layer}"
                    for step, value in zip(group["step"], group[column]):
                        writer.add_scalar(tag, value, int(step))
        finally:
            writer.close()
        return logdir

    def __repr__(self) -> str:
        return f"Run({str(self.run_dir)!r})"


def load_run(run_dir: str | Path) -> Run:
    """Open a recorded run directory for reading."""
    return Run(run_dir)
