"""Many processes on one study: storages, an exact number of trials, and the trials of a killed
worker run again.

Storages (``storage_from_url``): ``sqlite:///path.db`` (one machine; its folder is created),
``postgresql://user@host/db`` (several machines; psycopg 3), any other SQLAlchemy URL, and
Optuna's journal file (``journal:///path/to/study.log``, one machine or a shared file system).

Exact counts. ``optuna.Study.optimize(n_trials=n)`` in each of k processes runs k x n trials, and
stopping at a total (``MaxTrialsCallback``) overshoots by up to one per process: each process
checks the total, then creates a trial. Here the process that creates the study queues the
study's whole budget as n WAITING trials (empty: the sampler fills them when one is taken) and
records it as the study's ``diagnose_trials`` attribute; every worker then only *takes* queued
trials (a WAITING -> RUNNING transition that the storage grants to one process: a row lock on
PostgreSQL, the database lock on SQLite) and never creates one. Workers that join an existing
study wait for its budget to be recorded, then take trials until none is left.

Killed workers. RDB storages record a heartbeat per running trial (a thread, every
``heartbeat`` seconds). Before taking a trial, and while waiting for the others' running trials,
each worker marks trials whose heartbeat is older than 3 heartbeats as FAIL (Optuna's
``fail_stale_trials``); ``RetryFailedTrialCallback`` then queues a copy with the same parameters,
which a live worker takes. A worker leaves when nothing is queued or running, so the last one
alive finishes the budget. The journal storage has no heartbeat: there a killed worker's trial
stays RUNNING and is not run again.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Callable
from datetime import UTC
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from diagnose.validate import did_you_mean

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 10.0
STALE_HEARTBEATS = 3      # a running trial silent for this many heartbeats belongs to a dead worker
MAX_RETRY = 2             # a trial whose worker died is run again at most this many times
BUDGET_ATTR = "diagnose_trials"
JOIN_WAIT_SECONDS = 120.0  # how long a joining worker waits for the creator to queue the budget


def storage_from_url(url: str, heartbeat: float | None = HEARTBEAT_SECONDS) -> optuna.storages.BaseStorage:
    """An Optuna storage for ``url``, with heartbeats and retries of dead workers' trials (RDB).

    Several processes opening a new database together race to create its tables: the losers
    retry once the winner's exist."""
    if url.startswith("journal://"):
        path = Path(url.removeprefix("journal://"))
        path.parent.mkdir(parents=True, exist_ok=True)
        from optuna.storages.journal import JournalFileBackend
        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    if "://" not in url:
        raise ValueError(f"storage: expected a URL such as sqlite:///tune.db, postgresql://user@host/db or "
                         f"journal:///path/study.log, got {url!r}")
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        _sqlite_folder(url)
        # workers on one machine wait for the database lock instead of failing
        engine_kwargs = {"connect_args": {"timeout": 120}}
    elif url.startswith("postgresql"):
        engine_kwargs = {"pool_pre_ping": True}
    interval = None if heartbeat is None else max(1, math.ceil(heartbeat))
    heartbeat_kwargs: dict[str, Any] = {}
    if interval is not None:
        import inspect
        callback = ("heartbeat_stale_trial_callback"  # the name since Optuna 4.9
                    if "heartbeat_stale_trial_callback" in inspect.signature(optuna.storages.RDBStorage).parameters
                    else "failed_trial_callback")
        heartbeat_kwargs = {"heartbeat_interval": interval, "grace_period": STALE_HEARTBEATS * interval,
                            callback: _retry_callback()}
    from sqlalchemy.exc import SQLAlchemyError
    for attempt in range(8):
        try:
            storage = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **heartbeat_kwargs)
        except SQLAlchemyError:
            if attempt == 7:
                raise
            time.sleep(0.2 * (attempt + 1) + random.random() * 0.3)
            continue
        if url.startswith("sqlite"):
            _immediate_transactions(storage)
        return storage
    raise AssertionError("unreachable")


