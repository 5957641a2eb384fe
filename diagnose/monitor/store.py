"""The run store: one SQLite file per run (per rank under torch.distributed), written in WAL mode.

Why SQLite: embedded (in the standard library), durable (a committed transaction survives a
SIGKILL of the writer: WAL keeps the database consistent), readable with one pandas call, and
it lets a reader open a run while it is still being written. Writes happen on a background
thread that owns the connection, so the training thread only enqueues rows.

Tables: ``meta(key, value JSON)``; ``scalars(step, name, value)`` (long: names are the user's);
``layer_stats(step, layer, <one column per statistic>)`` (wide: the columns of shared/API.md §2,
and a new statistic adds a column). Reading is in ``diagnose.monitor.run``.

What protects the user's data:

- one writer per store file, enforced by a lock held for the writer's life (``lock.py``);
- ``overwrite`` deletes only the files a run is made of, and refuses when the folder holds
  anything else;
- a write that fails (disk full, I/O error, permissions lost) never reaches the training loop:
  the writer warns once, keeps the rows in memory (up to ``BACKLOG_ROWS``, then drops the oldest
  and counts them), retries, and records what was lost and why in the run's metadata;
- a cleanly closed run is switched to a rollback journal, so it is one self-contained file that
  readers can open on read-only media.
"""

from __future__ import annotations

import collections
import json
import logging
import math
import queue
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from diagnose.monitor.lock import RunLock, RunLockedError, describe, live_writer
from diagnose.monitor.statistics import statistic_columns

log = logging.getLogger(__name__)

DB_NAME = "run.sqlite"
# SQLite's companion files of a database (WAL, shared memory, rollback journal).
DB_SUFFIXES = ("", "-wal", "-shm", "-journal")
# Rows (a layer row or a scalar each) kept in memory while the store cannot be written: about
# 100 MB of Python rows; a watch at the default cadence on a 30-layer model fills it in ~160k steps.
BACKLOG_ROWS = 100_000
# Why a run reads as incomplete when its writer could not say more (stored at the start, replaced
# at a clean close).
UNFINISHED = ("its writer never closed it: the process was killed or crashed, or the disk failed, before the "
              "end (the run holds what was written up to its last flush)")
# While the store fails, retry at most this often (a full disk is not freed within milliseconds).
RETRY_SECONDS = 5.0


def db_name(rank: int | None) -> str:
    """The store file of one process: ``run.sqlite``, or ``run.rank<R>.sqlite`` under torch.distributed."""
    return DB_NAME if rank is None else f"run.rank{rank}.sqlite"


def store_files(run_dir: Path) -> list[Path]:
    """The store files in a run directory (one per rank), sorted."""
    return sorted(p for p in run_dir.glob("run*.sqlite") if p.name == DB_NAME or
                  (p.name.startswith("run.rank") and p.name[len("run.rank"):-len(".sqlite")].isdigit()))


def rank_of(path: Path) -> int:
    """The rank a store file belongs to (0 for a single process)."""
    return int(path.name[len("run.rank"):-len(".sqlite")]) if path.name != DB_NAME else 0


# The columns of run.layer_stats() (shared/API.md §2), in order. A statistic not recorded for a
# layer reads as NaN.
LAYER_STAT_COLUMNS: tuple[str, ...] = (
    "grad_norm", "weight_norm", "update_ratio", "act_mean", "act_std", "act_zero_frac",
    "dead_frac", "saturated_frac", "nonfinite",
)

# The table's columns: the documented ones, then every other registered statistic's (a statistic
# passed to dg.watch that is not registered adds its columns when first written).
STORE_COLUMNS = tuple(dict.fromkeys([*LAYER_STAT_COLUMNS, *statistic_columns()]))

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS scalars (step INTEGER NOT NULL, name TEXT NOT NULL, value REAL,
                                    PRIMARY KEY (step, name));
CREATE TABLE IF NOT EXISTS layer_stats (step INTEGER NOT NULL, layer TEXT NOT NULL,
    {", ".join(f'"{c}" REAL' for c in STORE_COLUMNS)}, PRIMARY KEY (step, layer));
