"""Several worker processes on one study, on a real PostgreSQL server, on SQLite and (without
heartbeats) on Optuna's journal file: started at the same moment, an exact trial count, every
trial run once, and a worker killed with SIGKILL in the middle of a trial whose trial is failed
through its heartbeat and run again (PostgreSQL, SQLite)."""

import os
import signal
import subprocess
import sys
import time
import uuid

import optuna
import pytest

WORKER = r"""
import os, sys, time
import diagnose as dg
storage, study, n, marks, sleep = sys.argv[1:6]

def objective(params, trial):
    open(os.path.join(marks, f"{trial.number}.{os.getpid()}"), "w").close()  # this worker started it
    time.sleep(float(sleep))
    return (params["x"] - 1) ** 2

dg.tune({"x": (-5.0, 5.0)}, objective, strategy="random", n_trials=int(n), storage=storage,
        study_name=study, seed=os.getpid(), heartbeat=1)
print("done", os.getpid(), flush=True)
"""


def start_workers(count, storage, study, n_trials, marks, sleep):
    marks.mkdir(exist_ok=True)
    cmd = [sys.executable, "-c", WORKER, storage, study, str(n_trials), str(marks), str(sleep)]
    return [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(count)]


def started(marks):
    """(trial number, pid) of every trial a worker started."""
    return [tuple(int(v) for v in name.split(".")) for name in os.listdir(marks)]


def storage_url(kind, tmp_path, request):
    if kind == "postgresql":
        return request.getfixturevalue("postgres_url")
    if kind == "journal":  # Optuna's journal file: one machine, or a shared file system
        return f"journal://{tmp_path / 'journal' / 'study.log'}"
    return f"sqlite:///{tmp_path / 'db' / 'tune.db'}"  # its folder does not exist yet


@pytest.fixture(params=["postgresql", "sqlite"])
def storage(request, tmp_path):
    return storage_url(request.param, tmp_path, request)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["postgresql", "sqlite", "journal"])
def test_four_workers_started_together_run_each_trial_once(kind, tmp_path, request):
    storage = storage_url(kind, tmp_path, request)
    study_name = f"together-{uuid.uuid4().hex[:8]}"
    workers = start_workers(4, storage, study_name, 20, tmp_path / "marks", 0.2)
    for w in workers:
        out, err = w.communicate(timeout=300)
        assert w.returncode == 0, err[-3000:]  # no schema-creation race, no lock error
    from diagnose.tune.workers import load_study
    study = load_study(storage, study_name)
    assert len(study.trials) == 20
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    runs = started(tmp_path / "marks")
    assert sorted(number for number, _ in runs) == list(range(20))  # each trial run once, by one worker
    assert len({t.params["x"] for t in study.trials}) == 20  # every trial distinct
    assert len({pid for _, pid in runs}) >= 2  # the work was shared


@pytest.mark.slow
def test_a_worker_killed_mid_trial_is_recovered_and_the_study_completes(storage, tmp_path):
    study_name = f"killed-{uuid.uuid4().hex[:8]}"
    marks = tmp_path / "marks"
    workers = start_workers(4, storage, study_name, 12, marks, 1.0)
    by_pid = {w.pid: w for w in workers}
    deadline = time.monotonic() + 120
    victim = None
    while victim is None and time.monotonic() < deadline:  # a worker in the middle of its first trial
        runs = started(marks) if marks.exists() else []
        victim = next((pid for _, pid in runs if pid in by_pid), None)
        time.sleep(0.05)
    assert victim is not None, "no worker started a trial"
    killed_trial = next(number for number, pid in started(marks) if pid == victim)
    os.kill(victim, signal.SIGKILL)
    for w in workers:
        out, err = w.communicate(timeout=300)
        if w.pid != victim:
            assert w.returncode == 0, err[-3000:]
    assert by_pid[victim].returncode == -signal.SIGKILL
    study = optuna.load_study(study_name=study_name, storage=storage)
    states = [t.state for t in study.trials]
    assert states.count(optuna.trial.TrialState.COMPLETE) == 12  # the number asked for, exactly
    failed = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    assert [t.number for t in failed] == [killed_trial]  # failed through its heartbeat
    retry = [t for t in study.trials if t.system_attrs.get("failed_trial") == killed_trial]
    assert len(retry) == 1 and retry[0].state == optuna.trial.TrialState.COMPLETE
    assert retry[0].params == failed[0].params  # the same trial, run again by a live worker
    assert len(study.trials) == 13