def _retry_callback() -> Callable[[optuna.Study, optuna.trial.FrozenTrial], None]:
    """Optuna's callback that queues a stale trial again (its name since Optuna 4.9, or before)."""
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None) \
            or optuna.storages.RetryFailedTrialCallback
        return retry(max_retry=MAX_RETRY)


def _sqlite_folder(url: str) -> None:
    """Create the folder of a ``sqlite:///relative`` or ``sqlite:////absolute`` database file."""
    path = url.split("://", 1)[1].lstrip("/") if url.startswith("sqlite:///") else ""
    if url.startswith("sqlite:////"):
        path = "/" + path
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)


def _immediate_transactions(storage: optuna.storages.RDBStorage) -> None:
    """SQLite: every transaction takes the write lock when it begins (BEGIN IMMEDIATE). With the
    default (deferred) two workers can both read a WAITING trial and then both try to take it,
    and the one that must wait fails with "database is locked" instead of waiting."""
    from sqlalchemy import event
    engine = storage.engine

    @event.listens_for(engine, "connect")
    def _no_implicit_begin(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.isolation_level = None  # the driver's own BEGIN is replaced by ours

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections opened before the listeners existed are not reused


def _heartbeat_storage(study: optuna.Study) -> Any:
    """The study's storage if it records heartbeats (an RDB storage with an interval, as Optuna
    wraps it in its cache), else None."""
    storage = study._storage
    interval = getattr(storage, "get_heartbeat_interval", None)
    return storage if interval is not None and interval() is not None else None


def heartbeat_enabled(study: optuna.Study) -> bool:
    """Whether the study's storage records heartbeats."""
    return _heartbeat_storage(study) is not None


def queue_budget(study: optuna.Study, n_trials: int) -> None:
    """The creator of a shared study: queue ``n_trials`` empty trials, then record the budget."""
    for _ in range(n_trials):
        study.enqueue_trial({})
    study.set_user_attr(BUDGET_ATTR, n_trials)


def wait_for_budget(study: optuna.Study, requested: int | None) -> int:
    """A worker that joined an existing study: its budget, once the creator has queued it."""
    deadline = time.monotonic() + JOIN_WAIT_SECONDS
    while True:
        budget = study.user_attrs.get(BUDGET_ATTR)
        if budget is not None:
            if requested is not None and requested != budget:
                log.warning("diagnose.tune: study %r was created with %d trials; this worker's %d are ignored "
                            "(a new study name starts a new budget)", study.study_name, budget, requested)
            return int(budget)
        if time.monotonic() > deadline:
            raise RuntimeError(f"study {study.study_name!r}: no trial budget was queued within "
                               f"{JOIN_WAIT_SECONDS:.0f} s (was it created by something other than diagnose?)")
        time.sleep(0.2)


def _take_queued(study: optuna.Study) -> int | None:
    """Take one queued trial (WAITING -> RUNNING, granted to one process), or None."""
    for trial in study._storage.get_all_trials(study._study_id, deepcopy=False, states=(TrialState.WAITING,)):
        try:
            if study._storage.set_trial_state_values(trial._trial_id, state=TrialState.RUNNING):
                return trial._trial_id
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
    return None


class _Heartbeat:
    """Records a running trial's heartbeat every ``interval`` seconds on a daemon thread."""

    def __init__(self, study: optuna.Study, trial_id: int) -> None:
        self.storage = _heartbeat_storage(study)
        self.trial_id = trial_id
        self.interval = self.storage.get_heartbeat_interval() if self.storage is not None else None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> _Heartbeat:
        if self.storage is not None and self.interval is not None:
            self.storage.record_heartbeat(self.trial_id)
            self._thread = threading.Thread(target=self._beat, name="diagnose-tune-heartbeat", daemon=True)
            self._thread.start()
        return self

    def _beat(self) -> None:
        assert self.storage is not None
        while not self._stop.wait(self.interval):
            try:
                self.storage.record_heartbeat(self.trial_id)
            except Exception as err:  # noqa: BLE001 - a lost beat: the next one may get through
                log.warning("diagnose.tune: heartbeat of trial id %d failed (%s)", self.trial_id, err)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def _fail_stale(study: optuna.Study) -> None:
    if heartbeat_enabled(study):
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)