CREATE TABLE IF NOT EXISTS layers (name TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS histograms (step INTEGER NOT NULL, layer TEXT NOT NULL, kind TEXT NOT NULL,
    first INTEGER NOT NULL, counts BLOB NOT NULL, PRIMARY KEY (step, layer, kind));
CREATE INDEX IF NOT EXISTS layer_stats_nonfinite ON layer_stats(step) WHERE "nonfinite" > 0;
"""
# ``layers``: each layer's name once, in the order first written (the model's order), so readers
# need not scan the whole table for it. The partial index holds only the rare rows with NaN/Inf
# counts: finding them costs nothing to write and no scan to read. (Runs written before these
# existed are read by scanning.) ``histograms``: per (step, layer, kind) the bins from ``first`` to
# the last non-empty one, zlib-compressed int64 (statistics/histogram.py).
NONFINITE_WHERE = '"nonfinite" > 0'



def quote(identifier: str) -> str:
    """An SQL identifier (a column name), quoted."""
    return '"' + identifier.replace('"', '""') + '"'


def _to_sql(value: Any) -> float | None:
    value = float(value)
    return value if not math.isnan(value) else None


class RunFileError(ValueError):
    """A file of a run directory that cannot be read; the message names it and says what is wrong."""


def connect_readonly(path: Path) -> sqlite3.Connection:
    """Open a store file for reading only (``mode=ro``): works on another user's folder and on a
    run being written. A WAL-mode file closed cleanly on read-only media cannot create the
    ``-shm`` file ``mode=ro`` needs: it is opened ``immutable`` instead (nothing can be writing
    it). Raises :class:`RunFileError` naming the file when it is not a readable SQLite database."""
    uri = path.resolve().as_uri()
    wal = Path(str(path) + "-wal")
    try:
        conn = sqlite3.connect(f"{uri}?mode=ro", uri=True)
        try:
            conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
            return conn
        except sqlite3.OperationalError:
            conn.close()
            if wal.exists() and wal.stat().st_size > 0:
                raise
        conn = sqlite3.connect(f"{uri}?immutable=1", uri=True)
        conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
        return conn
    except sqlite3.DatabaseError as err:
        what = str(err)
        if "not a database" in what:
            what = "not an SQLite database (corrupt, or not written by diagnose)"
        elif wal.exists():
            what += "; its write-ahead log needs the folder to be writable: copy the run directory somewhere writable"
        raise RunFileError(f"{path}: cannot be read as a run store ({what})") from None


def stored_meta(path: Path) -> dict[str, Any] | None:
    """The metadata of a store file read read-only, or None if it cannot be read."""
    try:
        conn = connect_readonly(path)
        try:
            return {k: json.loads(v) for k, v in conn.execute("SELECT key, value FROM meta")}
        finally:
            conn.close()
    except (sqlite3.Error, ValueError, OSError):  # RunFileError is a ValueError
        return None


def run_files(run_dir: Path) -> tuple[list[Path], list[Path]]:
    """A run directory's entries split into (the run's own files, everything else).

    The run's own files are its store files with SQLite's companions and lock files, and the
    artifacts (model, sample) that a store's metadata says the run saved: a ``model.pt`` the
    user put there is not the run's.
    """
    from diagnose.monitor import artifacts

    stores = store_files(run_dir)
    own = {Path(str(s) + suffix) for s in stores for suffix in DB_SUFFIXES}
    own |= {run_dir / f"{s.stem}.lock" for s in stores}
    for store in stores:
        meta = stored_meta(store) or {}
        own |= {run_dir / name for name in artifacts.recorded_files(meta)}
    entries = sorted(run_dir.iterdir()) if run_dir.is_dir() else []
    own_entries = [p for p in entries if p in own or (p.name.startswith("run") and p.suffix == ".lock")]
    return own_entries, [p for p in entries if p not in own_entries]


def _names(paths: Sequence[Path], limit: int = 6) -> str:
    shown = ", ".join(p.name + ("/" if p.is_dir() else "") for p in paths[:limit])
    return shown + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


def make_unique_dir(base: Path) -> Path:
    """Create ``base``, or ``base-1``, ``base-2``, ... if it exists: atomic (``mkdir``), so two
    processes started in the same second get distinct directories."""
    base.parent.mkdir(parents=True, exist_ok=True)
    for i in range(10_000):
        candidate = base if i == 0 else base.with_name(f"{base.name}-{i}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
    raise FileExistsError(f"run_dir: could not create a new directory next to {base}")


def new_run_dir(rank: int | None) -> Path:
    """The default run directory, ``runs/run-<time>``: a fresh one per watch (``-1``, ``-2``, ...
    when two start in the same second); under torch.distributed every rank must find the same one,
    so there it is the time alone."""
    default = Path("runs") / time.strftime("run-%Y%m%d-%H%M%S")
    return make_unique_dir(default) if rank is None else default


class RunWriter:
    """Writes a run directory from a background thread.

    ``write_*`` calls only enqueue and never raise because of the disk; ``flush()`` waits until
    everything enqueued was committed (or could not be); ``close(complete=True)`` marks the run
    complete (unless rows were lost) and stops the thread.

    Args:
        run_dir: the run directory (created if missing).
        meta: metadata to store first.
        resume: append to the run in ``run_dir``, continuing its step count.
        overwrite: replace the run in ``run_dir``: removes only the run's own files, and refuses
            when the folder holds anything else.
        rank: the torch.distributed rank (one store file per rank), or None.
        backlog_rows: rows kept in memory while the store cannot be written.
    """

    def __init__(self, run_dir: str | Path, meta: Mapping[str, Any] | None = None, *,
                 resume: bool = False, overwrite: bool = False, rank: int | None = None,
                 backlog_rows: int = BACKLOG_ROWS) -> None:
        if resume and overwrite:
            raise ValueError("resume/overwrite: choose one (resume appends, overwrite replaces)")
        self.run_dir = Path(run_dir)
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise OSError(err.errno, f"run_dir: cannot create {self.run_dir} ({err.strerror or err})") from err
        self.path = self.run_dir / db_name(rank)
        try:
            self._lock = RunLock(self.path).acquire()
        except RunLockedError as err:
            raise RunLockedError(f"run_dir: {self.run_dir} is being written by {err}; wait for it to finish, "
                                 "or choose another run_dir") from None
        except OSError as err:
            raise OSError(err.errno, f"run_dir: cannot write in {self.run_dir} ({err.strerror or err})") from err
        try:
            if self.path.exists() and not resume:
                if not overwrite:
                    raise FileExistsError(
                        f"run_dir: {self.run_dir} already holds a run; choose a new directory, or pass "
                        "resume=True to continue it or overwrite=True to replace it")
                self._remove_previous_run(rank)
            self._queue: queue.Queue[tuple[str, Any]] = queue.Queue()
            # Create the schema on this thread, so a bad path fails here, not in the writer thread.
            try:
                conn = self._connect()
                self._read_schema(conn)
                last = conn.execute("SELECT MAX(s) FROM (SELECT MAX(step) AS s FROM scalars "
                                    "UNION ALL SELECT MAX(step) FROM layer_stats)").fetchone()[0]
                counted = conn.execute("SELECT value FROM meta WHERE key = 'steps'").fetchone()
                conn.close()
            except sqlite3.Error as err:
                raise OSError(f"run_dir: cannot write the run store {self.path} ({err})") from err
        except BaseException:
            self._lock.release()
            raise
        # Where a resumed run continues: after the last recorded step, and after the steps the
        # previous writer counted (it records statistics only every N steps).
        try:
            counted_steps = int(json.loads(counted[0])) if counted else 0
        except (TypeError, ValueError):
            counted_steps = 0
        self.start_step = max(0 if last is None else int(last) + 1, counted_steps)
        self.backlog_rows = backlog_rows
        # failure state, owned by the writer thread; read by status()
        self._backlog: collections.deque[tuple[str, Any, int]] = collections.deque()
        self._backlog_size = 0
        self._pending_meta: dict[str, str] = {}
        self._failure: str | None = None      # the error of the current failure, as words
        self._first_error: str | None = None  # the first error of the run, kept after a recovery
        self._failures = 0
        self._dropped_rows = 0
        self._dropped_steps: list[int] = []   # [first, last] of the dropped rows' steps
        self._last_attempt = 0.0
        self._thread = threading.Thread(target=self._run, name="diagnose-run-writer", daemon=True)
        self._thread.start()
        self.set_meta(complete=False, incomplete_reason=UNFINISHED, **(meta or {}))
        if resume and self.start_step:
            self.set_meta(resumed_at_step=self.start_step)

    def _remove_previous_run(self, rank: int | None) -> None:
        own, foreign = run_files(self.run_dir)
        if foreign:
            raise FileExistsError(
                f"run_dir: overwrite=True would replace the run in {self.run_dir}, but the folder also holds "
                f"files this run did not write ({_names(foreign)}); move them, or choose another run_dir")
        mine = {Path(str(self.path) + s) for s in DB_SUFFIXES}
        # Under torch.distributed each rank replaces its own file (rank 0 also the artifacts);
        # a single process replaces the whole run, every rank's file included.
        others = [s for s in store_files(self.run_dir) if s != self.path]
        if rank is None:
            for store in others:
                holder = live_writer(store)
                if holder is not None:
                    raise RunLockedError(f"run_dir: {store} is being written by {describe(holder)}; "
                                         "wait for it to finish, or choose another run_dir")
        for path in own:
            is_store_file = path.name.startswith("run") and (".sqlite" in path.name or path.suffix == ".lock")
            if path == self._lock.path or (path.suffix == ".lock" and rank is not None):
                continue
            if path in mine or rank is None or (rank == 0 and not is_store_file):
                path.unlink(missing_ok=True)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode: a committed transaction survives a process crash (SIGKILL); only
        # an OS crash or power loss may lose the last commits (sqlite.org/pragma.html#pragma_synchronous).
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.executescript(_SCHEMA)
        conn.commit()
        return conn

    def _read_schema(self, conn: sqlite3.Connection) -> None:
        """What the store holds already: its statistic columns and known layers."""
        self._layer_columns = {row[1] for row in conn.execute("PRAGMA table_info(layer_stats)")}
        self._layers = {row[0] for row in conn.execute("SELECT name FROM layers")}

    # -- producer side (training thread) ------------------------------------------------------
    def write_scalars(self, rows: Iterable[tuple[int, str, float]]) -> None:
        """Enqueue ``(step, name, value)`` rows."""
        self._put("scalars", list(rows))

    def write_layer_stats(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Enqueue rows with ``step``, ``layer`` and any statistic columns; merged per (step, layer)."""
        self._put("layers", [((row["step"], row["layer"]), {k: v for k, v in row.items() if k not in ("step", "layer")})
                             for row in rows])

    def write_layer_rows(self, rows: Mapping[tuple[int, str], Mapping[str, float]]) -> None:
        """Enqueue ``{(step, layer): {column: value}}`` (a watch's flush) without building a row per
        entry on the training thread (the caller must not change the columns afterwards)."""
        self._put("layers", list(rows.items()))

    def write_histograms(self, rows: Sequence[tuple[int, str, str, int, Any]]) -> None:
        """Enqueue ``(step, layer, kind, first bin, compressed counts)`` rows (``histogram.encode``)."""
        self._put("histograms", list(rows))

    def set_meta(self, **items: Any) -> None:
        """Enqueue metadata (JSON-serializable values)."""
        self._put("meta", {k: json.dumps(v, default=str) for k, v in items.items()})

    def flush(self) -> bool:
        """Block until everything written so far is committed; False if some of it could not be."""
        done = threading.Event()
        self._put("flush", done)
        done.wait()
        return self._failure is None

    def close(self, complete: bool = True) -> None:
        """Record ``complete`` (False if rows were lost), commit, stop the writer thread and release
        the run. Never raises because of the disk; safe to call twice."""
        if self._thread.is_alive():
            self.set_meta(complete=complete)
            if complete:
                self._put("meta", {"incomplete_reason": None})  # None (not JSON null): delete the key
            self._queue.put(("close", None))
            self._thread.join()
        self._lock.release()

    def status(self) -> dict[str, Any]:
        """The store's health: ``ok``, the first ``error``, rows waiting in memory, rows dropped."""
        return {"ok": self._failure is None and not self._backlog, "error": self._failure or self._first_error,
                "failed_writes": self._failures, "backlog_rows": self._backlog_size,
                "dropped_rows": self._dropped_rows,
                "dropped_steps": list(self._dropped_steps) if self._dropped_steps else None}

    def _put(self, kind: str, payload: Any) -> None:
        if not self._thread.is_alive():
            raise RuntimeError(f"the run writer for {self.run_dir} is closed")
        self._queue.put((kind, payload))

    # -- consumer side (writer thread) --------------------------------------------------------
    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        try:
            conn = self._connect()
        except sqlite3.Error as err:
            self._failed(err)
        try:
            while True:
                kind, payload = self._queue.get()
                if kind == "flush":
                    conn = self._retry(conn, force=True)
                    payload.set()
                elif kind == "close":
                    conn = self._finish(conn)
                    return
                elif self._failure is None and conn is not None:
                    try:
                        with conn:  # one transaction per item
                            self._apply(conn, kind, payload)
                    except Exception as err:  # noqa: BLE001 - any failure of the disk or driver: keep the rows
                        self._keep(kind, payload)
                        self._failed(err, conn)
                        conn = None
                else:
                    self._keep(kind, payload)
                    conn = self._retry(conn)
        finally:
            if conn is not None:
                conn.close()
            while not self._queue.empty():  # release any flush() still waiting after a close
                kind, payload = self._queue.get_nowait()
                if kind == "flush":
                    payload.set()

    def _failed(self, err: Exception, conn: sqlite3.Connection | None = None) -> None:
        """Enter (or stay in) the failed state; ``conn`` is closed (the caller drops it, and a retry
        opens a new one)."""
        self._failures += 1
        self._last_attempt = time.monotonic()
        if self._failure is None:
            self._failure = f"{type(err).__name__}: {err}"
            self._first_error = self._first_error or self._failure
            log.warning("diagnose: writing the run store %s failed (%s); training goes on, the rows are kept "
                        "in memory (up to %d) and written when the store can be written again",
                        self.path, err, self.backlog_rows)
        if conn is not None:
            try:
                conn.close()
            except sqlite3.Error:
                pass

    def _keep(self, kind: str, payload: Any) -> None:
        if kind == "meta":  # small: merged, never dropped
            self._pending_meta.update(payload)
            return
        self._backlog.append((kind, payload, len(payload)))
        self._backlog_size += len(payload)
        while self._backlog_size > self.backlog_rows and len(self._backlog) > 1:
            dropped, old, n = self._backlog.popleft()
            self._backlog_size -= n
            self._dropped_rows += n
            # layer rows are ((step, layer), columns), scalar rows (step, name, value)
            steps = [int(r[0][0]) if dropped == "layers" else int(r[0]) for r in old]
            lo, hi = min(steps), max(steps)
            self._dropped_steps = [min(lo, self._dropped_steps[0]), max(hi, self._dropped_steps[1])] \
                if self._dropped_steps else [lo, hi]

    def _retry(self, conn: sqlite3.Connection | None, force: bool = False,
               rows: bool = True) -> sqlite3.Connection | None:
        """Write what was kept: the rows, oldest first, then the metadata (so ``complete`` is never
        written ahead of rows that are still missing); stops at the first failure. ``rows=False``
        writes only the metadata."""
        if self._failure is None and not self._backlog and not self._pending_meta:
            return conn
        if not force and time.monotonic() - self._last_attempt < RETRY_SECONDS:
            return conn
        self._last_attempt = time.monotonic()
        try:
            if conn is None:
                conn = self._connect()
                self._read_schema(conn)
            while rows and self._backlog:
                kind, payload, n = self._backlog[0]
                with conn:
                    self._apply(conn, kind, payload)
                self._backlog.popleft()
                self._backlog_size -= n
            if self._pending_meta:
                with conn:
                    self._apply(conn, "meta", self._pending_meta)
                self._pending_meta = {}
        except Exception as err:  # noqa: BLE001 - still failing: keep waiting
            self._failed(err, conn)
            return None
        if self._backlog:
            return conn  # the metadata only: the rows still wait, the store has not recovered
        if self._failure is not None:
            log.warning("diagnose: the run store %s can be written again; the rows kept in memory were written"
                        "%s", self.path, f" ({self._dropped_rows} older rows had to be dropped)"
                        if self._dropped_rows else "")
            self._failure = None
        return conn

    def _finish(self, conn: sqlite3.Connection | None) -> sqlite3.Connection | None:
        """At close: a last attempt to write what was kept; if rows are lost, the run is marked
        incomplete with the reason (metadata alone is small: it often still fits)."""
        if self._failures:
            conn = self._retry(conn, force=True)  # the rows, then (only if they all fit) complete=True
            status = self.status()
            lost = status["dropped_rows"] + status["backlog_rows"]
            note: dict[str, Any] = {"store": status}
            if lost:
                steps = status["dropped_steps"]
                note.update(complete=False, incomplete_reason=(
                    f"the run store could not be written ({status['error'] or 'a disk error'}): {lost} rows "
                    "were lost" + (f", steps {steps[0]}-{steps[1]} among them" if steps else "")))
            self._pending_meta.update({k: json.dumps(v, default=str) for k, v in note.items()})
            conn = self._retry(conn, force=True, rows=False)
            if lost:
                log.error("diagnose: %d rows of the run in %s could not be written and are lost (%s)%s; the run "
                          "keeps what was written and reads as incomplete", lost, self.run_dir, status["error"],
                          "; its final metadata is lost too" if self._pending_meta else "")
        if conn is not None and self._failure is None:
            try:  # one self-contained file, readable on read-only media (no -wal/-shm needed)
                conn.execute("PRAGMA journal_mode=DELETE")
            except sqlite3.Error:
                pass  # a reader holds it open: it stays in WAL mode, which is fine
        return conn

    def _apply(self, conn: sqlite3.Connection, kind: str, payload: Any) -> None:
        if kind == "meta":
            conn.executemany("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
                             [(k, v) for k, v in payload.items() if v is not None])
            conn.executemany("DELETE FROM meta WHERE key = ?", [(k,) for k, v in payload.items() if v is None])
        elif kind == "scalars":
            conn.executemany(
                "INSERT OR REPLACE INTO scalars(step, name, value) VALUES (?, ?, ?)",
                [(int(s), str(n), _to_sql(v)) for s, n, v in payload],
            )
        elif kind == "layers":
            self._write_layers(conn, payload)
        elif kind == "histograms":
            conn.executemany("INSERT OR REPLACE INTO histograms(step, layer, kind, first, counts) "
                             "VALUES (?, ?, ?, ?, ?)",
                             [(int(s), str(layer), k, int(first), blob) for s, layer, k, first, blob in payload])

    def _write_layers(self, conn: sqlite3.Connection,
                      rows: Sequence[tuple[tuple[int, str], Mapping[str, Any]]]) -> None:
        by_columns: dict[tuple[str, ...], list[tuple[Any, ...]]] = {}
        new_layers = list(dict.fromkeys(str(layer) for (_, layer), _ in rows if str(layer) not in self._layers))
        if new_layers:
            conn.executemany("INSERT OR IGNORE INTO layers(name) VALUES (?)", [(name,) for name in new_layers])
        for (step, layer), row in rows:
            cols = tuple(row)
            by_columns.setdefault(cols, []).append((int(step), str(layer), *(_to_sql(row[c]) for c in cols)))
        added: set[str] = set()
        for cols, values in by_columns.items():
            for c in cols:
                if c not in self._layer_columns and c not in added:
                    conn.execute(f"ALTER TABLE layer_stats ADD COLUMN {quote(c)} REAL")
                    added.add(c)
            names = ", ".join(quote(c) for c in cols)
            marks = ", ".join("?" for _ in cols)
            # Statistics of one (step, layer) may arrive in separate writes: merge, keeping what
            # is already there where the new row has no value.
            merge = ", ".join(f"{quote(c)} = COALESCE(excluded.{quote(c)}, {quote(c)})" for c in cols)
            sql = (f"INSERT INTO layer_stats(step, layer{', ' if cols else ''}{names}) "
                   f"VALUES (?, ?{', ' if cols else ''}{marks}) ON CONFLICT(step, layer) DO "
                   + (f"UPDATE SET {merge}" if cols else "NOTHING"))
            conn.executemany(sql, values)
        # Only now that they exist for sure (after a failed transaction, _read_schema re-reads them).
        self._layer_columns |= added
        self._layers.update(new_layers)
