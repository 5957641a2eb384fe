"""A run store that cannot be written never reaches the training loop: the watch warns once,
keeps rows in memory (bounded, oldest dropped and counted), retries, and the run says what was lost."""

import logging
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

import diagnose as dg
from diagnose.monitor import store
from diagnose.monitor.store import RunWriter

STEPS = 60


def losses(run_dir=None, steps=STEPS, before_training=None, **kwargs):
    """A seeded training loop's losses, watched (into run_dir) or not."""
    torch.manual_seed(0)
    model = dg.mlp(6, [16], 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = torch.randn(32, 6), torch.randint(0, 2, (32,))
    out = []
    watch = dg.watch(model, opt, run_dir, every=1, flush_every=5, **kwargs) if run_dir is not None else None
    if watch is not None and before_training is not None:
        before_training(watch)
    for _ in range(steps):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        if watch is not None:
            watch.log(loss=loss)
        out.append(loss.item())
    if watch is not None:
        watch.close()
    return out


class Disk:
    """Makes the store's writes fail (as a full disk does) between two write numbers."""

    def __init__(self, fail_from, fail_until=None, only=None):
        self.calls, self.fail_from, self.fail_until, self.only = 0, fail_from, fail_until, only

    def install(self, monkeypatch):
        apply = RunWriter._apply

        def failing(writer, conn, kind, payload):
            self.calls += 1
            if (self.fail_from <= self.calls and (self.fail_until is None or self.calls < self.fail_until)
                    and self.only in (None, kind)):
                raise sqlite3.OperationalError("database or disk is full")
            return apply(writer, conn, kind, payload)
        monkeypatch.setattr(RunWriter, "_apply", failing)
        monkeypatch.setattr(store, "RETRY_SECONDS", 0.0)  # retry on every write, to keep the test short


def test_a_full_disk_never_reaches_the_training_loop(tmp_path, monkeypatch, caplog):
    expected = losses()
    Disk(fail_from=8).install(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="diagnose"):
        got = losses(tmp_path)
    assert got == expected  # training finished, bitwise the same losses
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "failed" in r.getMessage()]
    assert len(warnings) == 1 and "disk is full" in warnings[0].getMessage()  # warned once
    run = dg.load_run(tmp_path)
    # every write fails from then on, the final metadata too: the run says why it may be incomplete
    assert run.meta["complete"] is False and "the disk failed" in run.state()
    assert run.scalars()["step"].tolist() == list(range(len(run.scalars())))  # what was written is intact
    assert any(r.levelno == logging.ERROR and "are lost" in r.getMessage() and "metadata is lost too" in r.getMessage()
               for r in caplog.records)


def test_when_only_the_rows_fail_the_run_records_what_was_lost(tmp_path, monkeypatch):
    Disk(fail_from=8, only="layers").install(monkeypatch)
    losses(tmp_path)
    run = dg.load_run(tmp_path)
    meta = run.meta
    assert meta["complete"] is False and "disk is full" in meta["incomplete_reason"]
    assert meta["store"]["error"] == "OperationalError: database or disk is full"
    assert meta["store"]["backlog_rows"] > 0 and run.state().startswith("incomplete: the run store could not")


def test_rows_kept_in_memory_are_written_when_the_disk_recovers(tmp_path, monkeypatch):
    expected = losses()
    Disk(fail_from=5, fail_until=15).install(monkeypatch)
    assert losses(tmp_path) == expected
    run = dg.load_run(tmp_path)
    assert run.meta["complete"] is True and run.meta["store"]["dropped_rows"] == 0
    assert run.meta["store"]["failed_writes"] > 0 and "incomplete_reason" not in run.meta
    assert run.scalar("loss").tolist() == pytest.approx(expected, rel=1e-6)  # every step, none lost
    assert sorted(run.layer_stats()["step"].unique()) == list(range(STEPS))