def work(study: optuna.Study, objective: Callable[[optuna.Trial], float], timeout: float | None = None,
         poll: float = 0.5) -> int:
    """Take queued trials of a shared study until none is queued or running; returns how many
    this process ran. An objective that raises marks its trial FAIL and raises (as ``optimize``)."""
    start = time.monotonic()
    ran = 0
    while timeout is None or time.monotonic() - start < timeout:
        _fail_stale(study)  # dead workers' trials: failed, and queued again by the retry callback
        trial_id = _take_queued(study)
        if trial_id is None:
            active = study._storage.get_all_trials(study._study_id, deepcopy=False,
                                                   states=(TrialState.RUNNING, TrialState.WAITING))
            if not active or not heartbeat_enabled(study) and not any(t.state == TrialState.WAITING
                                                                         for t in active):
                return ran  # nothing left (without heartbeats a dead worker's trial is never retried)
            time.sleep(poll)
            continue
        if hasattr(study, "_thread_local"):
            study._thread_local.cached_all_trials = None  # as Study.ask: the sampler sees every finished trial
        trial = optuna.Trial(study, trial_id)  # what Study.ask does with a popped trial
        with _Heartbeat(study, trial_id):
            try:
                value = objective(trial)
            except optuna.TrialPruned:
                study.tell(trial, state=TrialState.PRUNED)
                ran += 1
                continue
            except BaseException:
                study.tell(trial, state=TrialState.FAIL)
                raise
        study.tell(trial, value)
        ran += 1
    return ran


def load_study(url: str, name: str) -> optuna.Study:
    """An existing study (a clear error naming the studies the storage holds, if not)."""
    storage = storage_from_url(url, heartbeat=None)
    names = optuna.get_all_study_names(storage)
    if name not in names:
        raise ValueError(f"study: no study {name!r} in {url}" + did_you_mean(name, names)
                         + (f"; it holds: {', '.join(names)}" if names else "; it holds none"))
    return optuna.load_study(study_name=name, storage=storage)


def describe(study: optuna.Study) -> str:
    """A study's progress in a few lines: trials by state against its budget, the running ones
    and for how long, the last failed and pruned ones (why), the best so far."""
    from datetime import datetime
    trials = study.get_trials(deepcopy=False)
    counts = {state: sum(t.state == state for t in trials) for state in TrialState}
    budget = study.user_attrs.get(BUDGET_ATTR)
    finished = counts[TrialState.COMPLETE] + counts[TrialState.PRUNED]
    lines = [f"study {study.study_name!r} ({study.direction.name.lower()}): "
             + (f"{finished} of {budget} trials finished" if budget is not None else f"{finished} trials finished")
             + f" ({counts[TrialState.COMPLETE]} complete, {counts[TrialState.PRUNED]} pruned), "
             f"{counts[TrialState.RUNNING]} running, {counts[TrialState.WAITING]} queued, "
             f"{counts[TrialState.FAIL]} failed"]
    now = datetime.now(UTC).replace(tzinfo=None)
    for t in trials:
        if t.state == TrialState.RUNNING and t.datetime_start is not None:
            start = t.datetime_start.replace(tzinfo=None)
            lines.append(f"  running: trial {t.number} for {(now - start).total_seconds():.0f} s {t.params}")
    failed = [t for t in trials if t.state == TrialState.FAIL]
    retried = {t.system_attrs.get("failed_trial") for t in trials}
    for t in failed[-5:]:
        lines.append(f"  failed: trial {t.number}" + (" (run again)" if t.number in retried else ""))
    for t in [t for t in trials if t.state == TrialState.PRUNED][-5:]:
        lines.append(f"  pruned: trial {t.number}: {t.user_attrs.get('prune_reason') or 'by the median rule'}")
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if complete:
        best = study.best_trial
        lines.append(f"  best so far: trial {best.number}, value {best.value:.6g}, {best.params}")
    return "\n".join(lines)