def test_complete_is_never_written_ahead_of_missing_rows(tmp_path, monkeypatch):
    # rows fail from the 8th write on; exactly one metadata write gets through after that (as a
    # nearly full disk fits one small write): it must be the one saying the run is incomplete
    apply, state = RunWriter._apply, {"calls": 0, "meta_after_failure": 0}

    def failing(writer, conn, kind, payload):
        state["calls"] += 1
        if state["calls"] >= 8:
            if kind != "meta" or state["meta_after_failure"] > 0:
                raise sqlite3.OperationalError("database or disk is full")
            state["meta_after_failure"] += 1
        return apply(writer, conn, kind, payload)
    monkeypatch.setattr(RunWriter, "_apply", failing)
    monkeypatch.setattr(store, "RETRY_SECONDS", 0.0)
    losses(tmp_path)
    monkeypatch.undo()
    meta = dg.load_run(tmp_path).meta
    assert state["meta_after_failure"] == 1
    assert meta["complete"] is False and "rows were lost" in meta["incomplete_reason"]


def test_the_memory_bound_drops_the_oldest_rows_and_says_how_many(tmp_path, monkeypatch):
    Disk(fail_from=5, only="layers").install(monkeypatch)

    def small_backlog(watch):
        watch.writer.backlog_rows = 100  # rows
    losses(tmp_path, before_training=small_backlog)
    monkeypatch.undo()
    meta = dg.load_run(tmp_path).meta
    status = meta["store"]
    assert status["dropped_rows"] > 0 and status["backlog_rows"] <= 100 + 10 * 4  # bound + one flush
    first, last = status["dropped_steps"]
    assert 0 <= first < last < STEPS
    assert f"steps {first}-{last}" in meta["incomplete_reason"]


def test_a_store_failing_at_every_write_still_lets_training_finish(tmp_path, monkeypatch):
    # also the writes of the watch's set-up: nothing but the (empty) schema is on disk
    expected = losses()
    Disk(fail_from=1).install(monkeypatch)
    assert losses(tmp_path, save_model=True) == expected
    monkeypatch.undo()
    run = dg.load_run(tmp_path)
    assert run.meta == {} and run.scalars().empty and "the disk failed" in run.state()  # readable


CHILD = textwrap.dedent("""
    import resource, signal, sys, torch, diagnose as dg
    from torch import nn
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # a write past the limit fails with EFBIG instead
    torch.manual_seed(0)
    model = dg.mlp(10, [32], 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(64, 10), torch.randint(0, 2, (64,))
    steps = int(sys.argv[2])
    with dg.watch(model, opt, sys.argv[1], every=1, flush_every=10) as run:
        resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[3]), int(sys.argv[3])))
        for step in range(steps):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            run.log(loss=loss)
    print("finished", step + 1, flush=True)
""")


@pytest.mark.slow
def test_a_real_write_failure_from_the_os(tmp_path):
    # RLIMIT_FSIZE: the kernel refuses to grow files past 96 KB (EFBIG), as a full disk does
    proc = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path / "run"), "2000", str(96 * 1024)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "finished 2000" in proc.stdout and "Traceback" not in proc.stderr
    run = dg.load_run(tmp_path / "run")
    assert len(run.scalars()) > 0 and run.meta["complete"] is False


def _mount_tmpfs(size):
    if not sys.platform.startswith("linux") or os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a tmpfs needs root on Linux")
    path = Path(tempfile.mkdtemp())
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if result.returncode != 0:
        path.rmdir()
        pytest.skip(f"cannot mount a tmpfs here ({result.stderr.decode().strip()})")
    return path


@pytest.mark.slow
def test_a_tiny_tmpfs_fills_up_and_training_goes_on():
    mount = _mount_tmpfs("200k")
    try:
        proc = subprocess.run([sys.executable, "-c", CHILD, str(mount / "run"), "3000", str(2**40)],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        assert "finished 3000" in proc.stdout and "disk is full" in proc.stderr
        run = dg.load_run(mount / "run")
        assert len(run.scalars()) > 0 and run.meta["complete"] is False
        # the reason written at close when it still fits, else the one stored at the start
        assert "disk is full" in run.state() or "the disk failed" in run.state()
    finally:
        subprocess.run(["umount", str(mount)], check=False)
        mount.rmdir()


def test_a_model_that_cannot_be_saved_costs_the_file_not_the_run(tmp_path, monkeypatch):
    def full(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 64 vs 0")
    monkeypatch.setattr(torch, "save", full)
    losses(tmp_path, steps=3, save_model=True, sample=torch.randn(4, 6))
    run = dg.load_run(tmp_path)
    meta = run.meta
    assert meta["complete"] is True and meta["saved_model"] is False and meta["files"] == []
    assert "save_model" in meta["errors"] and not list(tmp_path.glob("*.pt")) and not list(tmp_path.glob(".*tmp"))

